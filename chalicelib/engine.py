"""The TensorFlow side of scoring: load a model version once per process, run batches on it.

Models are cached by version id (a version's content never changes), so warm Lambda
invocations and the backlog job reuse the loaded graph. A run asks for its model first and
gets a future: the version downloads, loads and makes its first call in a loader thread while
the run takes its lease, lists and fetches its inputs, so the first scoring of a new version
costs about the load alone, not the load plus that I/O. Inspection loads a new version through
the same cache, so a deployment created right after its upload finds the model ready. Records
from many files are joined into model calls of up to `batch_size` rows, then split back per file.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from chalicelib import archives, aws, models, savedmodel
from chalicelib.formats import Batch
from chalicelib.settings import get_settings

_CACHE_DIR = Path(tempfile.gettempdir()) / "tfbatch-models"
MAX_LOADED = 4  # signatures kept ready per process; each keeps its version's variables in memory


class ModelCallTimeout(Exception):
    """A model call ran past settings.model_call_seconds; its files fail, the scorer goes on."""


class Model:
    """One signature of a loaded SavedModel, callable on NumPy columns.

    Every call is bounded in time: a graph is a stranger's program, and a While loop that never
    ends is pure compute that no op check can refuse. TensorFlow cannot interrupt a running
    call, so the call runs in a thread of its own that the caller stops waiting for; that thread
    spins on until the graph ends or the process does (a Lambda's ends with its invocation)."""

    def __init__(self, loaded, signature_name: str, call_seconds: float | None = None):
        self._loaded = loaded  # keeps the variables alive
        self._function = loaded.signatures[signature_name]
        self._call_seconds = get_settings().model_call_seconds if call_seconds is None else call_seconds

    def _call(self, inputs: dict) -> dict:
        finished = threading.Event()
        outcome: dict = {}

        def call() -> None:
            try:
                outcome["value"] = self._function(**inputs)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
                outcome["error"] = error
            finally:
                finished.set()

        threading.Thread(target=call, name="model-call", daemon=True).start()
        if not finished.wait(self._call_seconds):
            raise ModelCallTimeout(f"the model call ran longer than {self._call_seconds:g} s "
                                   "(TFBATCH_MODEL_CALL_SECONDS) and was abandoned")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def warm_up(self) -> Model:
        """One call on a record of zeros (empty strings), so the first real batch does not pay
        for building the call; a model that refuses such a record just stays cold."""
        inputs = {}
        for name, spec in self._function.structured_input_signature[1].items():
            dims = spec.shape.as_list() if spec.shape.rank is not None else [1]
            shape = [1 if dim is None else dim for dim in dims]
            inputs[name] = tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")
        try:
            self._call(inputs)
        except Exception:  # noqa: BLE001 - a warm-up is only an optimisation
            pass
        return self

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._call({name: tf.constant(array) for name, array in columns.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def predict_files(self, batches: Sequence[Batch], batch_size: int) -> list[dict[str, np.ndarray] | ModelCallTimeout]:
        """Each file's outputs, computed in joined model calls of at most `batch_size` records;
        the files of a call that ran out of time get its ModelCallTimeout instead, and the
        other calls still run."""
        results: list[dict[str, np.ndarray] | ModelCallTimeout] = []
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

    def _predict_group(self, group: list[Batch]) -> list[dict[str, np.ndarray] | ModelCallTimeout]:
        joined = {name: np.concatenate([b.columns[name] for b in group]) for name in group[0].columns}
        try:
            outputs = self.predict(joined)
        except ModelCallTimeout as timeout:
            return [timeout] * len(group)
        split, start = [], 0
        for batch in group:
            split.append({name: array[start:start + batch.count] for name, array in outputs.items()})
            start += batch.count
        return split


def _joinable(first: Batch, other: Batch) -> bool:
    return all(first.columns[name].shape[1:] == other.columns[name].shape[1:] for name in first.columns)


class _Loading:
    """Futures of models by (version, archive, signature): each loads once per process, in a
    loader thread; a failed load is forgotten, so the next run tries again."""

    def __init__(self):
        self._lock = threading.Lock()
        self._futures: OrderedDict[tuple[str, str, str], Future] = OrderedDict()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="model-loader")

    def get(self, version_id: str, archive_key: str, signature_name: str) -> Future:
        key = (version_id, archive_key, signature_name)
        with self._lock:
            future = self._futures.get(key)
            if future is None or (future.done() and future.exception() is not None):
                future = self._futures[key] = self._pool.submit(_ready, *key)
            self._futures.move_to_end(key)
            while len(self._futures) > MAX_LOADED:
                self._futures.popitem(last=False)
        return future

    def clear(self) -> None:
        with self._lock:
            self._futures.clear()


_loading = _Loading()
_version_lock = threading.Lock()  # one version loads at a time: no two threads load the same one


def model(version_id: str, archive_key: str, signature_name: str) -> Future:
    """A future of one signature of a model version, ready to predict: loaded already, or
    loading now in the background while the caller goes on."""
    return _loading.get(version_id, archive_key, signature_name)


def preload(version_id: str, archive_key: str, signature_names: Iterable[str]) -> None:
    """Load a version and warm each of its signatures now; raises what the load raised."""
    for name in signature_names:
        model(version_id, archive_key, name).result()


def _ready(version_id: str, archive_key: str, signature_name: str) -> Model:
    with _version_lock:
        loaded = _loaded(version_id, archive_key)
    return Model(loaded, signature_name).warm_up()


@functools.lru_cache(maxsize=MAX_LOADED)
def _loaded(version_id: str, archive_key: str):
    """The version's SavedModel, loaded once per process from its local copy (made once) and
    shared by its signatures."""
    return savedmodel.load(local_copy(version_id, archive_key))


def local_copy(version_id: str, archive_key: str) -> Path:
    """The version's SavedModel directory, downloaded and safely extracted once per machine.

    A download that fails, or loses the race to another process, leaves nothing behind, and
    only the newest copies that fit settings.model_cache_bytes are kept: a long-lived Lambda
    container's /tmp (its EphemeralStorage) must not fill up with versions it no longer serves."""
    target = _CACHE_DIR / version_id
    if not (target / ".complete").exists():
        scratch = Path(tempfile.mkdtemp(prefix=f".{version_id}-", dir=_mkdir(_CACHE_DIR)))
        try:
            archive = scratch / "model.archive"
            aws.client("s3").download_file(get_settings().models_bucket, archive_key, str(archive))
            with open(archive, "rb") as stream:
                root = archives.extract(stream, scratch / "model", models.archive_limits())
            archive.unlink()
            (scratch / ".root").write_text(str(root.relative_to(scratch)))
            (scratch / ".complete").touch()
            try:
                scratch.rename(target)
            except OSError:  # another process finished first: use its copy
                pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # gone already when it became the copy
        _prune(keep=target)
    return target / (target / ".root").read_text()


def _prune(keep: Path) -> None:
    """Delete the oldest copies until the rest, `keep` included, fit the budget by bytes: a
    count would let a few large versions fill /tmp, and leave the next download no room."""
    budget = _copies_budget() - _size(keep)
    copies = [path for path in _CACHE_DIR.iterdir() if path != keep and (path / ".complete").exists()]
    copies.sort(key=lambda path: ((path / ".complete").stat().st_mtime_ns, path.name), reverse=True)
    for old in copies:  # newest first; once one does not fit, neither does anything older
        budget -= _size(old)
        if budget < 0:
            shutil.rmtree(old, ignore_errors=True)


def _copies_budget() -> int:
    return get_settings().model_cache_bytes


def _size(path: Path) -> int:
    """Bytes of the files under `path`; a file another process deletes meanwhile counts 0."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def forget(version_id: str) -> None:
    """Drop every loaded model and this version's local copy (its stored archive changed)."""
    _loading.clear()
    with _version_lock:
        _loaded.cache_clear()
    shutil.rmtree(_CACHE_DIR / version_id, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
