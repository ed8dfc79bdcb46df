"""The v3 HTTP conventions in one place: authentication, error shape, request ids, base URLs.

Routes are registered through `V3Api.route`, which hands each view a `Call` (the parsed
request and who made it) and turns every exception into a v3 error body with the request id
as `trace`. Unexpected exceptions are logged with their traceback and answered with a plain
500 that leaks nothing.
"""
from __future__ import annotations

import base64
import binascii
import functools
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from chalice import Chalice, Response
from chalice.app import Request

from chalicelib.api import tokens
from chalicelib.core.errors import ApiError, BadRequest, Forbidden, Unauthorized, header
from chalicelib.core.log import logger

# JSON bodies are parsed from the raw bytes whatever the client labelled them: curl's `-d`
# sends form encoding by default, and refusing that would only break copied scripts.
JSON_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


@dataclass
class Call:
    """One API request, as the views see it."""

    request: Request
    trace: str
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return self.claims["instance_id"]

    @property
    def base_url(self) -> str:
        """scheme://host[/stage], from the request, so URLs are right locally and on API Gateway."""
        headers = self.request.headers
        host = headers.get("host", "")
        if not _HOST.match(host):
            raise BadRequest("The Host header is missing or malformed.", target=header("Host"))
        scheme = "https" if headers.get("x-forwarded-proto") == "https" else "http"
        stage = (self.request.context or {}).get("stage")
        prefix = f"/{stage}" if stage and host.endswith(".amazonaws.com") else ""
        return f"{scheme}://{host}{prefix}"

    def query(self, name: str) -> str | None:
        return (self.request.query_params or {}).get(name)

    def json(self) -> dict[str, Any]:
        raw = self.request.raw_body
        if not raw:
            raise BadRequest("The request needs a JSON object as its body.", target={"type": "body"})
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise BadRequest(f"The body is not valid JSON: {error}.", code="invalid_json",
                             target={"type": "body"}) from None
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.", code="invalid_json", target={"type": "body"})
        return body

    def basic_credentials(self) -> tuple[str, str]:
        scheme, _, value = self.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not value:
            raise Unauthorized(
                "Send the instance's username and password with HTTP Basic authentication.",
                target=header("Authorization"),
            )
        try:
            username, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise Unauthorized("The Basic credentials are malformed.", target=header("Authorization"))
        return username, password

    def bearer_claims(self) -> dict[str, Any]:
        scheme, _, token = self.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "This call needs 'Authorization: Bearer <token>'; get a token from /v3/identity/token.",
                target=header("Authorization"),
            )
        return tokens.verify(token.strip())


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if body is None:
        return Response(body="", status_code=status, headers=dict(headers or {}))
    return Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        status_code=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


class V3Api:
    """Registers views on a Chalice app with the v3 conventions applied."""

    def __init__(self, app: Chalice):
        self._app = app

    def route(self, path: str, *, methods: list[str], status: int = 200, public: bool = False,
              content_types: list[str] | None = None) -> Callable:
        def register(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def handler(**params: str) -> Response:
                return self._handle(view, params, status=status, public=public)

            self._app.route(path, methods=methods, content_types=content_types or JSON_TYPES)(handler)
            return view

        return register

    def _handle(self, view: Callable[..., Any], params: dict[str, str], *, status: int, public: bool) -> Response:
        request = self._app.current_request
        context = getattr(self._app, "lambda_context", None)
        trace = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
        # Per thread: chalice local serves requests on threads (Lambda runs one at a time).
        logger.thread_safe_append_keys(request_id=trace, method=request.method,
                                       route=request.context.get("resourcePath"))
        started = time.perf_counter()
        call = Call(request=request, trace=trace)
        try:
            if not public:
                call.claims = call.bearer_claims()
                requested = params.get("instance_id")
                if requested is not None and requested != call.instance_id:
                    raise Forbidden("This token belongs to another instance; it cannot access this one.",
                                    target={"type": "instance", "id": requested})
            response = _json_response(status, view(call, **params))
        except ApiError as error:
            response = _json_response(error.status, error.body(trace), error.headers)
        except Exception:
            logger.exception("unhandled error")
            response = _json_response(500, {"trace": trace, "errors": [{
                "code": "internal_error",
                "message": f"The service failed to handle this request; quote trace {trace} when reporting it.",
            }]})
        logger.info("request", extra={"status": response.status_code,
                                      "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
        logger.thread_safe_remove_keys(["request_id", "method", "route"])
        return response
