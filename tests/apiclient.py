"""Helpers for API tests through Chalice's test client (the app's own routing, moto in-process)."""
from __future__ import annotations

import base64
import json


def basic(username: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Host": "api.example.test"}


def body(response) -> dict:
    return json.loads(response.body) if response.body else {}


def error_of(response) -> dict:
    data = body(response)
    assert set(data) == {"trace", "errors"}, data
    return data["errors"][0]
