"""One deployment's run: its backlog (every input in its location that the ledger has no result
for), or the uploads that bucket notifications announced.

The run holds the deployment's lease (or its shard's), streams the listing and works in groups
of `files_per_output` files, so memory stays bounded however many files there are, in three
overlapping stages: fetch and parse a group (ahead, in a thread: `_fetch_and_parse`), score it
in joined model calls (`_score_group`), then write and commit it (behind, in another thread:
`_write_and_commit`, which follows chalicelib.scoring.exactly_once). A pass over the bucket ends
with `_succeed`; uploads that arrive meanwhile ask for another pass (`_sweep`). A
bad file only ever costs itself (an error element); the run ends FAILED (`_mark_failed`) only
when nothing can be scored: the model does not load, or the input cannot be listed, or the
output cannot be written.
"""
from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import obstore
from obstore.exceptions import BaseError as StoreError

from chalicelib.core import events
from chalicelib.core.errors import NotFound
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.scoring import engine, exactly_once, outputs, pipeline
from chalicelib.scoring.formats import TensorSpec
from chalicelib.scoring.pipeline import Input, Summary
from chalicelib.state import connections, deployments, leases
from chalicelib.state.ledger import FAILED, SCORED, DeploymentDeleted, Entry, Ledger

HANDED_OVER = "HANDED_OVER"  # the lease's holder took this run's work over
RESCAN_PAUSE = 2.0  # seconds between passes over the bucket while uploads keep arriving
PREFETCH_GROUPS = 2  # groups fetched and parsed ahead of the one being scored
FINISHING_GROUPS = 2  # scored groups waiting for their files to be written and committed


class Fatal(leases.RunStopped):
    """Nothing can be scored; the message is the deployment's failure reason."""


@dataclass
class Prepared:
    """A group of inputs that need work, fetched and parsed, waiting to be scored."""

    parsed: pipeline.ParsedGroup
    predictions_key: str
    errors_key: str
    previous: dict[str, str]  # key -> status of its earlier result, for keys scored before (Entry.previous)
    as_range: bool  # its results go in range records (Ledger.commit)


