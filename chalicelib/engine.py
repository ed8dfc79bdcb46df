"""The TensorFlow side of scoring: load a model version once per process, run batches on it.

Models are cached by version id (a version's content never changes), so warm Lambda
invocations and the backlog job reuse the loaded graph. Inspection loads a new version through
the same cache, so a deployment created right after its upload finds the model loaded. Records from many files are joined
into model calls of up to `batch_size` rows, then split back per file.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from chalicelib import archives, aws, models, savedmodel
from chalicelib.formats import Batch
from chalicelib.settings import get_settings

_CACHE_DIR = Path(tempfile.gettempdir()) / "tfbatch-models"


class Model:
    """One signature of a loaded SavedModel, callable on NumPy columns."""

    def __init__(self, loaded, signature_name: str):
        self._loaded = loaded  # keeps the variables alive
        self._function = loaded.signatures[signature_name]
        self.compute_seconds = 0.0

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        outputs = self._function(**{name: tf.constant(array) for name, array in columns.items()})
        result = {name: tensor.numpy() for name, tensor in outputs.items()}
        self.compute_seconds += time.perf_counter() - started
        return result

    def predict_files(self, batches: Sequence[Batch], batch_size: int) -> list[dict[str, np.ndarray]]:
        """Each file's outputs, computed in joined model calls of at most `batch_size` records."""
        results: list[dict[str, np.ndarray]] = []
        group: list[Batch] = []
        rows = 0
        for batch in batches:
            if group and (rows + batch.count > batch_size or not _joinable(group[0], batch)):
                results += self._predict_group(group)
                group, rows = [], 0
            group.append(batch)
            rows += batch.count
        if group:
            results += self._predict_group(group)
        return results

    def _predict_group(self, group: list[Batch]) -> list[dict[str, np.ndarray]]:
        joined = {name: np.concatenate([b.columns[name] for b in group]) for name in group[0].columns}
        outputs = self.predict(joined)
        split, start = [], 0
        for batch in group:
            split.append({name: array[start:start + batch.count] for name, array in outputs.items()})
            start += batch.count
        return split


def _joinable(first: Batch, other: Batch) -> bool:
    return all(first.columns[name].shape[1:] == other.columns[name].shape[1:] for name in first.columns)


def load(version_id: str, archive_key: str, signature_name: str) -> Model:
    """One signature of a model version, ready to predict."""
    return Model(loaded(version_id, archive_key), signature_name)


@functools.lru_cache(maxsize=4)
def loaded(version_id: str, archive_key: str):
    """The model version, loaded once per process (from the local copy, made once), with each
    signature called once so its first real batch does not pay for building the call."""
    model = savedmodel.load(local_copy(version_id, archive_key))
    for function in model.signatures.values():
        _warm_up(function)
    return model


def _warm_up(function) -> None:
    """One call on a record of zeros (empty strings); a model that refuses it just stays cold."""
    inputs = {}
    for name, spec in function.structured_input_signature[1].items():
        shape = [1 if dim is None else dim for dim in (spec.shape.as_list() if spec.shape.rank is not None else [1])]
        inputs[name] = tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")
    try:
        function(**inputs)
    except Exception:  # noqa: BLE001 - a warm-up is only an optimisation
        pass


def local_copy(version_id: str, archive_key: str) -> Path:
    """The version's SavedModel directory, downloaded and safely extracted once per machine."""
    target = _CACHE_DIR / version_id
    ready = target / ".complete"
    if not ready.exists():
        scratch = Path(tempfile.mkdtemp(prefix=f"{version_id}-", dir=_mkdir(_CACHE_DIR)))
        archive = scratch / "model.archive"
        aws.client("s3").download_file(get_settings().models_bucket, archive_key, str(archive))
        with open(archive, "rb") as stream:
            root = archives.extract(stream, scratch / "model", models.archive_limits())
        archive.unlink()
        relative = root.relative_to(scratch)
        (scratch / ".root").write_text(str(relative))
        (scratch / ".complete").touch()
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: use its copy
            pass
    return target / (target / ".root").read_text()


def forget(version_id: str) -> None:
    """Drop every loaded model and this version's local copy (its stored archive changed)."""
    loaded.cache_clear()
    shutil.rmtree(_CACHE_DIR / version_id, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
