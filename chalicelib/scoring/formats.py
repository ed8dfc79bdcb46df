"""Reading input files into tensors: the seed's format, TF Serving's row and columnar formats,
and JSON Lines. NumPy only (no TensorFlow), so it is tested and reused everywhere.

Every refusal is an `InputError` whose message names the tensor and says what was expected
and what was found; the caller adds the file name.

Accepted shapes of one file (each value is a batch of records, usually one):
- seed:      {"x_input_data": [[...]]}   one key per input tensor, or `inputs` for a single input
- columnar:  {"inputs": {"a": [...], "b": [...]}}                       (TF Serving)
- row:       {"instances": [{"a": ..., "b": ...}, ...]} or [value, ...] for one input (TF Serving)
- .jsonl:    one instance per line, as in the row format
Any of the JSON objects may carry "signature_name", which must then be the deployment's.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

STRING = "string"
MAX_NESTING = 32  # levels of lists in one tensor; deeper is refused before it can exhaust the stack
EXACT_FLOAT_INTEGERS = 2 ** 53  # whole numbers that a float64 (JSON's number) holds exactly
_NUMPY = {
    "float16": np.float16, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
}


class InputError(ValueError):
    """This file cannot be scored; the message says exactly why."""

    code = "invalid_input"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # a TensorFlow dtype name: float32, int64, string, ...
    shape: tuple[int | None, ...] | None  # None: unknown rank

    @classmethod
    def from_signature(cls, tensor: dict) -> TensorSpec:
        shape = tensor.get("shape")
        return cls(tensor["name"], tensor["dtype"], None if shape is None else tuple(
            None if dim is None else int(dim) for dim in shape))

    def describe_shape(self) -> str:
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join("None" if dim is None else str(dim) for dim in self.shape) + "]"


@dataclass
class Batch:
    """One file's records: an array per input tensor, all with `count` rows."""

    columns: dict[str, np.ndarray]
    count: int


def _strings(value: Any, name: str) -> Any:
    if isinstance(value, list):
        return [_strings(item, name) for item in value]
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise InputError(f"tensor '{name}': a {{\"b64\": ...}} value is not valid base64.") from None
    raise InputError(f"tensor '{name}' expects strings (or {{\"b64\": \"...\"}} for bytes); "
                     f"found {type(value).__name__} {str(value)[:40]}.", "wrong_dtype")


def _too_deep(value: Any) -> bool:
    """Whether lists nest more than MAX_NESTING levels anywhere (a walk without recursion)."""
    level, frontier = 0, [value]
    while frontier:
        lists = [item for item in frontier if isinstance(item, list)]
        if not lists:
            return False
        level += 1
        if level > MAX_NESTING:
            return True
        frontier = [child for item in lists for child in item]
    return False


def _nesting_error(spec: TensorSpec) -> InputError:
    return InputError(f"tensor '{spec.name}' nests lists more than {MAX_NESTING} levels deep; expected shape "
                      f"{spec.describe_shape()}.", "wrong_shape")


def _numbers(value: Any, spec: TensorSpec) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:
        if _too_deep(value):
            raise _nesting_error(spec) from None
        raise InputError(f"tensor '{spec.name}' is ragged: every record must have the same shape "
                         f"({spec.describe_shape()}).", "wrong_shape") from None
    if array.ndim > MAX_NESTING:
        raise _nesting_error(spec)
    target = np.dtype(_NUMPY[spec.dtype])
    kind = array.dtype.kind
    if kind not in "biuf":
        found = "strings" if kind in "US" else "null or mixed values"
        raise InputError(f"tensor '{spec.name}' expects {spec.dtype} numbers; found {found}.", "wrong_dtype")
    if target.kind == "b" and kind != "b":
        raise InputError(f"tensor '{spec.name}' expects true/false values (bool); found numbers.", "wrong_dtype")
    if kind == "f" and not np.isfinite(array).all():
        raise InputError(f"tensor '{spec.name}' holds NaN or infinity, which is not allowed.", "not_finite")
    if target.kind in "iu":
        if kind == "f":
            if not np.equal(np.mod(array, 1), 0).all():
                bad = array[np.not_equal(np.mod(array, 1), 0)].flat[0]
                raise InputError(f"tensor '{spec.name}' expects whole numbers ({spec.dtype}); found {bad}.",
                                 "wrong_dtype")
            # Whole numbers arrive as floats when the file writes them so or they pass 64 bits
            # (orjson then reads a float); from 2**53 on that float may not be the number written
            # (9007199254740993.0 reads as 2**53 itself), so 2**53 is refused too.
            if array.size and np.abs(array).max() >= EXACT_FLOAT_INTEGERS:
                raise InputError(f"tensor '{spec.name}' has whole numbers that cannot be read exactly as "
                                 f"{spec.dtype} (from ±2**53 on written as floats, or beyond the "
                                 f"{spec.dtype} range).", "wrong_dtype")
        info = np.iinfo(target)
        if array.size and kind != "b" and (array.min() < info.min or array.max() > info.max):
            raise InputError(f"tensor '{spec.name}' has values outside the {spec.dtype} range "
                             f"[{info.min}, {info.max}].", "wrong_dtype")
        return array.astype(target, copy=False)
    with np.errstate(over="ignore"):
        converted = array.astype(target, copy=False)
    if target.kind == "f" and not np.isfinite(converted).all():  # finite before: too large for the dtype
        raise InputError(f"tensor '{spec.name}' has values outside the {spec.dtype} range "
                         f"(±{float(np.finfo(target).max):.4g}).", "wrong_dtype")
    return converted