class DeploymentRun:
    def __init__(self, instance_id: str, deployment_id: str, shard: pipeline.Shard | None = None):
        self.settings = get_settings()
        self.shard = shard
        self.item = deployments.load(instance_id, deployment_id)
        self._fresh_item: dict | None = self.item  # spares the first lease its read
        self.instance_id, self.deployment_id = instance_id, deployment_id
        connections.serve_only(instance_id)
        keys = connections.load_keys(deployment_id)
        self.deployment = deployments.Deployment.from_item(self.item)
        self.source, self.target = self.deployment.input, self.deployment.output
        self.inputs_store = connections.object_store(self.source, keys["input"], side="input")
        self.outputs_store = connections.object_store(self.target, keys["output"], side="output")
        self.files = outputs.ResultFiles(self.outputs_store)
        self.signature_name = self.deployment.signature_name
        self.specs = [TensorSpec.from_signature(tensor) for tensor in self.deployment.signature["inputs"]]
        self.ledger = Ledger(instance_id, deployment_id, self.deployment.version_id)
        self.summary = Summary()
        self.model: Future | None = None  # of engine.Model: it loads while the run lists and fetches
        # (key, etag) known to be done, so later passes over the bucket skip them without asking
        # the ledger: a pass then costs a listing plus work on what is new.
        self.done: set[tuple[str, str]] = set()
        self.wait_seconds = 0.0  # how long to wait out another scorer's lease before handing over
        self.fresh = False  # the ledger had no result when the lease was taken (a first run)
        # Groups of a fresh, unsharded run's first pass are committed as range records while the
        # listing comes in order (Ledger.commit): the last key listed so far, or None when not.
        self.ranges_after: str | None = None

    # -- the run ---------------------------------------------------------------------------
    def run(self, wait: bool = False) -> Summary:
        """The whole backlog (or this shard's share of it): every input without a result. With
        `wait`, a dead scorer's lease is waited out instead of handing the work to it."""
        scope = leases.shard_scope(self.shard.index, self.shard.count) if self.shard else leases.ALL
        self.wait_seconds = self.settings.lease_seconds + 5 if wait else 0
        return self._under_lease(self._backlog, scope, deployments.BACKLOG)

    def score(self, uploads: list[Input]) -> Summary:
        """Just these uploads (from bucket notifications); the rest of the bucket is not listed."""
        return self._under_lease(lambda: self._uploads(uploads), leases.ALL, deployments.UPLOADS)

    def _under_lease(self, steps, scope: str, path: deployments.ScoringPath) -> Summary:
        self.model = engine.model(engine.StoredArchive.of(self.deployment), self.signature_name)
        if not self._take_lease(scope):
            return self.summary
        try:
            if not deployments.start_run(self.instance_id, self.deployment_id, path, self.lease.fence()):
                return self.summary
            steps()
            self._loaded_model()  # a model that cannot load fails the deployment, files or not
        except Fatal as error:
            self._mark_failed(str(error))
        except leases.RunStopped as error:  # the lease is lost or the deployment deleted: stop, write nothing more
            logger.info("run stopped", extra={"deployment_id": self.deployment_id, "reason": str(error)})
        finally:
            self.lease.abandon()  # nothing to do when it was released
        return self.summary

    def _take_lease(self, scope: str) -> bool:
        """Hold the scope's lease. False when its holder took the work over (it passes over the
        bucket once more), or the deployment is gone."""
        self.lease = leases.Lease(self.instance_id, self.deployment_id, scope)
        try:
            taken = self.lease.acquire(self.wait_seconds, read=self._fresh_item)
            self._fresh_item = None  # later leases (the sweep after shards) read the item again
        except leases.LeaseLost as error:
            logger.info("no lease", extra={"deployment_id": self.deployment_id, "reason": str(error)})
            return False
        if not taken:
            self.summary.status = HANDED_OVER
            return False
        try:
            with self._store_errors():
                exactly_once.recover(self.ledger, self.lease, self.files)
        except BaseException:
            self.lease.abandon()
            raise
        return True

    def _backlog(self) -> None:
        """A shard makes one pass over its share; the last shard to finish then sweeps the whole
        bucket like an unsharded run (cheap: the ledger answers for the files other shards did,
        a hundred per request) and settles the deployment."""
        # Nothing committed yet, and the lease keeps others off these keys: no lookups this run.
        self.fresh = self.ledger.empty()
        if self.shard is not None:
            self._pass()
            self.lease.release(unless_rescan=False)
            if not deployments.shard_done(self.instance_id, self.deployment_id, self.shard.index, self.shard.count):
                self.summary.status = deployments.IN_PROGRESS
                return
            self.shard, self.fresh = None, False  # the other shards' results are in the ledger now
            if not self._take_lease(leases.ALL):
                return
        elif self.fresh:
            self.ranges_after = ""  # every key sorts after it
        self._sweep()

    def _sweep(self) -> None:
        """Pass over the bucket until a pass ends with nobody having asked for another (uploads
        that found the lease taken). During a burst, passes are at least RESCAN_PAUSE apart, so
        each finds a batch of new files."""
        while True:
            self.lease.check()  # a success refused by the fence comes back here: stop once the lease is known lost
            started = time.monotonic()
            deployments.start_pass(self.instance_id, self.deployment_id, self.lease.fence())
            self._pass()
            # A later pass finds keys between those of earlier ranges, and keys scored in this
            # one that were overwritten since: it looks them up (Entry.previous keeps the counts).
            self.ranges_after, self.fresh = None, False
            if self._succeed() and self.lease.release(unless_rescan=True):
                return
            time.sleep(max(0.0, RESCAN_PAUSE - (time.monotonic() - started)))

    def _pass(self) -> None:
        """One pass over the listing, in three overlapping stages: groups are fetched and parsed
        ahead (prefetched), scored here, and written and committed behind (InOrder)."""
        groups = pipeline.groups(self._listing(), self.settings.files_per_output)
        with pipeline.InOrder(FINISHING_GROUPS) as finishing:
            waiting = time.perf_counter()
            for prepared in pipeline.prefetched(self._parsed_groups(groups), PREFETCH_GROUPS):
                self.summary.seconds["waiting_for_inputs"] += time.perf_counter() - waiting
                self._score_group(prepared, finishing.submit)
                waiting = time.perf_counter()

    def _uploads(self, uploads: list[Input]) -> None:
        with pipeline.InOrder(FINISHING_GROUPS) as finishing:
            for prepared in self._parsed_groups(pipeline.groups(uploads, self.settings.files_per_output)):
                self._score_group(prepared, finishing.submit)
        if not self.lease.release(unless_rescan=True):
            self._sweep()  # uploads were handed over to us meanwhile: find them by listing
            return
        if deployments.settle(self.instance_id, self.deployment_id):
            self.summary.status = deployments.SUCCESS
            events.publish(events.DEPLOYMENT_DONE, {**self._ids(), "status": deployments.SUCCESS,
                                                    "scored": self.summary.scored, "failed": self.summary.failed})

    def _succeed(self) -> bool:
        """SUCCESS (the ledger's commits keep the counters exact, crashed runs included); False
        when uploads asked for another pass meanwhile. A pass that ended under the lease leaves
        nothing pending."""
        recounted = None
        if not self.item.get(deployments.COUNTED_BY_COMMITS):  # created before commits kept the counts: once
            counts = self.ledger.recount()
            recounted = {"scored": counts[SCORED], "failed": counts[FAILED]}
        exact = deployments.succeed(self.instance_id, self.deployment_id, fence=self.lease.fence(),
                                    recounted=recounted)
        if exact is None:
            if not self._exists():
                raise DeploymentDeleted(self.deployment_id)
            return False
        self.summary.status = deployments.SUCCESS
        logger.info("deployment run finished", extra={**self._ids(), **exact, "this_run_scored": self.summary.scored,
                                                      "stage_seconds": self._stage_seconds()})
        events.publish(events.DEPLOYMENT_DONE, {**self._ids(), "status": deployments.SUCCESS, **exact})
        return True

    def has_more_inputs_than(self, count: int) -> bool:
        """Whether the input location holds more than `count` inputs (lists no further)."""
        return sum(1 for _ in itertools.islice(self._listing(), count + 1)) > count

    def _stage_seconds(self) -> dict[str, float]:
        return {stage: round(seconds, 3) for stage, seconds in self.summary.seconds.items()}

    def _exists(self) -> bool:
        try:
            deployments.load(self.instance_id, self.deployment_id)
            return True
        except NotFound:
            return False

    def _ids(self) -> dict[str, str]:
        return {"instance_id": self.instance_id, "deployment_id": self.deployment_id}

    def _mark_failed(self, reason: str) -> Summary:
        logger.warning("deployment failed", extra={"deployment_id": self.deployment_id, "reason": reason})
        # While the lease is held, only its holder may fail the deployment (a late scorer fails
        # nothing); a run that gave its lease back in order may still report a model that never loaded.
        deployments.fail(self.instance_id, self.deployment_id, reason,
                         fence=self.lease.fence() if self.lease.held else None)
        self.summary.status = deployments.FAILED
        return self.summary

    # -- listing ---------------------------------------------------------------------------
    def _listing(self) -> Iterator[Input]:
        prefix = self.source.prefix
        try:
            for chunk in obstore.list(self.inputs_store, prefix=prefix or None, chunk_size=1000):
                for meta in chunk:
                    if is_input(self.source, self.target, meta["path"]) and (
                            self.shard is None or self.shard.owns(meta["path"])):
                        yield Input(meta["path"], normal_etag(meta.get("e_tag")), meta["size"],
                                    meta["path"][len(prefix):])
        except (StoreError, OSError) as error:
            raise Fatal(f"The input bucket '{self.source.bucket}' could not be listed: {_reason(error)}") from None

    # -- one group: prepared (fetch, parse) ahead of being scored, then written and committed behind
    def _parsed_groups(self, groups) -> Iterator[Prepared]:
        for group in groups:
            with self.summary.timed("prepare"):
                prepared = self._fetch_and_parse(group)
            if prepared is not None:
                yield prepared

    def _fetch_and_parse(self, group: list[Input]) -> Prepared | None:
        """What needs work in a group, fetched and parsed; None when nothing does. Only reads, so
        it runs ahead of the model in its own thread."""
        self.lease.beat()  # listing and skipping what is done is progress too
        as_range = self._in_order(group)
        group = [item for item in group if (item.key, item.etag) not in self.done]
        known = {} if self.fresh else self.ledger.lookup(item.key for item in group)
        todo = []
        for item in group:
            if self.ledger.needs_work(known.get(item.key), item.etag):
                todo.append(item)
            else:
                self.done.add((item.key, item.etag))
        previous = {item.key: known[item.key]["status"] for item in todo if item.key in known}
        if not todo:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        batch_id = f"{stamp}-{uuid.uuid4().hex[:12]}"
        parsed = pipeline.parse_group(self.inputs_store, todo, self.specs, self.signature_name,
                                      max_bytes=self.settings.max_input_bytes,
                                      concurrency=self.settings.fetch_concurrency)
        # An input is read at the ETag its GET found (pipeline.fetch). Where that is newer than
        # the one listed or announced, that version may have its result already (a late event
        # for an older version): it is done, not scored once more.
        read_done = {item.key for item in parsed.inputs if not self.ledger.needs_work(known.get(item.key), item.etag)}
        if read_done:
            self.done.update((item.key, item.etag) for item in parsed.inputs if item.key in read_done)
            parsed = parsed.without(read_done)
        return Prepared(parsed, f"{self.target.prefix}predictions-{batch_id}.json",
                        f"{self.target.prefix}errors-{batch_id}.json", previous, as_range)

    def _in_order(self, group: list[Input]) -> bool:
        """Whether this group may be a range record: a fresh run's first pass, with every key of
        the listing so far in ascending order (S3 lists in UTF-8 order, which is str order). The
        first key out of order ends ranges for the run, so ranges never overlap."""
        if self.ranges_after is None:
            return False
        keys = [self.ranges_after, *(item.key for item in group)]
        if any(earlier >= later for earlier, later in itertools.pairwise(keys)):
            self.ranges_after = None
            return False
        self.ranges_after = keys[-1]
        return True

    def _score_group(self, prepared: Prepared, later) -> None:
        """Score the group; its intent, files, commit and counts are handed to `later` (the
        finishing thread), so the model goes on with the next group meanwhile."""
        self.lease.check()
        self.lease.beat()
        parsed = prepared.parsed
        if not parsed.inputs:
            return  # every file of the group vanished since the listing
        model = self._loaded_model() if parsed.batches else None
        with self.summary.timed("predict"):
            scored = pipeline.score_group(model, parsed, self.settings.batch_size,
                                          max_output_bytes=self.settings.max_output_bytes)
        self.lease.beat()
        planned = []
        for item in parsed.inputs:
            outcome, previous = scored.outcomes[item.key], prepared.previous.get(item.key, "")
            if outcome.error is None:
                planned.append(Entry(item.key, item.etag, prepared.predictions_key, SCORED, outcome.records,
                                     previous=previous))
            else:
                planned.append(Entry(item.key, item.etag, prepared.errors_key, FAILED, 0, outcome.error.code,
                                     str(outcome.error), previous))
        documents = {prepared.predictions_key: scored.predictions, prepared.errors_key: scored.errors}
        later(lambda: self._write_and_commit(planned, documents, scored.model_seconds, prepared.as_range))

    def _write_and_commit(self, held: list[Entry], documents: dict[str, list[dict]], model_seconds: float,
                          as_range: bool) -> None:
        """Intent, files, commit (exactly_once.finish); then this run's tally and the event."""
        with self._store_errors():
            exactly_once.finish(self.ledger, self.lease, self.files, held, documents, model_seconds=model_seconds,
                                as_range=as_range, timed=self.summary.timed)
        self.done.update((entry.key, entry.etag) for entry in held)
        self.lease.beat()
        scored = sum(1 for entry in held if entry.status == SCORED)
        self.summary.count(scored, len(held) - scored, sum(entry.records for entry in held if entry.status == SCORED))
        events.publish(events.RESULTS_WRITTEN, {
            **self._ids(), "bucket": self.target.bucket, "scored": scored, "failed": len(held) - scored,
            "output_keys": sorted({entry.output_key for entry in held}),
        })

    def _loaded_model(self) -> engine.Model:
        try:
            with self.summary.timed("waiting_for_model"):
                return self.model.result()
        except Exception as error:
            raise Fatal(f"The model could not be loaded: {type(error).__name__}: {error}") from None

    @contextmanager
    def _store_errors(self):
        """The output store refusing or failing (not a name taken: that is LeaseLost) is fatal."""
        try:
            yield
        except (StoreError, OSError) as error:
            raise Fatal(f"The output bucket '{self.target.bucket}' could not be written: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    """The first line of a store error (obstore appends a long debug dump after it)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first[:400]}"


