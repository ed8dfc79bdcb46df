"""The exactly-once protocol (chalicelib.scoring.exactly_once) step by step: a scorer stopped after each
of its effects, another holder recovering, a try retried after its answer was lost, a paused
scorer resuming late. The ledger and leases run on moto in-process; result files go to a real
obstore LocalStore, wrapped so that it fails at a chosen write."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
from obstore.store import LocalStore

from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from chalicelib.scoring import exactly_once, outputs
from chalicelib.state import leases
from chalicelib.state import ledger as ledger_module
from chalicelib.state.ledger import FAILED, SCORED, Entry, Ledger

PREDICTIONS, ERRORS = "out/predictions-1.json", "out/errors-1.json"


class Stopped(Exception):
    """The scorer died here (injected)."""


class FailingFiles(outputs.ResultFiles):
    """Result files that stop the scorer before its `fail_at`-th write lands (1 = the first)."""

    def __init__(self, store, fail_at: int | None = None):
        super().__init__(store)
        self.writes, self.fail_at = 0, fail_at

    def write(self, key: str, elements: list[dict]) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise Stopped(key)
        super().write(key, elements)


@pytest.fixture
def deployment(aws_mock, settings_env):
    settings_env(TFBATCH_LEASE_SECONDS=60)
    settings = get_settings()
    aws.table(settings.instances_table).put_item(Item={"instance_id": "i-1", "prediction_count": 0,
                                                       "computation_time": 0})
    aws.table(settings.deployments_table).put_item(Item={"instance_id": "i-1", "deployment_id": "d-1",
                                                         "scored": 0, "failed": 0, "pending": 0})


@pytest.fixture
def store(tmp_path):
    return LocalStore(prefix=tmp_path)


def _group() -> tuple[list[Entry], dict[str, list[dict]]]:
    entries = [Entry("in/a.json", "e-a", PREDICTIONS, SCORED, 2), Entry("in/b.json", "e-b", PREDICTIONS, SCORED, 1),
               Entry("in/c.json", "e-c", ERRORS, FAILED, 0, "bad_json", "not JSON")]
    documents = {PREDICTIONS: [{"file": "a.json", "i": 0}, {"file": "a.json", "i": 1}, {"file": "b.json", "i": 0}],
                 ERRORS: [{"file": "c.json", "error": "not JSON"}]}
    return entries, documents


def _counts() -> dict:
    item = aws.table(get_settings().deployments_table).get_item(
        Key={"instance_id": "i-1", "deployment_id": "d-1"}, ConsistentRead=True)["Item"]
    return {name: int(item[name]) for name in ("scored", "failed", "pending")}


def _usage() -> tuple[int, float]:
    item = aws.table(get_settings().instances_table).get_item(Key={"instance_id": "i-1"}, ConsistentRead=True)["Item"]
    return int(item["prediction_count"]), float(item["computation_time"])


def _holder() -> leases.Lease:
    lease = leases.Lease("i-1", "d-1", leases.ALL)
    assert lease.acquire()
    return lease


def _ledger() -> Ledger:
    return Ledger("i-1", "d-1", "v-1")


def test_a_group_finished_in_order_counts_once_and_leaves_no_intent(deployment, store):
    entries, documents = _group()
    lease = _holder()
    exactly_once.finish(_ledger(), lease, outputs.ResultFiles(store), entries, documents, model_seconds=1.5)
    assert _counts() == {"scored": 2, "failed": 1, "pending": 0}
    assert _usage() == (3, 1.5)
    assert set(_ledger().lookup(["in/a.json", "in/b.json", "in/c.json"])) == {"in/a.json", "in/b.json", "in/c.json"}
    assert _ledger().intents() == []
    [group], more = ledger_module.newest_files("d-1", 10, None)  # what the API lists for the group
    assert not more
    assert (sorted(group["files"]), group["scored"], group["failed"], group["records"]) == (
        sorted([PREDICTIONS, ERRORS]), 2, 1, 3)
    assert group["failures"] == [{"filename": "in/c.json", "code": "bad_json", "message": "not JSON"}]
    lease.release(unless_rescan=False)


@pytest.mark.parametrize("stopped_at", [1, 2, None])  # before the first file, before the second, before the commit
def test_a_scorer_stopped_at_any_step_is_finished_by_the_next_holder(deployment, store, stopped_at):
    entries, documents = _group()
    first = _holder()
    files = FailingFiles(store, stopped_at)
    if stopped_at is None:  # both files land, then the scorer dies before its commit
        ledger = _ledger()
        intent = ledger.intend(first.scope, "t-1", entries, first.fence(), model_seconds=2.0)
        for key, elements in documents.items():
            files.write(key, elements)
    else:
        with pytest.raises(Stopped):
            exactly_once.finish(_ledger(), first, files, entries, documents, model_seconds=2.0)
    assert _counts()["pending"] == 3  # counted with the intent
    first._stop_renewing()  # it died: nobody renews, and the next holder takes over
    aws.table(get_settings().deployments_table).update_item(
        Key={"instance_id": "i-1", "deployment_id": "d-1"}, UpdateExpression="SET lease_all.expires = :past",
        ExpressionAttributeValues={":past": 0})

    second = _holder()
    recovered = exactly_once.recover(_ledger(), second, outputs.ResultFiles(store))
    assert len(recovered) == 1
    written = {PREDICTIONS, ERRORS} if stopped_at is None else {PREDICTIONS} if stopped_at == 2 else set()
    adopted = [entry for entry in entries if entry.output_key in written]
    assert set(_ledger().lookup(entry.key for entry in entries)) == {entry.key for entry in adopted}
    assert _counts() == {"scored": sum(e.status == SCORED for e in adopted),
                         "failed": sum(e.status == FAILED for e in adopted), "pending": 0}
    assert _usage() == ((3, 2.0) if adopted and PREDICTIONS in written else (0, 0.0))
    assert _ledger().intents() == []
    listed, _ = ledger_module.newest_files("d-1", 10, None)  # one entry for the group, only if it wrote anything
    assert [sorted(group["files"]) for group in listed] == ([sorted(written)] if written else [])
    for key in {PREDICTIONS, ERRORS} - written:  # claimed: the stopped scorer can never write them
        assert outputs.holds_records(store, key) is False
        with pytest.raises(leases.LeaseLost):
            outputs.ResultFiles(store).write(key, documents[key])
    if stopped_at is None:
        with pytest.raises(leases.LeaseLost):  # and its late commit is fenced off
            ledger.commit(intent, first.fence())
    assert _counts()["scored"] == sum(e.status == SCORED for e in adopted)
    second.release(unless_rescan=False)


def test_tries_retried_after_their_answers_were_lost_count_once(deployment, store):
    entries, documents = _group()
    lease, ledger = _holder(), _ledger()
    intent = ledger.intend(lease.scope, "t-1", entries, lease.fence(), model_seconds=1.0)
    assert ledger.intend(lease.scope, "t-1", entries, lease.fence(), model_seconds=1.0) == intent
    assert _counts()["pending"] == 3
    files = outputs.ResultFiles(store)
    for key, elements in documents.items():
        files.write(key, elements)
        files.write(key, elements)  # the same bytes again: the earlier try landed
    ledger.commit(intent, lease.fence())
    ledger.commit(intent, lease.fence())
    assert _counts() == {"scored": 2, "failed": 1, "pending": 0}
    assert len(ledger_module.newest_files("d-1", 10, None)[0]) == 1  # and is listed once
    assert _usage() == (3, 1.0)
    lease.release(unless_rescan=False)


def test_a_scorer_that_lost_its_lease_cannot_record_an_intent(deployment, store):
    late = _holder()
    aws.table(get_settings().deployments_table).update_item(
        Key={"instance_id": "i-1", "deployment_id": "d-1"}, UpdateExpression="SET lease_all.holder = :other",
        ExpressionAttributeValues={":other": "someone-else"})
    entries, documents = _group()
    with pytest.raises(leases.LeaseLost):
        exactly_once.finish(_ledger(), late, outputs.ResultFiles(store), entries, documents)
    assert _counts() == {"scored": 0, "failed": 0, "pending": 0}
    assert not list(store.list().collect())
    late._stop_renewing()


def test_a_group_larger_than_one_transaction_is_refused_at_start(settings_env):
    with pytest.raises(ValueError, match="TFBATCH_FILES_PER_OUTPUT must be between 1 and 1000"):
        settings_env(TFBATCH_FILES_PER_OUTPUT=1001)
        get_settings()


def _expire(scope_attribute: str) -> None:
    aws.table(get_settings().deployments_table).update_item(
        Key={"instance_id": "i-1", "deployment_id": "d-1"}, UpdateExpression=f"SET {scope_attribute}.expires = :past",
        ExpressionAttributeValues={":past": 0})


@pytest.mark.parametrize("paused_scope, taker_scope", [
    (leases.shard_scope(0, 2), leases.ALL), (leases.ALL, leases.shard_scope(1, 2))])
def test_a_scorer_paused_past_its_lease_is_fenced_off_whichever_scope_takes_over(deployment, store,
                                                                                  paused_scope, taker_scope):
    paused = leases.Lease("i-1", "d-1", paused_scope)
    assert paused.acquire()
    paused._stop_renewing()  # frozen: it renews nothing while it is paused
    _expire(f"lease_{paused_scope.replace('-', '_')}")
    taker = leases.Lease("i-1", "d-1", taker_scope)
    assert taker.acquire()
    entries, documents = _group()
    with pytest.raises(leases.LeaseLost):  # it resumes: its next group is refused at the intent
        exactly_once.finish(_ledger(), paused, outputs.ResultFiles(store), entries, documents)
    assert _counts() == {"scored": 0, "failed": 0, "pending": 0}
    taker.release(unless_rescan=False)


def test_a_shard_finishes_intents_no_live_scorer_owns_and_never_a_live_siblings(deployment, store):
    ledger, entries = _ledger(), _group()[0]
    siblings = leases.Lease("i-1", "d-1", leases.shard_scope(1, 2))
    assert siblings.acquire()
    dead_whole = leases.Lease("i-1", "d-1", leases.ALL)
    dead_whole.held = True  # as if it had held the whole deployment before the shards started
    fence_of = {"ConditionExpression": "attribute_exists(deployment_id)", "ExpressionAttributeNames": {},
                "ExpressionAttributeValues": {}}  # written while their scorers held their leases
    for scope, token in ((leases.ALL, "t-all"), (leases.shard_scope(1, 2), "t-sibling"),
                         (leases.shard_scope(0, 3), "t-old-job")):
        ledger.intend(scope, token, [replace(entry, key=f"{token}/{entry.key}") for entry in entries],
                      {**fence_of, "ConditionExpression": "attribute_exists(deployment_id)"})
    shard = leases.Lease("i-1", "d-1", leases.shard_scope(0, 2))
    assert shard.acquire()
    finished = exactly_once.recover(ledger, shard, outputs.ResultFiles(store))
    assert sorted(intent.token for intent in finished) == ["t-all", "t-old-job"]
    assert [intent.token for intent in ledger.intents()] == ["t-sibling"]  # the live sibling's is left alone
    shard.release(unless_rescan=False)
    siblings.release(unless_rescan=False)


def test_a_group_never_names_an_input_twice(deployment):
    lease = _holder()
    entry = _group()[0][0]
    with pytest.raises(ValueError, match="names an input twice"):
        _ledger().intend(lease.scope, "t-1", [entry, entry], lease.fence())
    assert _counts()["pending"] == 0
    lease.release(unless_rescan=False)


def test_a_key_scored_again_counts_once_with_its_latest_outcome(deployment, store):
    """A file overwritten (a new ETag) is scored again: its commit takes the earlier result's
    count back (Entry.previous), so the counters equal the ledger's own count with no recount."""
    lease, ledger, files = _holder(), _ledger(), outputs.ResultFiles(store)
    entries, documents = _group()
    exactly_once.finish(ledger, lease, files, entries, documents)
    again = [Entry("in/a.json", "e-a2", "out/errors-2.json", FAILED, 0, "bad_json", "not JSON", previous=SCORED),
             Entry("in/c.json", "e-c2", "out/predictions-2.json", SCORED, 1, previous=FAILED),
             Entry("in/d.json", "e-d", "out/predictions-2.json", SCORED, 1)]
    documents = {"out/errors-2.json": [{"file": "a.json", "error": "x"}],
                 "out/predictions-2.json": [{"file": "c.json"}, {"file": "d.json"}]}
    exactly_once.finish(ledger, lease, files, again, documents)
    assert _counts() == {"scored": 3, "failed": 1, "pending": 0}  # b, c, d scored; a failed
    assert _ledger().recount() == {SCORED: 3, FAILED: 1}
    lease.release(unless_rescan=False)


