"""The TensorFlow side of scoring: load a model version once per process, run batches on it.

Models are cached by version (a version's content never changes), so warm Lambda
invocations and the backlog job reuse the loaded graph. On disk the cache holds each
version's archive, content-addressed: the SHA-256 recorded at upload is checked before every
extraction, so a copy changed by anyone is discarded and fetched again, and a stored archive
that no longer matches is refused. A load extracts into a private folder that is deleted as
soon as the model is loaded (variables and asset tables live in memory then): no extracted
model waits on disk for another tenant's graph to read or rewrite it. A run asks for its model first and
gets a future: the version downloads, loads and makes its first call in a loader thread while
the run takes its lease, lists and fetches its inputs, so the first scoring of a new version
costs about the load alone, not the load plus that I/O. Inspection loads a new version through
the same cache, so a deployment created right after its upload finds the model ready. Records
from many files are joined into model calls, then split back per file.

How many records one call takes is a rule (`records_per_call`): TFBATCH_BATCH_SIZE (256); on a
GPU, unless that setting is given, GPU_BATCH_FACTOR times more, since a GPU is fed well only by
large calls; and never more than MAX_CALL_INPUT_BYTES of input tensors in one call, so a model
with large inputs (images) cannot make one call hold gigabytes. TensorFlow grows GPU memory as
calls need it instead of taking the whole GPU at start (several processes may share one), and
the device calls run on is logged with each model load.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import tensorflow as tf

from chalicelib.core import archives, aws
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.scoring import savedmodel
from chalicelib.scoring.formats import Batch
from chalicelib.state.deployments import Deployment

T = TypeVar("T")

_CACHE_DIR = Path(tempfile.gettempdir()) / "tfbatch-models"
Outputs = dict[str, np.ndarray]  # one file's rows of each output tensor
MAX_LOADED = 4  # signatures kept ready per process; each keeps its version's variables in memory
_ARCHIVE_SUFFIX = ".archive"
GPU_BATCH_FACTOR = 4
MAX_CALL_INPUT_BYTES = 64 * 1024 * 1024


def _configure_devices() -> str:
    """Let TensorFlow grow GPU memory instead of taking all of it at start; the device, named."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU was initialised already in this process: it keeps what it had
            pass
    return f"GPU ({', '.join(gpu.name for gpu in gpus)})" if gpus else "CPU"


DEVICE = _configure_devices()


