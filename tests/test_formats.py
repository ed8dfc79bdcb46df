"""Input formats: every accepted shape, and a precise message for every refusal."""
import base64

import numpy as np
import orjson
import pytest

from chalicelib.scoring.formats import InputError, TensorSpec, parse

IMAGE = TensorSpec("x_input_data", "float32", (None, 4))
A = TensorSpec("a", "float32", (None, 3))
B = TensorSpec("b", "int64", (None,))
TEXT = TensorSpec("text", "string", (None,))


def doc(value) -> bytes:
    return orjson.dumps(value)


def test_seed_format_by_tensor_name_and_by_inputs():
    by_name = parse(doc({"x_input_data": [[0, 1, 2, 3]]}), [IMAGE], "serving_default")
    by_inputs = parse(doc({"inputs": [[0, 1, 2, 3]]}), [IMAGE], "serving_default")
    for batch in (by_name, by_inputs):
        assert batch.count == 1
        assert batch.columns["x_input_data"].dtype == np.float32
        assert batch.columns["x_input_data"].tolist() == [[0, 1, 2, 3]]


def test_tf_serving_row_and_columnar_formats_with_several_inputs():
    rows = parse(doc({"instances": [{"a": [1, 2, 3], "b": 4}, {"a": [0, 0, 1], "b": 5}],
                      "signature_name": "serving_default"}), [A, B], "serving_default")
    columns = parse(doc({"inputs": {"a": [[1, 2, 3], [0, 0, 1]], "b": [4, 5]}}), [A, B], "serving_default")
    for batch in (rows, columns):
        assert batch.count == 2
        assert batch.columns["b"].dtype == np.int64 and batch.columns["b"].tolist() == [4, 5]


def test_row_format_with_bare_values_for_a_single_input():
    batch = parse(doc({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}), [IMAGE], "s")
    assert batch.count == 2


def test_jsonl_one_instance_per_line():
    lines = b'{"a": [1, 2, 3], "b": 1}\n\n{"a": [4, 5, 6], "b": 2}\n'
    batch = parse(lines, [A, B], "s", jsonl=True)
    assert batch.count == 2 and batch.columns["a"].shape == (2, 3)


def test_strings_and_base64_bytes():
    raw = bytes([0, 255, 7])
    batch = parse(doc({"text": ["héllo", {"b64": base64.b64encode(raw).decode()}]}), [TEXT], "s")
    assert batch.columns["text"].tolist() == ["héllo".encode(), raw]


def test_whole_floats_convert_to_integer_tensors():
    assert parse(doc({"a": [[1, 2, 3]], "b": [2.0]}), [A, B], "s").columns["b"].tolist() == [2]


@pytest.mark.parametrize("content, specs, code, words", [
    (b"", [IMAGE], "empty_file", "the file is empty"),
    (b"{not json", [IMAGE], "invalid_json", "not valid JSON"),
    (b'{"x_input_data": [[NaN, 1, 2, 3]]}', [IMAGE], "invalid_json", "NaN and Infinity are not JSON"),
    (doc([[1, 2, 3, 4]]), [IMAGE], "wrong_format", "expected a JSON object"),
    (doc({"y": [[1, 2, 3, 4]]}), [IMAGE], "unknown_tensor",
     "unknown tensor 'y'; the signature's inputs are: x_input_data"),
    (doc({"a": [[1, 2, 3]]}), [A, B], "missing_tensor", "lacks input tensor 'b'"),
    (doc({"inputs": [[1, 2, 3, 4, 5]]}), [IMAGE], "wrong_shape",
     "expects shape [None, 4] (a list of records); found [1, 5]"),
    (doc({"inputs": [1, 2, 3, 4]}), [IMAGE], "wrong_shape", "expects shape [None, 4] (a list of records); found [4]"),
    (doc({"inputs": 3}), [IMAGE], "wrong_shape", "found a single value"),
    (doc({"inputs": [[1, 2], [1, 2, 3, 4]]}), [IMAGE], "wrong_shape", "is ragged"),
    (doc({"inputs": [["a", "b", "c", "d"]]}), [IMAGE], "wrong_dtype", "expects float32 numbers; found strings"),
    (doc({"inputs": [[1, None, 3, 4]]}), [IMAGE], "wrong_dtype", "found null or mixed values"),
    (doc({"a": [[1, 2, 3]], "b": [1.5]}), [A, B], "wrong_dtype", "expects whole numbers (int64); found 1.5"),
    (doc({"a": [[1, 2, 3]], "b": [1, 2]}), [A, B], "wrong_shape", "different numbers of records"),
    (doc({"text": [3]}), [TEXT], "wrong_dtype", "expects strings"),
    (doc({"text": [{"b64": "%%%"}]}), [TEXT], "invalid_input", "not valid base64"),
    (b'{"inputs": [[1e999, 1, 2, 3]]}', [IMAGE], "invalid_json", "number is infinity"),
    (doc({"instances": []}), [IMAGE], "wrong_format", "non-empty list"),
    (doc({"inputs": [[1, 2, 3, 4]], "signature_name": "other"}), [IMAGE], "wrong_signature",
     "serves 'serving_default'"),
    (doc({"inputs": []}), [IMAGE], "wrong_shape", "expects shape"),
])
def test_refusals_name_the_tensor_and_what_was_expected(content, specs, code, words):
    with pytest.raises(InputError) as refused:
        parse(content, specs, "serving_default")
    assert refused.value.code == code
    assert words in str(refused.value)


def test_whole_numbers_below_2_53_written_as_floats_are_exact():
    spec = [TensorSpec("n", "int64", (None,))]
    assert parse(b'{"n": [9007199254740991.0]}', spec, "s").columns["n"].tolist() == [2 ** 53 - 1]
    assert parse(b'{"n": [9007199254740993]}', spec, "s").columns["n"].tolist() == [2 ** 53 + 1]  # JSON integer


def test_int_range_is_checked():
    small = TensorSpec("n", "int8", (None,))
    with pytest.raises(InputError, match=r"outside the int8 range \[-128, 127\]"):
        parse(doc({"n": [1000]}), [small], "s")


@pytest.mark.parametrize("written, dtype, expected", [
    (b"[1e39]", "float32", "outside the float32 range"),
    (b"[70000]", "float16", "outside the float16 range"),
    (b"[18446744073709551616]", "uint64", "cannot be read exactly as uint64"),
    (b"[-9223372036854775809]", "int64", "cannot be read exactly as int64"),
    (b"[100000000000000000000000000000]", "int64", "cannot be read exactly as int64"),
    (b"[9007199254740993.0]", "int64", "cannot be read exactly as int64"),  # reads as 2**53: not what was written
    (b"[-9007199254740992.0]", "int64", "cannot be read exactly as int64"),
])
def test_numbers_that_do_not_fit_the_dtype_are_refused_not_wrapped(written, dtype, expected):
    with pytest.raises(InputError, match=expected) as refused:
        parse(b'{"inputs": ' + written + b"}", [TensorSpec("inputs", dtype, None)], "s")
    assert refused.value.code == "wrong_dtype"
