"""The prefetching hand-off between the fetch/parse stage and the model stage."""
from __future__ import annotations

import threading
import time

import pytest

from chalicelib.scoring.pipeline import prefetched


def test_items_arrive_in_order_and_the_producer_stays_at_most_depth_ahead():
    made = []

    def produce():
        for number in range(20):
            made.append(number)
            yield number

    seen = []
    for item in prefetched(produce(), depth=2):
        time.sleep(0.01)  # a slow consumer: the producer must wait for it
        seen.append(item)
        assert len(made) - len(seen) <= 2 + 1  # the queue, plus the one waiting to be put
    assert seen == list(range(20))


def test_a_producer_error_is_raised_in_the_consumer():
    def produce():
        yield 1
        raise OSError("listing failed")

    with pytest.raises(OSError, match="listing failed"):
        list(prefetched(produce(), depth=2))


def test_a_consumer_that_stops_early_stops_the_producer():
    stopped = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            stopped.set()

    for item in prefetched(produce(), depth=1):
        if item == 3:
            break
    assert stopped.is_set()
    assert not any(thread.name == "prefetch" and thread.is_alive() for thread in threading.enumerate())


def test_jobs_run_in_order_behind_the_caller():
    from chalicelib.scoring.pipeline import InOrder

    done = []
    with InOrder(depth=2) as later:
        for number in range(10):
            later.submit(lambda number=number: (time.sleep(0.005), done.append(number)))
    assert done == list(range(10))


def test_a_failing_job_stops_the_rest_and_is_raised_in_the_caller():
    from chalicelib.scoring.pipeline import InOrder

    done = []

    def fail():
        raise OSError("output bucket gone")

    with pytest.raises(OSError, match="output bucket gone"):
        with InOrder(depth=1) as later:
            later.submit(fail)
            for number in range(5):
                later.submit(lambda number=number: done.append(number))
    assert done == []


def test_a_file_that_breaks_the_reader_costs_only_itself(tmp_path, monkeypatch):
    from obstore.store import LocalStore

    from chalicelib.scoring import pipeline
    from chalicelib.scoring.formats import InputError, TensorSpec

    for name, body in (("good.json", b'{"inputs": [1.0]}'), ("bad.json", b'{"inputs": [2.0]}')):
        (tmp_path / name).write_bytes(body)
    real_parse = pipeline.parse

    def parse(data, *args, **kwargs):
        if b"2.0" in data:
            raise RecursionError("a bug in reading")  # injected: no real input is known to do this
        return real_parse(data, *args, **kwargs)

    monkeypatch.setattr(pipeline, "parse", parse)
    inputs = [pipeline.Input(name, "", 17, name) for name in ("good.json", "bad.json")]
    read = dict(pipeline.read(LocalStore(str(tmp_path)), inputs, [TensorSpec("inputs", "float32", (None,))],
                              "serving_default", max_bytes=1000, concurrency=2))
    good, bad = read[inputs[0]], read[inputs[1]]
    assert good.columns["inputs"].tolist() == [1.0]
    assert isinstance(bad, InputError) and bad.code == "unreadable" and "RecursionError" in str(bad)


def test_a_local_file_is_read_whole_whatever_its_size_since_the_listing(tmp_path):
    """Local folders are read in one call sized from the listing; a file that grew or shrank
    since is still read exactly, and one that vanished is no input."""
    from obstore.store import LocalStore

    from chalicelib.scoring.pipeline import Input, fetch

    (tmp_path / "same.json").write_bytes(b"x" * 10)
    (tmp_path / "grew.json").write_bytes(b"y" * (3 << 20))  # listed at 5 bytes, now 3 MiB
    (tmp_path / "shrank.json").write_bytes(b"z" * 3)  # listed at 100 bytes
    inputs = [Input("same.json", "", 10, "same.json"), Input("grew.json", "", 5, "grew.json"),
              Input("shrank.json", "", 100, "shrank.json"), Input("gone.json", "", 7, "gone.json")]
    assert fetch(LocalStore(prefix=tmp_path), inputs, max_bytes=1 << 30, concurrency=2) == list(zip(
        inputs, [b"x" * 10, b"y" * (3 << 20), b"z" * 3, None], strict=True))
