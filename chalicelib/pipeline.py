"""The data path of scoring, shared by deployments (runner) and `tfbatch score` on folders:
fetch objects concurrently, parse them, run the model on joined batches, group the outputs.

Nothing here knows about deployments, the ledger or DynamoDB: it takes obstore stores (S3,
S3-compatible, or a local folder) and a loaded model.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import obstore

from chalicelib.engine import Model
from chalicelib.formats import Batch, InputError, TensorSpec, parse

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class Input:
    key: str
    etag: str
    size: int
    filename: str  # the key relative to the input prefix, as the seed's "filename"


def groups(items, size: int) -> Iterator[list]:
    """Consecutive groups of `size` items from a stream, the last one shorter."""
    group: list = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def prefetched(produce: Iterator[T], depth: int) -> Iterator[T]:
    """The producer's items, made in a thread up to `depth` ahead of the consumer.

    This is what overlaps I/O with the model: while the consumer scores one group, the next
    groups are listed, fetched and parsed. The bounded queue keeps memory flat (at most
    depth + 2 groups exist at once), an error in the producer is raised in the consumer, and a
    consumer that stops early (an error, a deleted deployment) stops the producer too.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in produce:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as error:  # handed to the consumer, raised there
            offer((_END, error))
        finally:
            if hasattr(produce, "close"):
                produce.close()  # a generator abandoned mid-way runs its cleanup now, in this thread

    worker = threading.Thread(target=work, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


@dataclass(frozen=True)
class Shard:
    """One of `count` disjoint shares of a key space (an AWS Batch array child, or a local process)."""

    index: int
    count: int

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} does not exist: there are {self.count} (0 to {self.count - 1})")

    def owns(self, key: str) -> bool:
        # crc32: stable across processes and machines (Python's hash() is salted per process)
        return zlib.crc32(key.encode()) % self.count == self.index


def fetch(store, inputs: list[Input], *, max_bytes: int, concurrency: int) -> list[bytes | InputError | None]:
    """Each input's bytes (None when it vanished since the listing; InputError when too large)."""

    async def one(item: Input, gate: asyncio.Semaphore):
        if item.size > max_bytes:
            return InputError(f"the file is {item.size} bytes; the limit is {max_bytes} "
                              "(TFBATCH_MAX_INPUT_BYTES). Split it, e.g. into .jsonl parts.", "file_too_large")
        async with gate:
            try:
                result = await obstore.get_async(store, item.key)
                return bytes(await result.bytes_async())
            except FileNotFoundError:
                return None

    async def every():
        gate = asyncio.Semaphore(concurrency)
        return await asyncio.gather(*(one(item, gate) for item in inputs))

    return asyncio.run(every())


def parse_input(item: Input, content: bytes | InputError, specs: list[TensorSpec], signature_name: str) -> Batch:
    """One fetched input as a Batch; InputError saying why not."""
    if isinstance(content, InputError):
        raise content
    return parse(content, specs, signature_name, jsonl=item.key.endswith(".jsonl"))


def predict(model: Model, batches: list[Batch], batch_size: int) -> tuple[list[dict], dict[int, str]]:
    """Outputs per file; a failing joined call is retried file by file to isolate the bad one."""
    if not batches:
        return [], {}
    try:
        return model.predict_files(batches, batch_size), {}
    except Exception:
        outputs: list[dict] = []
        errors: dict[int, str] = {}
        for index, batch in enumerate(batches):
            try:
                outputs += model.predict_files([batch], batch_size)
            except Exception as error:
                outputs.append({})
                errors[index] = f"the model refused this input: {type(error).__name__}: {str(error)[:500]}"
        return outputs, errors
