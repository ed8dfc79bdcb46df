"""The v3 HTTP conventions in one place: authentication, error shape, request ids, base URLs.

Routes are registered through `V3Api.route`, which hands each view a `Call` (the parsed
request and who made it) and turns every exception into a v3 error body with the request id
as `trace`. Unexpected exceptions are logged with their traceback and answered with a plain
500 that leaks nothing. What Chalice answers by itself (415 for a content type a route does
not take) is rewritten into the same shape, and `refuse_other_methods` answers a method a path
does not have with a v3 405: API Gateway would otherwise answer it as an unknown route. Unknown
routes themselves never reach the app: the stack's gateway responses (deploy/stack.py) and the
local server (chalicelib.local.api_server) answer them with `unknown_route`.
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
from chalicelib.core.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
    header,
)
from chalicelib.core.log import logger

# JSON bodies are parsed from the raw bytes whatever the client labelled them: curl's `-d`
# sends form encoding by default, and refusing that would only break copied scripts.
JSON_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")  # what a path answers, if only with a 405
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_ID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


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


@dataclass(frozen=True)
class Answer:
    """A view's body with a status other than its route's usual one (a 202 for work still going on)."""

    status: int
    body: Any


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if body is None:
        return Response(body="", status_code=status, headers=dict(headers or {}))
    return Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        status_code=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def unknown_route(method: str, path: str, trace: str) -> tuple[int, dict[str, Any]]:
    """Status and v3 body for a path the API does not have (the caller's headers never echoed)."""
    error = NotFound(f"There is no {method} {path[:200]} in this API; see the v3 API reference for its routes.",
                     code="unknown_route", target={"type": "route", "name": path[:200]})
    return error.status, error.body(trace)


class V3Api:
    """Registers views on a Chalice app with the v3 conventions applied. `binary_types` are the
    content types API Gateway must pass as bytes (model archives), not as text."""

    def __init__(self, app: Chalice, *, binary_types: list[str] = ()):
        self._app = app
        app.api.binary_types.extend(kind for kind in binary_types if kind not in app.api.binary_types)
        app.register_middleware(self._in_v3_shape, "http")

    def refuse_other_methods(self) -> None:
        """Give every path a v3 405 (with `Allow`) for the methods it does not have. Call once,
        after the last route: each path is then complete."""
        for path, entries in list(self._app.routes.items()):
            allowed = sorted(entries)
            others = [method for method in METHODS if method not in entries]
            if others:
                def refuse(call: Call, allowed: list[str] = allowed, **params: str) -> None:
                    raise MethodNotAllowed(f"{call.request.method} is not allowed here; this path allows "
                                           f"{', '.join(allowed)}.", headers={"Allow": ", ".join(allowed)},
                                           target={"type": "method", "name": call.request.method})
                self.route(path, methods=others, public=True, content_types=["*/*"])(refuse)

    def _in_v3_shape(self, request: Request, get_response: Callable[[Request], Response]) -> Response:
        """Chalice's own error answers ({"Code", "Message"}: a content type the route does not
        take) in the v3 shape, like every other error."""
        response = get_response(request)
        body = response.body
        if response.status_code < 400 or not (isinstance(body, dict) and set(body) == {"Code", "Message"}):
            return response
        trace = str(uuid.uuid4())
        if response.status_code == 415:
            error: ApiError = UnsupportedMediaType(
                f"{body['Message']}; send the body as one of: {', '.join(self._content_types(request))}.",
                target=header("Content-Type"))
        else:
            error = ApiError(str(body["Message"]), code=str(body["Code"]).lower())
            error.status = response.status_code
        headers = {name: value for name, value in response.headers.items() if name.lower() == "allow"}
        return _json_response(error.status, error.body(trace), {**headers, **error.headers})

    def _content_types(self, request: Request) -> list[str]:
        entry = self._app.routes.get(request.context.get("resourcePath", ""), {}).get(request.method)
        return list(entry.content_types) if entry else JSON_TYPES

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
            for name, value in params.items():  # every id in a path is a UUID; anything else names nothing
                if name.endswith("_id") and not _ID.match(value):
                    raise NotFound(f"There is no {name[:-3].replace('_', ' ')} {value[:64]!r}.",
                                   target={"type": name[:-3], "id": value[:64]})
            if not public:
                call.claims = call.bearer_claims()
                requested = params.get("instance_id")
                if requested is not None and requested != call.instance_id:
                    raise Forbidden("This token belongs to another instance; it cannot access this one.",
                                    target={"type": "instance", "id": requested})
            answer = view(call, **params)
            response = (_json_response(answer.status, answer.body) if isinstance(answer, Answer)
                        else _json_response(status, answer))
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
