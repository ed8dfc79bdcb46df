"""Writing predictions and errors in the seed's output shape.

Each element starts with "filename"; a file of one record gives each output tensor without
its batch dimension (the seed's `"classes": 3`), a file of several records gives one element
per record with "index" after "filename". Floats keep full float32 precision: orjson writes
NumPy float32 values with their shortest exact repr. String tensors become text, or
{"b64": ...} when they are not UTF-8.
"""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _value(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        if array.ndim == 0:
            return _text(array.item())
        return [_value(item) for item in array]
    if array.ndim == 0:
        return array[()]  # a NumPy scalar: orjson keeps its precision
    return np.ascontiguousarray(array)


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
        return [{"filename": filename, **{name: _value(outputs[name][0]) for name in names}}]
    return [{"filename": filename, "index": index, **{name: _value(outputs[name][index]) for name in names}}
            for index in range(count)]


def error_element(filename: str, code: str, message: str) -> dict[str, Any]:
    return {"filename": filename, "error": {"code": code, "message": message}}


def dumps(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(items, option=_OPTIONS)
