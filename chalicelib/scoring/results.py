"""Writing predictions and errors in the seed's output shape.

Each element starts with "filename"; a file of one record gives each output tensor without
its batch dimension (the seed's `"classes": 3`), a file of several records gives one element
per record with "index" after "filename". Floats keep full float32 precision: each float32 is
written as the exact decimal of its value (widened to float64, as the seed's 605047.6875),
so a reader gets back the very number the model produced, whichever float width it parses
into. String tensors become text, or {"b64": ...} when they are not UTF-8. How the files are
written to a store (marked, create-only, claimable) is `outputs`.
"""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_value(value: Any) -> Any:
    """One tensor (or row of one) as JSON: exact floats, text or {"b64"} for strings."""
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind == "S":
            return [json_value(item) for item in value]
        if value.dtype.kind == "f":
            return np.ascontiguousarray(value, dtype=np.float64)
        return np.ascontiguousarray(value)
    if isinstance(value, np.floating):
        return float(value)
    return value  # a NumPy integer or bool scalar


def _text(raw: Any) -> Any:
    if isinstance(raw, bytes):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(raw).decode()}
    return raw


def elements(filename: str, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The output elements for one input file, from its rows of every output tensor."""
    names = sorted(outputs)
    count = len(outputs[names[0]]) if names else 0
    if count == 1:
        return [{"filename": filename, **{name: json_value(outputs[name][0]) for name in names}}]
    return [{"filename": filename, "index": index, **{name: json_value(outputs[name][index]) for name in names}}
            for index in range(count)]


def error_element(filename: str, code: str, message: str) -> dict[str, Any]:
    return {"filename": filename, "error": {"code": code, "message": message}}


def dumps(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(items, option=_OPTIONS)