def to_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """One tensor's batch as an array of the signature's dtype, its shape checked."""
    if spec.dtype == STRING:
        if _too_deep(value):
            raise _nesting_error(spec)
        array = np.asarray(_strings(value, spec.name), dtype=object)
        if array.dtype != object or any(not isinstance(item, bytes) for item in array.flat):
            raise InputError(f"tensor '{spec.name}' is ragged: every record must have the same shape "
                             f"({spec.describe_shape()}).", "wrong_shape")
    elif spec.dtype in _NUMPY:
        array = _numbers(value, spec)
    else:
        raise InputError(f"tensor '{spec.name}' has dtype {spec.dtype}, which JSON input cannot express.",
                         "unsupported_dtype")
    if array.ndim == 0:
        raise InputError(f"tensor '{spec.name}' expects a batch (a list of records, shape "
                         f"{spec.describe_shape()}); found a single value. Wrap it in a list.", "wrong_shape")
    if spec.shape is not None:
        found = "[" + ", ".join(str(dim) for dim in array.shape) + "]"
        if array.ndim != len(spec.shape) or any(
                want is not None and want != got for want, got in zip(spec.shape[1:], array.shape[1:], strict=True)):
            raise InputError(f"tensor '{spec.name}' expects shape {spec.describe_shape()} "
                             f"(a list of records); found {found}.", "wrong_shape")
    return array


def _columns_from_rows(rows: Any, inputs: list[TensorSpec]) -> dict[str, Any]:
    if not isinstance(rows, list) or not rows:
        raise InputError("'instances' must be a non-empty list of records.", "wrong_format")
    names = [spec.name for spec in inputs]
    if len(inputs) == 1 and not all(isinstance(row, dict) and set(row) == {names[0]} for row in rows):
        return {names[0]: rows}
    found: dict[str, list] = {name: [] for name in names}
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"record {number} must be an object naming each input tensor "
                             f"({', '.join(names)}); found {type(row).__name__}.", "wrong_format")
        check_names(row, inputs, where=f"record {number}")
        for name in names:
            found[name].append(row[name])
    return found


def check_names(given: dict, inputs: list[TensorSpec], where: str) -> None:
    """Refuse a tensor the signature does not have, and one it has that is not given."""
    names = [spec.name for spec in inputs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InputError(f"{where} names unknown tensor '{unknown[0]}'; the signature's inputs are: "
                         f"{', '.join(names)}.", "unknown_tensor")
    missing = [name for name in names if name not in given]
    if missing:
        raise InputError(f"{where} lacks input tensor '{missing[0]}'; the signature's inputs are: "
                         f"{', '.join(names)}.", "missing_tensor")


def load_json(data: bytes, what: str) -> Any:
    """Parsed JSON, or InputError naming `what` was not JSON (and why)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        hint = " (NaN and Infinity are not JSON)" if b"NaN" in data or b"Infinity" in data else ""
        raise InputError(f"{what} is not valid JSON{hint}: {error}.", "invalid_json") from None


def columns(document: Any, inputs: list[TensorSpec], signature_name: str) -> dict[str, Any]:
    """The columns of a parsed JSON document in any of the formats above (not JSON Lines)."""
    if not isinstance(document, dict):
        raise InputError(f"expected a JSON object (tensor names as keys, or 'instances' or 'inputs'); "
                         f"found {type(document).__name__}.", "wrong_format")
    document = dict(document)
    requested = document.pop("signature_name", signature_name)
    if requested != signature_name:
        raise InputError(f"the file asks for signature '{requested}', but this deployment serves "
                         f"'{signature_name}'.", "wrong_signature")
    if "instances" in document:
        if len(document) > 1:
            raise InputError("'instances' cannot be mixed with other keys.", "wrong_format")
        return _columns_from_rows(document["instances"], inputs)
    if set(document) == {"inputs"} and (len(inputs) > 1 or inputs[0].name != "inputs"):
        value = document["inputs"]
        if isinstance(value, dict):
            check_names(value, inputs, where="'inputs'")
            return value
        if len(inputs) == 1:
            return {inputs[0].name: value}
        raise InputError("'inputs' must be an object naming each input tensor "
                         f"({', '.join(spec.name for spec in inputs)}).", "wrong_format")
    check_names(document, inputs, where="the file")
    return document


def parse(data: bytes, inputs: list[TensorSpec], signature_name: str, *, jsonl: bool = False) -> Batch:
    """One input file's bytes as a Batch, or InputError saying what is wrong."""
    if not data.strip():
        raise InputError("the file is empty; expected a JSON object with the model's input tensors.", "empty_file")
    if jsonl:
        lines = [line for line in data.splitlines() if line.strip()]
        rows = [load_json(line, f"line {number + 1}") for number, line in enumerate(lines)]
        return batch(_columns_from_rows(rows, inputs), inputs)
    return batch(columns(load_json(data, "the file"), inputs, signature_name), inputs)


def batch(raw: dict[str, Any], inputs: list[TensorSpec]) -> Batch:
    """Columns of JSON values (one per input tensor, named as the signature names them) as a
    Batch: each converted and checked against its tensor's dtype and shape."""
    arrays = {spec.name: to_array(raw[spec.name], spec) for spec in inputs}
    counts = {name: len(array) for name, array in arrays.items()}
    if len(set(counts.values())) != 1:
        raise InputError("the input tensors hold different numbers of records: "
                         + ", ".join(f"'{name}' {count}" for name, count in counts.items()) + ".", "wrong_shape")
    count = next(iter(counts.values()))
    if count == 0:
        raise InputError("the file holds no records.", "empty_file")
    return Batch(arrays, count)
