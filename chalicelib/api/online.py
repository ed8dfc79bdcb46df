"""Online scoring, from the API's side: the API function checks the caller (it alone holds the
token signing key) and hands the payload to the function that has TensorFlow and the model
(chalicelib.scoring.online), which needs neither the key nor any user's connection keys.

On AWS that is a synchronous invoke of the stack's online scoring function, named by
TFBATCH_ONLINE_FUNCTION; on one machine, where no function is named, `here` scores in this
process (the local API server has TensorFlow). The invoke's request and answer are `request`
and `answer`: the body travels as base64, and a refusal comes back as its v3 error, re-raised
here with the same status, code, message and target.
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
from botocore.exceptions import ClientError

from chalicelib.core import aws
from chalicelib.core.errors import ApiError, PayloadTooLarge, TooManyRequests
from chalicelib.core.settings import get_settings

Scorer = Callable[[str, str, bytes], dict]


MAX_BODY_BYTES = 4 * 1024 * 1024  # base64 in a synchronous invoke's 6 MB request


def score(instance_id: str, deployment_id: str, body: bytes, *, here: Scorer) -> dict:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The payload is {len(body)} bytes; an online request takes at most {MAX_BODY_BYTES}. "
                              "Score larger inputs with a batch deployment.", target={"type": "body"})
    function = get_settings().online_function
    if function is None:
        return here(instance_id, deployment_id, body)
    try:
        response = aws.client("lambda").invoke(FunctionName=function, InvocationType="RequestResponse",
                                               Payload=orjson.dumps(request(instance_id, deployment_id, body)))
    except ClientError as error:
        if error.response["Error"]["Code"] in ("TooManyRequestsException", "ThrottlingException"):
            raise TooManyRequests("Online scoring is at its concurrency limit; try again shortly.",
                                  retry_after=1) from None
        raise
    if response.get("FunctionError"):  # a crash or a timeout of the function itself, not a refusal
        raise ScoringUnavailable("The online scoring function failed; try again shortly.")
    return answer(orjson.loads(response["Payload"].read()))


class ScoringUnavailable(ApiError):
    status, code = 503, "scoring_unavailable"


def request(instance_id: str, deployment_id: str, body: bytes) -> dict[str, str]:
    return {"instance_id": instance_id, "deployment_id": deployment_id, "body": base64.b64encode(body).decode()}


def answer(payload: dict[str, Any]) -> dict:
    """The scoring function's answer, or its refusal raised as the v3 error it was."""
    if "error" not in payload:
        return payload["answer"]
    error = payload["error"]
    refused = ApiError(error["message"], code=error["code"], target=error.get("target"))
    refused.status = int(payload["status"])
    raise refused
