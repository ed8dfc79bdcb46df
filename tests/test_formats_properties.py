"""Generated inputs (hypothesis): whatever bytes a user drops into a bucket, reading them either
gives tensors of the signature's dtype and shape or an InputError that says why, never another
exception (which would cost the other files of the group) and never a silently changed value."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.scoring.formats import InputError, TensorSpec, parse

SPECS = [
    TensorSpec("inputs", "float32", (None, 3)),
    TensorSpec("inputs", "float16", None),
    TensorSpec("inputs", "int32", (None,)),
    TensorSpec("inputs", "int64", None),
    TensorSpec("inputs", "uint8", (None, 2)),
    TensorSpec("inputs", "uint64", None),
    TensorSpec("inputs", "bool", (None,)),
    TensorSpec("inputs", "string", None),
]
NUMBERS = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans())
JSON = st.recursive(st.one_of(st.none(), NUMBERS, st.text(max_size=5)),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=30)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(value) -> bytes:
    """JSON as a user's tool may write it: integers of any size (orjson refuses past 64 bits)."""
    return json.dumps(value).encode()


def _read(data: bytes, spec: TensorSpec):
    """The batch, or None for an InputError; anything else fails the test."""
    try:
        batch = parse(data, [spec], "serving_default")
    except InputError as error:
        assert str(error) and error.code
        return None
    array = batch.columns[spec.name]
    assert batch.count == len(array) > 0
    if spec.shape is not None:
        assert array.ndim == len(spec.shape)
        assert all(want in (None, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True))
    if spec.dtype != "string":
        assert array.dtype == np.dtype(spec.dtype)
        if array.dtype.kind == "f":
            assert np.isfinite(array).all()  # never an overflow turned into infinity
    return array


@FAST
@given(value=JSON, spec=st.sampled_from(SPECS))
def test_any_json_value_gives_tensors_or_an_input_error(value, spec):
    _read(encode({"inputs": value}), spec)
    _read(encode({"instances": value}), spec)
    _read(encode(value), spec)


@FAST
@given(data=st.binary(max_size=200), spec=st.sampled_from(SPECS))
def test_any_bytes_give_tensors_or_an_input_error(data, spec):
    _read(data, spec)


@FAST
@given(values=st.lists(st.integers(-(2 ** 65), 2 ** 65), min_size=1, max_size=5),
       dtype=st.sampled_from(["int32", "int64", "uint8", "uint64"]))
def test_whole_numbers_are_read_exactly_or_refused(values, dtype):
    array = _read(encode({"inputs": values}), TensorSpec("inputs", dtype, None))
    info = np.iinfo(dtype)
    if array is not None:
        assert array.tolist() == values  # no wrap-around, no rounding
    else:
        assert any(value < info.min or value > info.max for value in values) or any(abs(v) > 2 ** 53 for v in values)


@FAST
@given(rows=st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3), min_size=1, max_size=6))
def test_every_format_reads_the_same_records(rows):
    spec = TensorSpec("inputs", "float32", (None, 3))
    expected = np.array(rows, np.float32)
    for document in ({"inputs": rows}, {"instances": rows}, {"inputs": rows, "signature_name": "serving_default"}):
        assert np.array_equal(_read(encode(document), spec), expected)
    lines = b"\n".join(encode(row) for row in rows)
    assert np.array_equal(parse(lines, [spec], "serving_default", jsonl=True).columns["inputs"], expected)


@pytest.mark.parametrize("dtype", ["string", "float32"])
@pytest.mark.parametrize("depth", [70, 500, 1000])
def test_deeply_nested_lists_are_refused_with_a_reason(dtype, depth):
    data = b'{"inputs": ' + b"[" * depth + b'"a"' + b"]" * depth + b"}"
    with pytest.raises(InputError, match="nest"):
        parse(data, [TensorSpec("inputs", dtype, None)], "serving_default")
