"""The model cache: each version loads once per process, in the background, and a load that
failed is tried again rather than remembered."""
from __future__ import annotations

import numpy as np
import pytest

import savedmodels
from chalicelib import aws, engine
from chalicelib.settings import get_settings


@pytest.fixture
def stored(aws_mock, tmp_path):
    """Put bytes where a version's archive lives in the models bucket; forget the version after."""
    version_id = f"v-{tmp_path.name}"

    def put(archive: bytes) -> str:
        key = f"models/{version_id}/content.tar.gz"
        aws.client("s3").put_object(Bucket=get_settings().models_bucket, Key=key, Body=archive)
        return key

    yield version_id, put
    engine.forget(version_id)


def test_a_version_loads_once_and_serves_every_caller(stored, model_dirs):
    version_id, put = stored
    key = put(savedmodels.tar_gz(model_dirs["two_signatures"]))
    first = engine.model(version_id, key, "double")
    assert engine.model(version_id, key, "double") is first  # one load, however many runs ask
    outputs = first.result(timeout=60).predict({"x": np.array([[1.0, 2.0]], np.float32)})
    assert np.allclose(next(iter(outputs.values())), [[2.0, 4.0]])
    negate = engine.model(version_id, key, "negate").result(timeout=60)
    assert np.allclose(next(iter(negate.predict({"x": np.ones((1, 2), np.float32)}).values())), [[-1.0, -1.0]])


def test_a_failed_load_is_raised_then_tried_again(stored, model_dirs):
    version_id, put = stored
    key = put(b"not an archive")
    failed = engine.model(version_id, key, "double")
    with pytest.raises(Exception):
        failed.result(timeout=60)
    put(savedmodels.tar_gz(model_dirs["two_signatures"]))
    retried = engine.model(version_id, key, "double")
    assert retried is not failed
    assert retried.result(timeout=60) is not None


def test_preload_raises_what_the_load_raised(stored):
    version_id, put = stored
    key = put(b"not an archive")
    with pytest.raises(Exception):
        engine.preload(version_id, key, ["serving_default"])


def test_local_copies_leave_no_scraps_and_stay_few(stored, model_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "_CACHE_DIR", tmp_path / "copies")
    version_id, put = stored
    key = put(b"not an archive")
    with pytest.raises(Exception):
        engine.local_copy(version_id, key)
    assert list((tmp_path / "copies").iterdir()) == []  # a failed download leaves nothing
    put(savedmodels.tar_gz(model_dirs["multi_io"]))
    assert (engine.local_copy(f"{version_id}-0", key) / "saved_model.pb").exists()
    one_copy = engine._size(tmp_path / "copies" / f"{version_id}-0")
    monkeypatch.setattr(engine, "_copies_budget", lambda: 2 * one_copy + one_copy // 2)  # bytes for two copies
    for number in range(1, 3):
        assert (engine.local_copy(f"{version_id}-{number}", key) / "saved_model.pb").exists()
    assert sorted(path.name for path in (tmp_path / "copies").iterdir()) == [f"{version_id}-1", f"{version_id}-2"]