def normal_etag(etag: str | None) -> str:
    """Listings quote ETags and S3 events do not: the ledger keeps them bare."""
    return (etag or "").strip('"')


def is_input(location: connections.Location, output: connections.Location, key: str) -> bool:
    """Whether a key in the input bucket is one of the deployment's inputs."""
    if not key.startswith(location.prefix) or key.endswith("/") or connections.WRITE_CHECK_MARK in key:
        return False
    return not (connections.same_bucket(location, output) and key.startswith(output.prefix))


def open_run(instance_id: str, deployment_id: str, shard: pipeline.Shard | None = None) -> DeploymentRun | Summary:
    """The deployment's run, ready to score; or, when there is nothing to run, the summary that
    says why: DELETED, or FAILED when a store's endpoint may no longer be called."""
    try:
        return DeploymentRun(instance_id, deployment_id, shard)
    except NotFound:
        logger.info("deployment no longer exists", extra={"deployment_id": deployment_id})
        return Summary(status="DELETED")
    except connections.EndpointRefused as refused:
        if not refused.lasting:
            raise  # a host that did not resolve: the message comes back and is tried again
        # The endpoint now resolves into a private network: no retry will make it callable.
        logger.warning("deployment failed", extra={"deployment_id": deployment_id, "reason": refused.message})
        deployments.fail(instance_id, deployment_id, refused.message)
        return Summary(status=deployments.FAILED)


def run_deployment(instance_id: str, deployment_id: str, shard: pipeline.Shard | None = None, *,
                   wait: bool = False) -> Summary:
    run = open_run(instance_id, deployment_id, shard)
    return run if isinstance(run, Summary) else run.run(wait)


def score_uploads(instance_id: str, deployment_id: str, uploads: list[tuple[str, str, int]]) -> Summary:
    """Score uploaded objects (key, ETag, size) of one deployment's input bucket. A key named
    twice (an event delivered twice, a file overwritten in quick succession) is scored once, at
    the ETag of its last event: a group holds each input once."""
    run = open_run(instance_id, deployment_id)
    if isinstance(run, Summary):
        return run
    prefix = run.source.prefix
    latest = {key: (etag, size) for key, etag, size in uploads}
    inputs = [Input(key, normal_etag(etag), size, key[len(prefix):]) for key, (etag, size) in latest.items()
              if is_input(run.source, run.target, key)]
    return run.score(inputs) if inputs else run.summary

