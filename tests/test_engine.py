"""The model cache: each version loads once per process, in the background, and a load that
failed is tried again rather than remembered. On disk it keeps verified archives only: a copy
changed by anyone is discarded and fetched again, and extracted models do not outlive a load."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import savedmodels
from chalicelib.core import archives, aws
from chalicelib.core.settings import get_settings
from chalicelib.scoring import engine


@pytest.fixture
def stored(aws_mock, tmp_path, monkeypatch):
    """Put bytes where a version's archive lives in the models bucket; its StoredArchive (with
    the digest of `recorded`, else of the bytes) for a version id of its own."""
    monkeypatch.setattr(engine, "_CACHE_DIR", tmp_path / "cache")
    versions = []

    def put(archive: bytes, version: str = "v", recorded: bytes | None = None) -> engine.StoredArchive:
        version_id = f"{version}-{tmp_path.name}"
        key = f"models/{version_id}/content.tar.gz"
        aws.client("s3").put_object(Bucket=get_settings().models_bucket, Key=key, Body=archive)
        versions.append(version_id)
        digest = hashlib.sha256(archive if recorded is None else recorded).hexdigest()
        return engine.StoredArchive(version_id, key, digest)

    yield put
    for version_id in versions:
        engine.forget(version_id)


def test_a_version_loads_once_and_serves_every_caller(stored, model_dirs):
    archive = stored(savedmodels.tar_gz(model_dirs["two_signatures"]))
    first = engine.model(archive, "double")
    assert engine.model(archive, "double") is first  # one load, however many runs ask
    outputs = first.result(timeout=60).predict({"x": np.array([[1.0, 2.0]], np.float32)})
    assert np.allclose(next(iter(outputs.values())), [[2.0, 4.0]])
    negate = engine.model(archive, "negate").result(timeout=60)
    assert np.allclose(next(iter(negate.predict({"x": np.ones((1, 2), np.float32)}).values())), [[-1.0, -1.0]])


def test_a_failed_load_is_raised_then_tried_again(stored, model_dirs):
    good = savedmodels.tar_gz(model_dirs["two_signatures"])
    archive = stored(b"not an archive", recorded=good)  # the store holds other bytes than were uploaded
    failed = engine.model(archive, "double")
    with pytest.raises(engine.TamperedArchive):
        failed.result(timeout=60)
    stored(good)  # the right bytes are back
    retried = engine.model(archive, "double")
    assert retried is not failed
    assert retried.result(timeout=60) is not None


def test_preload_raises_what_the_load_raised(stored):
    with pytest.raises(archives.ArchiveError):
        engine.preload(stored(b"not an archive"), ["serving_default"])


def test_a_changed_local_copy_is_discarded_and_fetched_again(stored, model_dirs, tmp_path):
    archive = stored(savedmodels.tar_gz(model_dirs["multi_io"]))
    with engine.extracted(archive) as model_dir:
        assert (model_dir / "saved_model.pb").exists()
    (copy,) = (tmp_path / "cache" / archive.version_id).glob("*.archive")
    assert copy.name == f"{archive.sha256}.archive"
    copy.write_bytes(savedmodels.tar_gz(model_dirs["strings"]))  # another model, as a tenant's graph would
    with engine.extracted(archive) as model_dir:
        assert b"sum" in (model_dir / "saved_model.pb").read_bytes()  # multi_io's output, not strings'
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == archive.sha256


def test_a_stored_archive_that_no_longer_matches_its_digest_is_refused(stored, model_dirs, tmp_path):
    archive = stored(savedmodels.tar_gz(model_dirs["strings"]), recorded=savedmodels.tar_gz(model_dirs["multi_io"]))
    with pytest.raises(engine.TamperedArchive, match="does not match the SHA-256 recorded"):
        with engine.extracted(archive):
            pass
    assert list((tmp_path / "cache" / archive.version_id).iterdir()) == []  # nothing of it is kept


def test_a_version_without_a_recorded_digest_is_refused(stored, model_dirs):
    archive = stored(savedmodels.tar_gz(model_dirs["strings"]))
    with pytest.raises(engine.TamperedArchive, match="upload the model again"):
        engine.preload(engine.StoredArchive(archive.version_id, archive.key, ""), ["serving_default"])


def test_extracted_models_do_not_outlive_their_load(stored, model_dirs, tmp_path):
    archive = stored(savedmodels.tar_gz(model_dirs["keras"]))
    engine.preload(archive, ["serving_default"])
    left = sorted(path.name for path in (tmp_path / "cache" / archive.version_id).iterdir())
    assert left == [f"{archive.sha256}.archive"]


def test_local_copies_leave_no_scraps_and_fit_the_budget(stored, model_dirs, tmp_path, monkeypatch):
    bad = stored(b"not an archive", "bad")
    with pytest.raises(archives.ArchiveError):
        with engine.extracted(bad):
            pass
    (folder,) = (tmp_path / "cache").iterdir()
    assert [path.name for path in folder.iterdir()] == [f"{bad.sha256}.archive"]  # no extraction scraps
    content = savedmodels.tar_gz(model_dirs["multi_io"])
    monkeypatch.setattr(engine, "_copies_budget", lambda: 2 * len(content) + len(content) // 2)  # two copies
    for number in range(3):
        with engine.extracted(stored(content, f"v{number}")):
            pass
    kept = sorted(folder.name for folder in (tmp_path / "cache").iterdir() if list(folder.iterdir()))
    assert kept == [f"v1-{tmp_path.name}", f"v2-{tmp_path.name}"]


def test_a_call_takes_the_batch_size_but_never_more_than_its_input_budget():
    import numpy as np

    from chalicelib.scoring.formats import Batch

    small = Batch({"x": np.zeros((2, 4), np.float32)}, 2)
    images = Batch({"x": np.zeros((2, 1024, 1024), np.float32)}, 2)  # 4 MiB per record
    assert engine.DEVICE == "CPU"  # this machine: no device factor
    assert engine.records_per_call(256, small, explicit=False) == 256
    assert engine.records_per_call(256, images, explicit=True) == engine.MAX_CALL_INPUT_BYTES // (4 * 1024 * 1024)
