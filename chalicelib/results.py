"""Writing predictions and errors in the seed's output shape.

Each element starts with "filename"; a file of one record gives each output tensor without
its batch dimension (the seed's `"classes": 3`), a file of several records gives one element
per record with "index" after "filename". Floats keep full float32 precision: each float32 is
written as the exact decimal of its value (widened to float64, as the seed's 605047.6875),
so a reader gets back the very number the model produced, whichever float width it parses
into. String tensors become text, or {"b64": ...} when they are not UTF-8.
"""
from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
import obstore
import orjson
from obstore.exceptions import AlreadyExistsError, GenericError
from obstore.store import LocalStore

from chalicelib.log import logger

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# Result and error objects carry this metadata (x-amz-meta-tfbatch-result on S3), and an input
# that has it is skipped: a deployment whose output is another's input (or its own, however the
# URLs are written) can never score results again, in a loop.
RESULT_MARK = "tfbatch-result"
ATTRIBUTES = {"Content-Type": "application/json", RESULT_MARK: "1"}


def _value(value: Any) -> Any:
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind == "S":
            return [_value(item) for item in value]
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
        return [{"filename": filename, **{name: _value(outputs[name][0]) for name in names}}]
    return [{"filename": filename, "index": index, **{name: _value(outputs[name][index]) for name in names}}
            for index in range(count)]


def error_element(filename: str, code: str, message: str) -> dict[str, Any]:
    return {"filename": filename, "error": {"code": code, "message": message}}


def dumps(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(items, option=_OPTIONS)


def put(store, key: str, items: list[dict[str, Any]]) -> None:
    """Write a result or error object, marked as one (a local folder keeps no metadata: there
    `tfbatch score` keeps its output out of its input by path). Create-only: names are never
    reused, and a name already taken means another scorer claimed it (ledger.py), so the write
    is refused with obstore's AlreadyExistsError."""
    _create(store, key, dumps(items))


# The bytes of a claimed name (`claim`): a scorer never writes an empty result file, so an
# object of exactly these bytes holds no records.
CLAIM = dumps([])
_CREATE_ATTEMPTS = 4  # obstore does not retry a create-only PUT whose connection failed


def _create(store, key: str, data: bytes) -> None:
    """A create-only PUT, tried again when the network failed it (obstore retries 5xx, but not
    a conditional PUT whose connection dropped: it may have landed). A name found taken holds
    either these very bytes, when an earlier try landed and only its answer was lost (success),
    or another scorer's object (AlreadyExistsError): without that check, a write whose answer
    was lost would stop its scorer, and a claim would be mistaken for a stopped scorer's file."""
    attributes = None if isinstance(store, LocalStore) else ATTRIBUTES
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            obstore.put(store, key, data, attributes=attributes, mode="create")
            return
        except AlreadyExistsError:
            if _holds(store, key, data):
                logger.info("an earlier try of a create-only write landed", extra={"key": key})
                return
            raise
        except GenericError as error:  # transport errors; refusals (permissions, no bucket) have their own classes
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
            logger.info("a create-only write failed; trying again", extra={"key": key, "error": type(error).__name__})
            time.sleep(0.1 * 2 ** attempt)


def _holds(store, key: str, data: bytes) -> bool:
    try:
        return bytes(obstore.get(store, key).bytes()) == data
    except FileNotFoundError:
        return False


def claim(store, key: str) -> bool:
    """Take an output name a scorer that stopped had planned, so that scorer can never write it
    (an empty result file stays there); False when that scorer's file is there already. A name
    claimed before (by an earlier try, or an earlier recovery that died) counts as claimed."""
    try:
        _create(store, key, CLAIM)
    except AlreadyExistsError:
        return False
    return True


def holds_records(store, key: str) -> bool | None:
    """Whether an output object holds a scorer's records: None when there is no such object,
    False when it is only a claimed name (CLAIM), which must never be adopted as results."""
    try:
        return obstore.head(store, key)["size"] != len(CLAIM)
    except FileNotFoundError:
        return None