def test_the_worst_group_packs_under_dynamodbs_item_and_transaction_limits():
    """Control characters in keys and messages: six bytes each as JSON, counted as such."""
    rng = random.Random(1)
    escaped = [chr(code) for code in range(0x20) if chr(code) not in "\b\f\n\r\t"]

    def text(length: int) -> str:
        return "".join(rng.choice(escaped) for _ in range(length))

    group = [Entry(f"in/{number:05d}/" + text(1014), "d41d8cd98f00b204e9800998ecf8427e", "out/errors-x.json",
                   FAILED, 0, "unknown_tensor", text(1000)) for number in range(1000)]
    parts = ledger_module._packed_parts(group)
    assert max(len(packed) for _, packed in parts) < 390_000
    assert sum(len(packed) for _, packed in parts) < 3_000_000 and len(parts) < 95
    assert [entry for part, _ in parts for entry in part] == group


def test_the_largest_group_round_trips_through_its_intent_items(deployment):
    """1,000 entries with 1 KB names and 1,000-byte messages (the worst case) span several
    intent items, each under DynamoDB's item limit, and come back exactly as planned."""
    lease, ledger = _holder(), _ledger()
    output = "out/" + "o" * 1000
    group = [Entry(f"in/{number:04d}-" + "k" * 1000, f"e-{number}", output, FAILED, 0, "bad_json",
                   f"{number}: " + "é" * 600, previous=SCORED if number % 2 else "") for number in range(1000)]
    intent = ledger.intend(lease.scope, "t-big", group, lease.fence())
    assert len(intent.names) > 1
    items = aws.table(get_settings().groups_table).query(
        KeyConditionExpression="deployment_id = :id", ExpressionAttributeValues={":id": "d-1#intents"},
        ConsistentRead=True)["Items"]
    assert all(len(item["entries"].value) < 390_000 for item in items)
    [recorded] = ledger.intents()
    clipped = [replace(entry, error=entry.error.encode()[:1000].decode(errors="ignore")) for entry in group]
    assert (recorded.names, recorded.entries) == (intent.names, clipped)
    lease.release(unless_rescan=False)


