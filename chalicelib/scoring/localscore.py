"""`tfbatch score`: the scoring pipeline on local folders or buckets, without any service.

How a user scores a folder on a laptop, and how the engine's own speed is measured without the
local stack's I/O ceiling. The same fetch/parse/predict/write steps as a deployment run
(`pipeline`), minus what needs the service: there is no ledger, so a second run over the same
inputs writes a second set of output files.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import LocalStore, from_url

from chalicelib.core.settings import get_settings
from chalicelib.scoring import engine, outputs, pipeline, savedmodel
from chalicelib.scoring.formats import InputError, TensorSpec
from chalicelib.scoring.results import elements, error_element
from chalicelib.state import deployments

PREFETCH_GROUPS = 2  # groups fetched and parsed ahead of the model


@dataclass
class Progress:
    files: int = 0
    failed: int = 0
    records: int = 0
    started: float = 0.0


def open_location(location: str):
    """An obstore store for `s3://bucket/prefix` (credentials from the usual AWS variables) or a folder."""
    if location.startswith("s3://"):
        return from_url(location)
    path = Path(location).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return LocalStore(prefix=path)


def _inside(output: str, input_: str) -> str | None:
    """The output folder's path relative to the input folder, when it lies inside it."""
    if output.startswith("s3://") or input_.startswith("s3://"):
        return None
    try:
        return str(Path(output).resolve().relative_to(Path(input_).resolve())) + "/"
    except ValueError:
        return None


def _listing(store, skip: str | None) -> Iterator[pipeline.Input]:
    for chunk in obstore.list(store, chunk_size=1000):
        for meta in chunk:
            key = meta["path"]
            if skip and key.startswith(skip):
                continue
            yield pipeline.Input(key, (meta.get("e_tag") or "").strip('"'), meta["size"], key)


def count_inputs(input_: str, output: str) -> int:
    return sum(1 for _ in _listing(open_location(input_), _inside(output, input_)))


def _load(model: str, signature_name: str | None) -> tuple[dict, engine.Model]:
    """The chosen signature and the model, loaded from a SavedModel directory as given, or from
    a published model's newest ready version, fetched from the service's model store (the local
    stack's by default), verified against its digest and extracted only while it loads."""
    path = Path(model).expanduser()
    if path.is_dir():
        directory = contextlib.nullcontext(path)
    else:
        from chalicelib.state import models

        directory = engine.extracted(engine.StoredArchive.of(models.latest_ready_version(model)))
    with directory as model_dir:
        signature = deployments.choose_signature(savedmodel.read_signatures(model_dir), signature_name)
        return signature, engine.Model(savedmodel.load(model_dir), signature["name"])


@dataclass
class _Group:
    number: int
    good: list[pipeline.Input]
    batches: list
    errors: list[dict]


def score(model: str, input_: str, output: str, *, signature_name: str | None = None,
          on_progress: Callable[[Progress], None] | None = None) -> Progress:
    """Score every input of a folder or bucket; groups are fetched and parsed ahead of the model."""
    settings = get_settings()
    signature, loaded = _load(model, signature_name)
    specs = [TensorSpec.from_signature(tensor) for tensor in signature["inputs"]]
    source, target = open_location(input_), open_location(output)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    progress = Progress(started=time.monotonic())

    def prepared() -> Iterator[_Group]:
        listing = _listing(source, _inside(output, input_))
        for number, group in enumerate(pipeline.groups(listing, settings.files_per_output)):
            ready = _Group(number, [], [], [])
            for item, batch in pipeline.read(source, group, specs, signature["name"],
                                             max_bytes=settings.max_input_bytes,
                                             concurrency=settings.fetch_concurrency):
                if isinstance(batch, InputError):
                    ready.errors.append(error_element(item.filename, batch.code, str(batch)))
                else:
                    ready.batches.append(batch)
                    ready.good.append(item)
            yield ready

    for group in pipeline.prefetched(prepared(), PREFETCH_GROUPS):
        predicted, refused = pipeline.predict(loaded, group.batches, settings.batch_size,
                                            max_output_bytes=settings.max_output_bytes)
        predictions = []
        for index, item in enumerate(group.good):
            if index in refused:
                group.errors.append(error_element(item.filename, refused[index].code, str(refused[index])))
            else:
                predictions += elements(item.filename, predicted[index])
                progress.records += group.batches[index].count
        if predictions:
            outputs.put(target, f"predictions-{stamp}-{group.number:06d}.json", predictions)
        if group.errors:
            outputs.put(target, f"errors-{stamp}-{group.number:06d}.json", group.errors)
        progress.files += len(group.good) - len(refused) + len(group.errors)
        progress.failed += len(group.errors)
        if on_progress:
            on_progress(progress)
    return progress
