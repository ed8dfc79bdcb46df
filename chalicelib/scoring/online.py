"""Online scoring: an online deployment's model answers one request's payload, in the request's
own shape (chalicelib.scoring.payloads).

The model stays loaded per process (the engine's cache, keyed by version and verified by its
archive's digest), so a warm request costs parsing, bounded model calls of at most
TFBATCH_BATCH_SIZE records, and the answer. On AWS this runs in the TensorFlow image function the
API function invokes once it has checked the caller (chalicelib.api.online, `handle_invoke`);
locally in the API server, which has TensorFlow.

A warm request makes no store round trip of its own: a ready deployment is kept per process for
READY_SECONDS (deployments never change once ready, so a deletion is all it can miss: one stops
answering within that time), and usage (each request's records and model seconds) is added up in
the process and written by a background thread at most USAGE_SECONDS later, one update per
instance. Online answers are not ledgered, so usage is a count, not an exactly-once record: what
a process had not yet written when it ended is not counted.
"""
from __future__ import annotations

import base64
import threading
import time

import orjson

from chalicelib.core import caches
from chalicelib.core.errors import ApiError, BadRequest, Conflict
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.scoring import engine, payloads, pipeline
from chalicelib.scoring.formats import InputError, TensorSpec
from chalicelib.state import deployments, instances, models


class ModelUnavailable(ApiError):
    status, code = 503, "model_unavailable"


class ModelTimeout(ApiError):
    status, code = 504, "model_timeout"


READY_SECONDS = 5.0
# An answer must come back within API Gateway's 29 s and fit a synchronous Lambda answer (6 MB):
# online calls are bounded tighter than batch ones.
CALL_SECONDS = 20.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024
USAGE_SECONDS = 1.0
USAGE_ATTEMPTS = 5


class _ReadyDeployments:
    """Ready online deployments, kept per process for READY_SECONDS."""

    def __init__(self):
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str], tuple[float, deployments.Deployment]] = {}

    def get(self, instance_id: str, deployment_id: str) -> deployments.Deployment:
        key, now = (instance_id, deployment_id), time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]
        item = deployments.settled_online(deployments.load(instance_id, deployment_id), models.load_version)
        deployment = deployments.Deployment.from_item(item)
        if deployment.status == deployments.ONLINE_READY:
            with self._lock:
                self._kept = {k: v for k, v in self._kept.items() if v[0] > now}  # expired ones go
                self._kept[key] = (now + READY_SECONDS, deployment)
        return deployment

    def cache_clear(self) -> None:
        with self._lock:
            self._kept = {}


class _UsageMeter:
    """Records and model seconds per instance, added up here and written in the background. A
    write that fails is tried again with the next ones, USAGE_ATTEMPTS times in all, then given up
    (and logged with what it held): a store that stays away must not grow this without bound."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[str, list] = {}  # instance -> [records, seconds, failed writes]
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None

    def add(self, instance_id: str, predictions: int, seconds: float, failures: int = 0) -> None:
        with self._lock:
            counts = self._pending.setdefault(instance_id, [0, 0.0, 0])
            counts[0] += predictions
            counts[1] += seconds
            counts[2] = max(counts[2], failures)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_forever, name="usage", daemon=True)
                self._writer.start()

    def flush(self) -> None:
        """Write what was added up so far (the writer thread does this every USAGE_SECONDS)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for instance_id, (predictions, seconds, failures) in pending.items():
            try:
                instances.add_usage(instance_id, predictions=predictions, seconds=seconds)
            except Exception as error:
                extra = {"instance_id": instance_id, "predictions": predictions, "error": type(error).__name__}
                if failures + 1 >= USAGE_ATTEMPTS:
                    logger.error("usage could not be written; given up", extra=extra)
                    continue
                logger.warning("usage could not be written; trying again with the next write", extra=extra)
                self.add(instance_id, predictions, seconds, failures + 1)

    def cache_clear(self) -> None:
        """Forget what is not written yet (chalicelib.core.caches: tests switch stores)."""
        with self._lock:
            self._pending = {}

    def _write_forever(self) -> None:
        while True:
            self._wake.wait(USAGE_SECONDS)
            self.flush()


ready_deployments = caches.register(_ReadyDeployments())
usage = caches.register(_UsageMeter())


def score(instance_id: str, deployment_id: str, body: bytes) -> dict:
    """The deployment's answer to one payload; v3 errors name the tensor or field at fault."""
    deployment = ready_deployments.get(instance_id, deployment_id)
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
        model = engine.model(engine.StoredArchive.of(deployment), deployment.signature_name).result().bounded(
            min(CALL_SECONDS, get_settings().model_call_seconds))
    except Exception as error:
        raise ModelUnavailable(f"The deployment's model could not be loaded ({type(error).__name__}); the "
                               "service's log has the details.") from None
    settings = get_settings()
    started = time.perf_counter()
    predicted, refused = pipeline.predict(model, [batch], settings.batch_size,
                                          max_output_bytes=min(settings.max_output_bytes, MAX_ANSWER_BYTES))
    seconds = time.perf_counter() - started
    usage.add(instance_id, 0 if refused else batch.count, seconds)
    if refused:
        error = refused[0]
        kind = ModelTimeout if error.code == "model_timeout" else BadRequest
        raise kind(f"The payload cannot be scored: {error}", code=error.code, target={"type": "body"})
    try:
        return payloads.write(predicted[0], form, rows=batch.count)
    except InputError as error:
        raise BadRequest(f"The model's answer cannot be written: {error}", code=error.code,
                         target={"type": "deployment", "id": deployment_id}) from None


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
