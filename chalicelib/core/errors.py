"""API errors in the v3 shape: {"trace", "errors": [{"code", "message", "target"}]}.

Each error says what was wrong and how to fix it; `target` names the field, header or file.
An error may also carry response headers that HTTP defines for its status (`Retry-After`).
"""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, target: dict[str, Any] | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.target = target
        self.headers = dict(headers or {})  # sent with the error response
        if code:
            self.code = code

    def body(self, trace: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return {"trace": trace, "errors": [error]}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class LimitExceeded(ApiError):
    status, code = 429, "limit_exceeded"


class TooManyRequests(ApiError):
    """Come back later: unlike a usage limit, this passes by itself, after `Retry-After` seconds."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, target: dict[str, Any] | None = None,
                 code: str | None = None):
        super().__init__(message, target=target, code=code, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


def field(name: str) -> dict[str, str]:
    return {"type": "field", "name": name}


def header(name: str) -> dict[str, str]:
    return {"type": "header", "name": name}