def _finished(ledger: Ledger, lease: leases.Lease, files, keys: list[str], *, as_range: bool, etag: str = "e",
              previous: dict | None = None) -> None:
    output = f"out/predictions-{keys[0][:8].replace('/', '-')}-{etag}.json"
    group = [Entry(key, etag, output, SCORED, 1, previous=(previous or {}).get(key, "")) for key in keys]
    exactly_once.finish(ledger, lease, files, group, {output: [{"file": key} for key in keys]}, as_range=as_range)


def test_range_records_answer_for_their_keys_and_key_items_come_first(deployment, store):
    """A fresh pass's groups go in range records (Ledger.commit): a lookup finds each key in the
    range that ends at or after it, no key between or past the ranges, and a key scored again
    later (a key item) over its range's entry."""
    lease, ledger, files = _holder(), _ledger(), outputs.ResultFiles(store)
    assert ledger.empty()
    _finished(ledger, lease, files, ["b/1", "b/3", "b/5"], as_range=True)
    assert not _ledger().empty()  # ranges alone make the ledger not empty
    _finished(ledger, lease, files, ["d/1", "d/2"], as_range=True)
    found = _ledger().lookup(["a", "b/1", "b/2", "b/5", "c", "d/1", "d/2", "d/3", "e"])
    assert sorted(found) == ["b/1", "b/5", "d/1", "d/2"]
    assert found["b/5"] == {"etag": "e", "model_version": "v-1", "status": SCORED,
                            "output_key": "out/predictions-b-1-e.json"}
    _finished(ledger, lease, files, ["b/3", "c"], as_range=False, etag="e2", previous={"b/3": SCORED})
    found = _ledger().lookup(["b/1", "b/3", "c"])
    assert (found["b/1"]["etag"], found["b/3"]["etag"], found["c"]["etag"]) == ("e", "e2", "e2")
    assert _counts() == {"scored": 6, "failed": 0, "pending": 0}
    assert _ledger().recount() == {SCORED: 6}
    items = aws.table(get_settings().ledger_table).scan()["Items"]
    assert sorted(item["input_key"] for item in items) == ["b/3", "b/5", "c", "d/2"]  # two ranges, two key items
    lease.release(unless_rescan=False)