def records_per_call(batch_size: int, batch: Batch, *, explicit: bool) -> int:
    """The records one model call takes, for inputs shaped like `batch` (the rule above)."""
    wanted = batch_size if explicit or DEVICE == "CPU" else batch_size * GPU_BATCH_FACTOR
    per_record = sum(column.nbytes for column in batch.columns.values()) / max(batch.count, 1)
    return max(1, min(wanted, int(MAX_CALL_INPUT_BYTES // max(per_record, 1))))


class TamperedArchive(Exception):
    """The stored archive no longer hashes to the digest recorded at upload; it is never used."""


@dataclass(frozen=True)
class StoredArchive:
    """A model version's archive: where it is stored, and the SHA-256 it had at upload."""

    version_id: str
    key: str
    sha256: str

    @classmethod
    def of(cls, version: dict | Deployment) -> StoredArchive:
        """From a version item, or a deployment (which copies its version's fields). An item
        from before digests were recorded gets none, and its archive is refused at load."""
        if isinstance(version, Deployment):
            return cls(version.version_id, version.archive_key, version.archive_sha256)
        return cls(version["version_id"], version["archive_key"], version.get("archive_sha256", ""))


class ModelCallTimeout(Exception):
    """A model call ran past settings.model_call_seconds; its files fail, the scorer goes on."""


class ModelLoadTimeout(Exception):
    """Loading a version ran past settings.model_load_seconds (a resource initializer that never
    ends is pure compute too): the version is invalid, and other versions go on loading."""


class _Abandoned:
    """How many model calls and loads were given up at their time limit and still run: the
    process that holds one is replaced as soon as it can be (worktasks.replace_if_stuck)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    def change(self, by: int) -> None:
        with self._lock:
            self.count += by


_abandoned = _Abandoned()


def calls_still_running() -> int:
    return _abandoned.count


def _within(seconds: float, work: Callable[[], T], too_long: Callable[[], Exception], *, name: str) -> T:
    """`work()`'s result, or `too_long()` raised once it has run `seconds`. TensorFlow cannot
    interrupt a running graph, so the work runs in a thread of its own that the caller stops
    waiting for; that thread spins on until the graph ends or the process does, counted as
    abandoned meanwhile."""
    finished = threading.Event()
    outcome: dict = {}
    lock = threading.Lock()  # the work ends and the caller gives up in one order or the other

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
            outcome["error"] = error
        finally:
            with lock:
                finished.set()
                if outcome.get("abandoned"):
                    _abandoned.change(-1)

    threading.Thread(target=run, name=name, daemon=True).start()
    finished.wait(seconds)
    with lock:
        if not finished.is_set():
            outcome["abandoned"] = True
            _abandoned.change(+1)
    if outcome.get("abandoned"):
        raise too_long()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Model:
    """One signature of a loaded SavedModel, callable on NumPy columns.

    Every call is bounded in time (`_within`): a graph is a stranger's program, and a While loop
    that never ends is pure compute that no op check can refuse. The process is replaced once
    the work in hand is done (calls_still_running; worktasks.replace_if_stuck)."""

    def __init__(self, loaded, signature_name: str, call_seconds: float | None = None):
        self._loaded = loaded  # keeps the variables alive
        self._function = loaded.signatures[signature_name]
        self._call_seconds = get_settings().model_call_seconds if call_seconds is None else call_seconds

    def bounded(self, call_seconds: float) -> Model:
        """The same signature, its calls bounded to `call_seconds` (online answers must be quick)."""
        if call_seconds == self._call_seconds:
            return self
        bounded = copy.copy(self)
        bounded._call_seconds = call_seconds
        return bounded

    def _call(self, inputs: dict) -> dict:
        return _within(self._call_seconds, lambda: self._function(**inputs), lambda: ModelCallTimeout(
            f"the model call ran longer than {self._call_seconds:g} s (TFBATCH_MODEL_CALL_SECONDS) and was abandoned"),
            name="model-call")

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

    def predict_files(self, batches: Sequence[Batch], batch_size: int) -> list[Outputs | ModelCallTimeout]:
        """Each file's outputs, computed in joined model calls of at most `batch_size` records;
        the files of a call that ran out of time get its ModelCallTimeout instead, and the
        other calls still run."""
        results: list[Outputs | ModelCallTimeout] = []
        group: list[Batch] = []
        rows = 0
        explicit = get_settings().batch_size_explicit
        limit = records_per_call(batch_size, batches[0], explicit=explicit) if batches else batch_size
        for batch in batches:
            if group and (rows + batch.count > limit or not _joinable(group[0], batch)):
                results += self._predict_group(group)
                group, rows = [], 0
            group.append(batch)
            rows += batch.count
        if group:
            results += self._predict_group(group)
        return results

    def _predict_group(self, group: list[Batch]) -> list[Outputs | ModelCallTimeout]:
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
    """Futures of models by (archive, signature): each loads once per process, in a loader
    thread; a failed load is forgotten, so the next run tries again."""

    def __init__(self):
        self._lock = threading.Lock()
        self._futures: OrderedDict[tuple[StoredArchive, str], Future] = OrderedDict()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="model-loader")

    def get(self, archive: StoredArchive, signature_name: str) -> Future:
        key = (archive, signature_name)
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


def model(archive: StoredArchive, signature_name: str) -> Future:
    """A future of one signature of a model version, ready to predict: loaded already, or
    loading now in the background while the caller goes on."""
    return _loading.get(archive, signature_name)


def preload(archive: StoredArchive, signature_names: Iterable[str]) -> None:
    """Load a version and warm each of its signatures now; raises what the load raised."""
    for name in signature_names:
        model(archive, name).result()


def _ready(archive: StoredArchive, signature_name: str) -> Model:
    """Load (bounded in time, like a call: loading runs the model's resource initializers) and
    warm up. The lock is the waiter's, so a load given up at its limit no longer holds it."""
    seconds = get_settings().model_load_seconds
    with _version_lock:
        loaded = _within(seconds, lambda: _loaded(archive), lambda: ModelLoadTimeout(
            f"loading model version {archive.version_id} ran longer than {seconds:g} s "
            "(TFBATCH_MODEL_LOAD_SECONDS) and was abandoned"), name="model-load")
    return Model(loaded, signature_name).warm_up()


@functools.lru_cache(maxsize=MAX_LOADED)
def _loaded(archive: StoredArchive):
    """The version's SavedModel, loaded once per process (checked against the op allow-list
    first, by savedmodel.load) and shared by its signatures."""
    with extracted(archive) as model_dir:
        loaded = savedmodel.load(model_dir)
    logger.info("model loaded", extra={"version_id": archive.version_id, "device": DEVICE})
    return loaded


@contextlib.contextmanager
def extracted(archive: StoredArchive) -> Iterator[Path]:
    """The version's SavedModel directory, safely extracted from its verified archive into a
    private folder (mode 700) that is deleted when the block ends."""
    with _verified(archive) as stream:
        scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=_mkdir(_CACHE_DIR / archive.version_id)))
        try:
            yield archives.extract(stream, scratch / "model", archives.configured_limits())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _verified(archive: StoredArchive) -> Iterator[BinaryIO]:
    """The local copy of the archive, open, hashed through that very handle and found equal to
    the digest recorded at upload. A copy that differs (changed on disk, or half written) is
    discarded and downloaded again; a download that differs too is refused."""
    if not archive.sha256:
        raise TamperedArchive(f"Model version {archive.version_id} was uploaded before archives were recorded by "
                              "their SHA-256, so its content cannot be verified; upload the model again.")
    path = _CACHE_DIR / archive.version_id / f"{archive.sha256}{_ARCHIVE_SUFFIX}"
    stream = _open_if_intact(path, archive.sha256)
    if stream is None:
        _download(archive, path)
        stream = _open_if_intact(path, archive.sha256)
    if stream is None:
        raise TamperedArchive(f"The stored archive of model version {archive.version_id} does not match the "
                              "SHA-256 recorded when it was uploaded; it was not used. Upload the model again.")
    os.utime(path)  # the most recently used copy is the last one pruned
    with stream:
        yield stream


def fetch_digest(version_id: str, key: str) -> str:
    """Download an archive whose digest is not recorded yet (uploaded straight to the bucket)
    into the cache, and return its SHA-256: the digest of these very bytes, which the caller
    records, and which every later load verifies (a copy replaced since is refused)."""
    scratch = _CACHE_DIR / version_id / f".unverified{_ARCHIVE_SUFFIX}"
    _download(StoredArchive(version_id, key, ""), scratch)
    with open(scratch, "rb") as stream:
        digest = _sha256(stream)
    os.replace(scratch, scratch.with_name(f"{digest}{_ARCHIVE_SUFFIX}"))
    return digest


def _open_if_intact(path: Path, sha256: str) -> BinaryIO | None:
    try:
        stream = open(path, "rb")
    except FileNotFoundError:
        return None
    if _sha256(stream) == sha256:
        stream.seek(0)
        return stream
    stream.close()
    path.unlink(missing_ok=True)
    return None


def _download(archive: StoredArchive, path: Path) -> None:
    """Fetch the archive to `path`: into a scratch file first, so a failed or concurrent download
    never leaves a partial copy under the archive's name."""
    folder = _mkdir(path.parent)
    handle, scratch = tempfile.mkstemp(prefix=".download-", dir=folder)
    os.close(handle)
    try:
        aws.client("s3").download_file(get_settings().models_bucket, archive.key, scratch)
        os.replace(scratch, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
    _prune(keep=folder)


def _sha256(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def _prune(keep: Path) -> None:
    """Delete the least recently used versions' archives until the rest, `keep` included, fit
    the budget by bytes: a count would let a few large versions fill /tmp, and leave the next
    download no room."""
    budget = _copies_budget() - _size(keep)
    copies = [(folder, max(archive.stat().st_mtime_ns for archive in found))
              for folder in _CACHE_DIR.iterdir() if folder != keep
              if (found := list(folder.glob(f"*{_ARCHIVE_SUFFIX}")))]
    copies.sort(key=lambda copy: (copy[1], copy[0].name), reverse=True)
    for folder, _ in copies:  # newest first; once one does not fit, neither does anything older
        budget -= _size(folder)
        if budget < 0:
            shutil.rmtree(folder, ignore_errors=True)


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
