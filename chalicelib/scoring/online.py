"""Online scoring: an online deployment's model answers one request's payload, in the request's
own shape (chalicelib.scoring.payloads).

The model stays loaded per process (the engine's cache, keyed by version and verified by its
archive's digest), so a warm request costs parsing, bounded model calls of at most
TFBATCH_BATCH_SIZE records, and the answer. On AWS this runs in the TensorFlow image function the
API function invokes once it has checked the caller (chalicelib.api.online, `handle_invoke`);
locally in the API server, which has TensorFlow. Usage counts each request's records and model
seconds (one update per request: online answers are not ledgered).
"""
from __future__ import annotations

import base64
import time

import orjson

from chalicelib.core.errors import ApiError, BadRequest, Conflict
from chalicelib.core.settings import get_settings
from chalicelib.scoring import engine, payloads, pipeline
from chalicelib.scoring.formats import InputError, TensorSpec
from chalicelib.state import deployments, instances


class ModelUnavailable(ApiError):
    status, code = 503, "model_unavailable"


class ModelTimeout(ApiError):
    status, code = 504, "model_timeout"


def score(instance_id: str, deployment_id: str, body: bytes) -> dict:
    """The deployment's answer to one payload; v3 errors name the tensor or field at fault."""
    deployment = deployments.Deployment.from_item(deployments.load(instance_id, deployment_id))
    if deployment.type != "online":
        raise Conflict(f"Deployment {deployment_id} is a batch deployment: it scores the files of its input bucket. "
                       "Create an online deployment to score requests.", target={"type": "deployment",
                                                                                 "id": deployment_id})
    if deployment.status != deployments.ONLINE_READY:
        raise Conflict(f"Deployment {deployment_id} is {deployment.status}, not ready to score; its status says why "
                       "(a version still being inspected, or one that cannot be served).",
                       target={"type": "deployment", "id": deployment_id})
    specs = [TensorSpec.from_signature(tensor) for tensor in deployment.signature["inputs"]]
    try:
        batch, form = payloads.read(body, specs, deployment.signature_name)
    except InputError as error:
        raise BadRequest(f"The payload cannot be scored: {error}", code=error.code, target={"type": "body"}) from None
    try:
        model = engine.model(engine.StoredArchive.of(deployment), deployment.signature_name).result()
    except Exception as error:
        raise ModelUnavailable(f"The deployment's model could not be loaded ({type(error).__name__}); the "
                               "service's log has the details.") from None
    settings = get_settings()
    started = time.perf_counter()
    predicted, refused = pipeline.predict(model, [batch], settings.batch_size,
                                          max_output_bytes=settings.max_output_bytes)
    seconds = time.perf_counter() - started
    instances.add_usage(instance_id, predictions=0 if refused else batch.count, seconds=seconds)
    if refused:
        error = refused[0]
        kind = ModelTimeout if error.code == "model_timeout" else BadRequest
        raise kind(f"The payload cannot be scored: {error}", code=error.code, target={"type": "body"})
    return payloads.write(predicted[0], form)


def handle_invoke(event: dict) -> dict:
    """The online scoring function's handler (chalicelib.api.online invokes it): the answer, or
    the v3 error that refused the request, with its status."""
    try:
        answer = score(event["instance_id"], event["deployment_id"], base64.b64decode(event["body"]))
        # Plain JSON values: the Lambda runtime serializes the result with json, which knows no NumPy.
        return {"answer": orjson.loads(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))}
    except ApiError as error:
        (detail,) = error.body("")["errors"]
        return {"status": error.status, "error": detail}
