"""Online scoring payloads, both directions: what a request may send, and the answer in the same
shape.

- WML (the IBM client): {"fields": [input names], "values": [[one value per field], ...]},
  answered {"fields": [output names], "values": [[one value per output], ...]}. With a single
  field, a row may also be that input's value itself ({"fields": ["x"], "values": [[1.0, 2.0]]}
  for an `x` of shape [None, 2]): the tensor's rank tells the two apart.
- TF Serving's row format {"instances": [...]}, answered {"predictions": [...]} (one value per
  instance for a single output, else an object per instance);
- TF Serving's columnar format {"inputs": ...} or the seed's tensor names as keys, answered
  {"outputs": ...} (the tensor itself for a single output, else an object of tensors).
Values are read with chalicelib.scoring.formats (dtype and shape checks, errors naming the
tensor) and written with chalicelib.scoring.results (exact floats, text or b64 strings).
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np

from chalicelib.scoring import formats
from chalicelib.scoring.formats import Batch, InputError, TensorSpec
from chalicelib.scoring.results import json_value


class Form(StrEnum):
    WML = "fields/values"
    ROWS = "instances"
    COLUMNS = "inputs"


def read(data: bytes, inputs: list[TensorSpec], signature_name: str) -> tuple[Batch, Form]:
    """A request body as a Batch, and the form to answer in; InputError names what is wrong."""
    if not data.strip():
        raise InputError("the request has no body; send {\"fields\": [...], \"values\": [[...]]} or "
                         "{\"instances\": [...]}.", "empty_body")
    document = formats.load_json(data, "the request body")
    if isinstance(document, dict) and ("fields" in document or "values" in document):
        return formats.batch(_wml_columns(document, inputs), inputs), Form.WML
    form = Form.ROWS if isinstance(document, dict) and "instances" in document else Form.COLUMNS
    return formats.batch(formats.columns(document, inputs, signature_name), inputs), form


def write(outputs: dict[str, np.ndarray], form: Form, *, rows: int) -> dict[str, Any]:
    """The model's outputs (one row per instance: `rows` of them) in the request's form."""
    names = sorted(outputs)
    wrong = [name for name in names if np.ndim(outputs[name]) == 0 or len(outputs[name]) != rows]
    if wrong:
        raise InputError(f"output '{wrong[0]}' does not hold one row per instance ({rows}); an online answer "
                         "needs the batch dimension first in every output.", "model_error")
    count = rows
    if form == Form.WML:
        return {"fields": names, "values": [[json_value(outputs[name][row]) for name in names]
                                            for row in range(count)]}
    if form == Form.ROWS:
        if len(names) == 1:
            return {"predictions": [json_value(value) for value in outputs[names[0]]]}
        return {"predictions": [{name: json_value(outputs[name][row]) for name in names} for row in range(count)]}
    if len(names) == 1:
        return {"outputs": json_value(outputs[names[0]])}
    return {"outputs": {name: json_value(outputs[name]) for name in names}}


def _wml_columns(document: dict, inputs: list[TensorSpec]) -> dict[str, list]:
    fields, values = document.get("fields"), document.get("values")
    names = [spec.name for spec in inputs]
    if fields is None and len(inputs) == 1:
        fields = names
    if not isinstance(fields, list) or not all(isinstance(name, str) for name in fields) or not fields:
        raise InputError(f"'fields' must list the input tensors the values give ({', '.join(names)}).",
                         "wrong_format")
    if len(set(fields)) != len(fields):
        raise InputError("'fields' names an input tensor twice.", "wrong_format")
    formats.check_names(dict.fromkeys(fields), inputs, where="'fields'")
    if not isinstance(values, list) or not values:
        raise InputError("'values' must be a non-empty list of rows, one value per field in each.", "wrong_format")
    if len(fields) == 1:
        spec = next(spec for spec in inputs if spec.name == fields[0])
        return {spec.name: [_single_field_value(row, spec, number) for number, row in enumerate(values)]}
    columns: dict[str, list] = {name: [] for name in fields}
    for number, row in enumerate(values):
        if not isinstance(row, list) or len(row) != len(fields):
            raise InputError(f"row {number} of 'values' must hold {len(fields)} values, one per field "
                             f"({', '.join(fields)}).", "wrong_format")
        for name, value in zip(fields, row, strict=True):
            columns[name].append(value)
    return columns


def _single_field_value(row: Any, spec: TensorSpec, number: int) -> Any:
    """A row of one field: [value], or the value itself when its rank is the tensor's own."""
    if not isinstance(row, list):
        raise InputError(f"row {number} of 'values' must be a list.", "wrong_format")
    instance_rank = None if spec.shape is None else len(spec.shape) - 1
    if instance_rank is not None and _rank(row) == instance_rank:
        return row
    if len(row) != 1:
        raise InputError(f"row {number} of 'values' must hold one value for '{spec.name}' (or be its value, "
                         f"of shape {spec.describe_shape()} without the batch dimension).", "wrong_shape")
    return row[0]


def _rank(value: Any) -> int:
    rank = 0
    while isinstance(value, list) and value and rank <= formats.MAX_NESTING:
        value, rank = value[0], rank + 1
    return rank
