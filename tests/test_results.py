"""Output elements in the seed's shape, with float32 values at full precision."""
import numpy as np
import orjson

from chalicelib.scoring.results import dumps, elements, error_element


def test_one_record_drops_the_batch_dimension_like_the_seed():
    outputs = {"classes": np.array([3], np.int64),
               "proba": np.array([[-2345609.0, 605047.6875, 3675351.25]], np.float32)}
    text = dumps(elements("num_3.json", outputs)).decode()
    assert text == '[{"filename":"num_3.json","classes":3,"proba":[-2345609.0,605047.6875,3675351.25]}]'


def test_float32_values_keep_their_exact_float32_value():
    value = np.float32(0.1) * np.float32(3)
    parsed = orjson.loads(dumps(elements("f", {"y": np.array([value], np.float32)})))
    assert parsed[0]["y"] == float(value)  # exact even when read as a float64


def test_several_records_get_an_index_after_filename():
    items = elements("batch.jsonl", {"y": np.array([[1.5], [2.5]], np.float32)})
    assert [list(item) for item in items] == [["filename", "index", "y"]] * 2
    assert [item["index"] for item in items] == [0, 1]


def test_string_outputs_are_text_or_base64():
    items = orjson.loads(dumps(elements("s", {"upper": np.array([b"HI", b"\xff"], dtype=object)})))
    assert [item["upper"] for item in items] == ["HI", {"b64": "/w=="}]


def test_error_element_names_the_file():
    assert error_element("bad.json", "invalid_json", "the file is not valid JSON") == {
        "filename": "bad.json", "error": {"code": "invalid_json", "message": "the file is not valid JSON"}}


def test_create_only_writes_tell_their_own_landed_try_from_a_claim(tmp_path):
    """A write retried after its answer was lost finds its own bytes and succeeds; a claimed
    name refuses a scorer's write; a name claimed before (an earlier recovery that died) is
    still claimed, and never counts as a file that holds records."""
    import pytest
    from obstore.exceptions import AlreadyExistsError
    from obstore.store import LocalStore

    from chalicelib.scoring import outputs

    store = LocalStore(str(tmp_path))
    items = [{"filename": "a.json", "y": 1}]
    assert outputs.holds_records(store, "p.json") is None
    outputs.put(store, "p.json", items)
    outputs.put(store, "p.json", items)  # the same bytes: an earlier try that landed
    assert outputs.holds_records(store, "p.json") is True
    assert outputs.claim(store, "p.json") is False  # the stopped scorer's file is there
    assert outputs.claim(store, "q.json") is True
    assert outputs.claim(store, "q.json") is True  # claimed before: still claimed
    assert outputs.holds_records(store, "q.json") is False
    with pytest.raises(AlreadyExistsError):
        outputs.put(store, "q.json", items)
    with pytest.raises(AlreadyExistsError):
        outputs.put(store, "p.json", [{"filename": "b.json", "y": 2}])