def test_a_large_group_spans_range_records_that_each_answer(deployment, store):
    lease, ledger, files = _holder(), _ledger(), outputs.ResultFiles(store)
    keys = [f"k/{number:04d}-" + "x" * 1000 for number in range(1000)]
    _finished(ledger, lease, files, keys, as_range=True)
    records = aws.table(get_settings().ledger_table).query(
        KeyConditionExpression="deployment_id = :id", ExpressionAttributeValues={":id": "d-1#ranges"})["Items"]
    assert len(records) > 1 and all(len(record["entries"].value) < 390_000 for record in records)
    assert set(_ledger().lookup(keys + ["k/0500", "z"])) == set(keys)
    lease.release(unless_rescan=False)


def test_a_recovered_intent_is_committed_as_key_items(deployment, store):
    """Whatever its scorer meant, the next holder commits a stopped scorer's group as key items."""
    first = _holder()
    ledger, entries, documents = _ledger(), *_group()
    intent = ledger.intend(first.scope, "t-1", entries, first.fence())
    for key, elements in documents.items():
        outputs.ResultFiles(store).write(key, elements)
    first._stop_renewing()
    _expire("lease_all")
    second = _holder()
    assert [found.token for found in exactly_once.recover(_ledger(), second, outputs.ResultFiles(store))] == [
        intent.token]
    keys = {item["input_key"] for item in aws.table(get_settings().ledger_table).scan()["Items"]}
    assert keys == {entry.key for entry in entries}
    second.release(unless_rescan=False)


def test_an_intent_kept_before_intents_were_packed_is_still_recovered(deployment, store):
    """A scorer stopped across the upgrade left its entries as a list of maps."""
    entries, documents = _group()
    aws.table(get_settings().groups_table).put_item(Item={
        "deployment_id": "d-1#intents", "group_key": f"{leases.ALL}#t-old#0", "model_version": "v-1",
        "model_seconds": 0, "entries": [{"key": e.key, "etag": e.etag, "output_key": e.output_key, "status": e.status,
                                         "records": e.records, "error_code": e.error_code, "error": e.error}
                                        for e in entries]})
    aws.table(get_settings().deployments_table).update_item(
        Key={"instance_id": "i-1", "deployment_id": "d-1"}, UpdateExpression="SET pending = :three",
        ExpressionAttributeValues={":three": 3})
    for key, elements in documents.items():
        outputs.ResultFiles(store).write(key, elements)
    lease = _holder()
    [recovered] = exactly_once.recover(_ledger(), lease, outputs.ResultFiles(store))
    assert recovered.entries == entries
    assert _counts() == {"scored": 2, "failed": 1, "pending": 0}
    lease.release(unless_rescan=False)
