"""`tfbatch score` on local folders: the same formats, outputs and errors, no service at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.scoring import localscore

TFBATCH = str(Path(sys.executable).parent / "tfbatch")


def _folder(root: Path) -> Path:
    inputs = root / "in"
    (inputs / "nested").mkdir(parents=True)
    for number in range(12):
        (inputs / f"f{number:02d}.json").write_text(json.dumps({"a": [[number, 1, 1]], "b": [number]}))
    (inputs / "nested" / "rows.jsonl").write_text('{"a": [1, 2, 3], "b": 1}\n{"a": [0, 0, 0], "b": 2}\n')
    (inputs / "bad.json").write_text('{"a": [[1, 2]], "b": [1]}')
    return inputs


def _records(folder: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        for item in json.loads(path.read_text()):
            found.setdefault(item["filename"], []).append(item)
    return found


def test_scores_a_folder_into_grouped_outputs(tmp_path, model_dirs, settings_env):
    settings_env(TFBATCH_FILES_PER_OUTPUT=5, TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT="")
    inputs = _folder(tmp_path)
    output = inputs / "results"  # inside the input folder: never read back as input
    seen = []
    result = localscore.score(str(model_dirs["multi_io"]), str(inputs), str(output), on_progress=seen.append)
    assert (result.files, result.failed, result.records) == (14, 1, 14)
    records = _records(output)
    assert set(records) == {f"f{n:02d}.json" for n in range(12)} | {"nested/rows.jsonl", "bad.json"}
    assert records["f07.json"] == [{"filename": "f07.json", "shifted": 8, "sum": 9.0}]
    assert [r["index"] for r in records["nested/rows.jsonl"]] == [0, 1]
    assert records["bad.json"][0]["error"]["code"] == "wrong_shape"
    assert len(list(output.glob("predictions-*.json"))) == 3 and len(seen) == 3
    again = localscore.score(str(model_dirs["multi_io"]), str(inputs), str(output))  # within the same second
    assert again.files == 14 and len(list(output.glob("predictions-*.json"))) == 6


def test_a_folder_file_is_read_whole_and_refused_past_the_input_limit(tmp_path, model_dirs, settings_env):
    """A folder's files are not stat'ed: a file past the first 64 KiB read is read on to its end,
    and one past TFBATCH_MAX_INPUT_BYTES fails by itself, with the limit named."""
    settings_env(TFBATCH_MAX_INPUT_BYTES=200_000, TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT="")
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "long.json").write_text(json.dumps({"a": [[1, 2, 3]], "b": [4]}) + " " * 150_000)
    (inputs / "huge.json").write_text(json.dumps({"a": [[1, 2, 3]], "b": [4]}) + " " * 250_000)
    result = localscore.score(str(model_dirs["multi_io"]), str(inputs), str(tmp_path / "out"))
    assert (result.files, result.failed) == (2, 1)
    records = _records(tmp_path / "out")
    assert records["long.json"] == [{"filename": "long.json", "shifted": 5, "sum": 6.0}]
    assert records["huge.json"][0]["error"] == {
        "code": "file_too_large", "message": "the file is more than 200000 bytes; the limit is 200000 "
                                             "(TFBATCH_MAX_INPUT_BYTES). Split it, e.g. into .jsonl parts."}


def test_cli_prints_plain_progress_off_a_terminal(tmp_path, model_dirs):
    inputs = _folder(tmp_path)
    done = subprocess.run([TFBATCH, "score", "--model", str(model_dirs["strings"]), "--input", str(inputs),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "TFBATCH_STAGE": "test"})
    assert done.returncode == 0, done.stderr
    assert "files," in done.stdout and "records/s" in done.stdout
    # Every file fails against a model with other inputs, each with the reason.
    (errors,) = (tmp_path / "out").glob("errors-*.json")
    items = json.loads(errors.read_text())
    assert len(items) == 14
    assert {item["error"]["code"] for item in items} == {"unknown_tensor", "wrong_dtype"}  # .jsonl rows: not strings


def test_cli_refuses_an_ambiguous_signature_in_one_line(tmp_path, model_dirs):
    inputs = _folder(tmp_path)
    done = subprocess.run([TFBATCH, "score", "--model", str(model_dirs["two_signatures"]), "--input", str(inputs),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "TFBATCH_STAGE": "test"})
    assert done.returncode == 1 and "name one in 'signature_name'" in done.stdout


def test_scores_with_a_published_model_by_its_id(tmp_path, model_dirs, server_aws):
    from chalicelib.core.errors import NotFound
    from flows import tenant

    user = tenant(server_aws)
    model_id = user.publish(model_dirs["multi_io"])
    inputs = _folder(tmp_path)
    output = tmp_path / "out"
    result = localscore.score(model_id, str(inputs), str(output))
    assert (result.files, result.failed, result.records) == (14, 1, 14)
    assert _records(output)["f07.json"] == [{"filename": "f07.json", "sum": 9.0, "shifted": 8}]
    with pytest.raises(NotFound, match="no-such-model"):
        localscore.score("no-such-model", str(inputs), str(output))


@pytest.mark.parametrize("size", [0, 999, 1000, 1001, 5000, 65_535, 65_536, 65_537, 300_000])
@pytest.mark.parametrize("listed", [True, False])
def test_a_file_is_read_whole_up_to_the_limit_whatever_its_size(tmp_path, size, listed):
    from chalicelib.scoring import pipeline
    from chalicelib.scoring.formats import InputError

    path = tmp_path / "f"
    path.write_bytes(b"x" * size)
    for limit in (1000, 65_536, 200_000):
        read = pipeline._read_file(str(path), size if listed else pipeline.UNKNOWN_SIZE, limit)
        if size > limit:
            assert isinstance(read, InputError) and read.code == "file_too_large", (size, limit)
        else:
            assert read == b"x" * size, (size, limit)
