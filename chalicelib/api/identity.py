"""The token endpoint: Basic credentials in, a signed token for their instance out."""
from __future__ import annotations

from chalicelib.api import tokens
from chalicelib.api.http import Call
from chalicelib.state import instances


def issue_token(call: Call) -> dict:
    username, password = call.basic_credentials()
    instance_id = instances.authenticate(username, password)
    return {"token": tokens.issue(username, instance_id)}


def refresh_token(call: Call) -> dict:
    """A fresh token for a caller whose current token is still valid and whose instance exists."""
    claims = call.bearer_claims()
    instances.get(claims["instance_id"])
    return {"token": tokens.issue(claims["sub"], claims["instance_id"])}
