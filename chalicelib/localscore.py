"""`tfbatch score`: the scoring pipeline on local folders or buckets, without any service.

How a user scores a folder on a laptop, and how the engine's own speed is measured without the
local stack's I/O ceiling. The same fetch/parse/predict/write steps as a deployment run
(`pipeline`), minus what needs the service: there is no ledger, so a second run over the same
inputs writes a second set of output files.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import LocalStore, from_url

from chalicelib import deployments, engine, pipeline, savedmodel
from chalicelib.formats import InputError, TensorSpec
from chalicelib.results import dumps, elements, error_element
from chalicelib.settings import get_settings


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


def score(model_dir: str, input_: str, output: str, *, signature_name: str | None = None,
          on_progress: Callable[[Progress], None] | None = None) -> Progress:
    settings = get_settings()
    signature = deployments.choose_signature(savedmodel.read_signatures(Path(model_dir)), signature_name)
    model = engine.Model(savedmodel.load(Path(model_dir)), signature["name"])
    specs = [TensorSpec.from_signature(tensor) for tensor in signature["inputs"]]
    source, target = open_location(input_), open_location(output)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    progress = Progress(started=time.monotonic())
    listing = _listing(source, _inside(output, input_))
    for number, group in enumerate(pipeline.groups(listing, settings.files_per_output)):
        contents = pipeline.fetch(source, group, max_bytes=settings.max_input_bytes,
                                  concurrency=settings.fetch_concurrency)
        good, batches, errors = [], [], []
        for item, content in zip(group, contents):
            if content is None:
                continue
            try:
                batches.append(pipeline.parse_input(item, content, specs, signature["name"]))
                good.append(item)
            except InputError as error:
                errors.append(error_element(item.filename, error.code, str(error)))
        outputs, refused = pipeline.predict(model, batches, settings.batch_size)
        predictions = []
        for index, item in enumerate(good):
            if index in refused:
                errors.append(error_element(item.filename, "model_error", refused[index]))
            else:
                predictions += elements(item.filename, outputs[index])
                progress.records += batches[index].count
        if predictions:
            obstore.put(target, f"predictions-{stamp}-{number:06d}.json", dumps(predictions))
        if errors:
            obstore.put(target, f"errors-{stamp}-{number:06d}.json", dumps(errors))
        progress.files += len(good) - len(refused) + len(errors)
        progress.failed += len(errors)
        if on_progress:
            on_progress(progress)
    return progress
