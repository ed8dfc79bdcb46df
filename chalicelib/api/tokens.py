"""Signed access tokens (JWT, HS256) that bind a caller to one instance.

The signing key lives in Secrets Manager and is read once per process. The IBM client reads a
token's `exp` by decoding its payload with plain base64, which drops base64url's `-` and `_`:
the claims are compact ASCII JSON of UUIDs, hex and numbers, and base64url writes `-` or `_`
only for the bytes '>', '?' and '~' (or non-ASCII), which such JSON never holds
(tests/test_tokens.py checks it over random claims).
"""
from __future__ import annotations

import time
import uuid

import jwt

from chalicelib.core import aws, caches
from chalicelib.core.errors import Unauthorized
from chalicelib.core.settings import get_settings

_ISSUER = "tfbatch"
_ALGORITHM = "HS256"


@caches.per_process
def _signing_key() -> str:
    secret_id = get_settings().signing_key_secret
    return aws.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]


def issue(username: str, instance_id: str) -> str:
    now = int(time.time())
    claims = {
        "iss": _ISSUER,
        "sub": username,
        "instance_id": instance_id,
        "iat": now,
        "exp": now + get_settings().token_ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, _signing_key(), algorithm=_ALGORITHM)


def verify(token: str) -> dict:
    """The token's claims, or Unauthorized saying why it was refused (never echoing the token)."""
    try:
        return jwt.decode(
            token,
            _signing_key(),
            algorithms=[_ALGORITHM],
            issuer=_ISSUER,
            options={"require": ["exp", "iat", "sub", "instance_id"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(
            "The token has expired. Get a new one from /v3/identity/token.", code="token_expired"
        ) from None
    except jwt.InvalidTokenError:
        raise Unauthorized(
            "The token is not valid (malformed, or not signed by this service). "
            "Get one from /v3/identity/token.",
            code="invalid_token",
        ) from None
