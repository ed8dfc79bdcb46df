"""The exactly-once ledger: the store behind chalicelib.scoring.exactly_once.

Two tables:
- the ledger table: each input's result, with the ETag and model version it was scored at, its
  status and the output file holding its one result record (a failure's code and message too).
  A key's result is kept in one of two ways:
  * a range record (`<deployment>#ranges` partition, sorted by the last key it holds): up to
    350 KB of a group's results, compressed, for a run's first pass over a bucket whose ledger
    was empty. That pass lists keys in order and nobody else scores meanwhile, so its groups
    cover disjoint key ranges, and one range record replaces a few hundred items: a group of
    250 files costs one request instead of ten batches of 25, which was most of the bookkeeping a
    backlog makes (and, on the local stack, moto's time that the GETs were waiting for);
  * a key item (the deployment's partition, one per input key) everywhere else: later passes,
    uploads, shards, recovery, any listing out of order. A key item is always newer than a
    range holding the same key, so a lookup reads key items first, then the ranges the
    keys still unknown fall in (`lookup`: one query per range, so a pass in listing order reads
    a range or two per group).
  It only grows, and no transaction ever touches it (BatchGetItem, BatchWriteItem and Query), so
  a transaction's cost never depends on how many files were scored (the local stack's moto
  copies every table a transaction touches);
- the groups table (`group_key` within a partition): the intents of groups being written, in
  the deployment's intents partition (`<deployment>#intents`), and one entry per committed group
  in its files partition (`<deployment>#files`): the output files it wrote, its counts and first
  failures, which the API lists newest first (`newest_files`), so a user sees results and
  failures without the store's keys. The API may only read that table.

An intent's entries are one compressed JSON document (split over items only past 350 KB), not
a DynamoDB list of maps: a group of 250 files is one small item, which on AWS costs a tenth of
the write units and on the local stack keeps moto's copy of each transaction's tables cheap.

Each write here is one DynamoDB transaction whose conditions make it count once:
- `intend` puts a group's intent items, each only if absent, and adds the group's files to the
  deployment's `pending`, on condition that the scorer still holds its lease (the fence);
- `commit` puts the group's results (range records or key items), then, in one transaction,
  moves scored/failed by what the group changed and takes the intent's files off `pending`
  (fenced), adds the records and model seconds to the instance's usage, deletes the intent
  items, each only if present, and lists the group.
The counters are exact by construction, so no pass reads the ledger back to count: an entry
carries the status of the key's earlier result (`Entry.previous`, from the lookup that found it
needing work), and its commit takes that back while it adds the new one, so each key counts once
with its latest outcome.
A try retried after its answer was lost (a dropped connection, retried by botocore or by us) is
refused on an intent item alone, which means it landed: counters are never added twice. A
refusal on the fence means the lease is gone (LeaseLost) or the deployment is (DeploymentDeleted).
"""
from __future__ import annotations

import math
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import orjson
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from chalicelib.core import aws
from chalicelib.core.log import logger
from chalicelib.core.settings import MAX_FILES_PER_OUTPUT, get_settings
from chalicelib.state import pages
from chalicelib.state.leases import LeaseLost, RunStopped

SCORED, FAILED = "scored", "failed"
# Sizes. The worst entry is about 3.3 KB (a 1 KB key, a 1 KB output name, a 1,000-byte message),
# and up to six times that as JSON, which writes a control character as six bytes. An intent item
# (or a range record) holds at most 350 KB of rows before compression, and compressed they are at
# most a few bytes more: under DynamoDB's 400 KB. The most a group holds (1,000 files:
# settings.MAX_FILES_PER_OUTPUT) packs into at most 2.7 MB in 40 items at the very worst (measured:
# keys and messages of control characters; tests/test_exactly_once.py), under a transaction's
# 4 MB and 100 items, beside the commit's two updates and the group's entry.
_ITEM_BYTES = 350_000
_MESSAGE_BYTES = 1000
# A group's entry in the files partition shows its first failures, clipped: 25 of 1,000 bytes
# each keep the entry near 30 KB and the commit's transaction far from its 4 MB.
_FAILURES_SHOWN = 25
_SHOWN_MESSAGE_BYTES = 500
assert math.ceil(MAX_FILES_PER_OUTPUT * 6 * 3_300 / _ITEM_BYTES) + 3 <= 100  # a transaction's items
_RETRIED_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_TRANSACTION_ATTEMPTS = 8
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


class DeploymentDeleted(RunStopped):
    """The deployment was deleted while it was being scored: stop, keep what was written."""


@dataclass(frozen=True)
class Entry:
    key: str
    etag: str
    output_key: str
    status: str = SCORED  # the status it will be committed with
    records: int = 0
    error_code: str = ""
    error: str = ""
    previous: str = ""  # the status of the key's earlier result (another ETag or model version), if any

    def row(self) -> bytes:
        """The entry as it is kept in an intent (a JSON array; `entries` reads it back)."""
        return orjson.dumps([self.key, self.etag, self.output_key, self.status, self.records, self.error_code,
                             _clip(self.error), self.previous])


def _packed(rows: list[bytes]) -> bytes:
    return zlib.compress(b"[" + b",".join(rows) + b"]", 1)


def entries(packed: bytes) -> list[Entry]:
    """An intent item's entries, from what `Entry.row` and `_packed` kept."""
    return [Entry(*row) for row in orjson.loads(zlib.decompress(packed))]


def _intended(stored) -> list[Entry]:
    """An intent item's entries: packed, or a list of maps as intents were kept before they were
    packed (a scorer stopped across the upgrade; its entries carry no `previous`, which the
    deployment's one recount after the upgrade mends: runner._succeed). Only the reading is
    kept; it can go once no deployment holds an intent from before."""
    if isinstance(stored, Binary):
        return entries(stored.value)
    return [Entry(e["key"], e["etag"], e["output_key"], e["status"], int(e["records"]), e["error_code"], e["error"])
            for e in stored]


def _packed_parts(group: list[Entry]) -> list[tuple[list[Entry], bytes]]:
    """The group's entries in as few items as their size allows (one, but for long names), each
    part with its packed form; split on the rows' own JSON, in which a control character takes
    six bytes."""
    parts: list[tuple[list[Entry], list[bytes]]] = [([], [])]
    size = 0
    for entry in group:
        row = entry.row()
        if parts[-1][1] and size + len(row) + 1 > _ITEM_BYTES:
            parts.append(([], []))
            size = 0
        parts[-1][0].append(entry)
        parts[-1][1].append(row)
        size += len(row) + 1
    return [(part, _packed(rows)) for part, rows in parts if part]


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _item(values: dict) -> dict:
    return {name: _serialize(value) for name, value in values.items()}


def _plain(raw: dict) -> dict:
    return {name: next(iter(value.values())) for name, value in raw.items()}


def _now() -> Decimal:
    return Decimal(str(round(time.time(), 3)))


def _clip(message: str, limit: int = _MESSAGE_BYTES) -> str:
    """At most `limit` bytes of UTF-8 (not characters: the item limits count bytes)."""
    return message.encode()[:limit].decode(errors="ignore")


def _decimal(seconds: float) -> Decimal:
    return Decimal(str(round(seconds, 3)))


@dataclass(frozen=True)
class Intent:
    """What a group planned to write, as recorded before writing it (one or more items)."""

    names: list[str]  # its items in the intents partition
    entries: list[Entry]
    model_seconds: float = 0.0

    @property
    def token(self) -> str:
        return self.names[0].split("#")[-2]

    @property
    def scope(self) -> str:
        """The lease scope of the scorer that recorded it (leases.may_recover)."""
        return self.names[0].split("#")[0]


GROUP_KEY = "group_key"  # the groups table's sort key: an intent item's name, or a files entry's time and token


def files_partition(deployment_id: str) -> str:
    return f"{deployment_id}#files"


FILES_SORT_KEY = re.compile(r"\d{10}\.\d{3}#[0-9a-f]{32}")  # "<commit time>#<intent token>"


def newest_files(deployment_id: str, limit: int, start: str | None) -> tuple[list[dict], bool]:
    """The deployment's committed groups, newest first, after the sort key `start` (a page)."""
    return pages.query(aws.table(get_settings().groups_table), ("deployment_id", files_partition(deployment_id)),
                       GROUP_KEY, limit, start, newest_first=True)


class Ledger:
    def __init__(self, instance_id: str, deployment_id: str, model_version: str):
        settings = get_settings()
        self.instance_id = instance_id
        self.deployment_id = deployment_id
        self.model_version = model_version
        self._table = settings.ledger_table
        self._groups = settings.groups_table
        self._deployments = settings.deployments_table
        self._instances = settings.instances_table
        self._client = aws.client("dynamodb")
        self._has_ranges: bool | None = None

    def _key(self, input_key: str) -> dict:
        return _item({"deployment_id": self.deployment_id, "input_key": input_key})

    def lookup(self, keys: Iterable[str]) -> dict[str, dict]:
        """The results of these keys, each as {"etag", "model_version", "status", ...} (keys
        without one are missing): key items first, then the range records of the others."""
        wanted = sorted(set(keys))
        found = self._key_items(wanted)
        unknown = [key for key in wanted if key not in found]
        if unknown and self._ranges_exist():
            found.update(self._in_ranges(unknown))
        return found

    def _key_items(self, keys: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for chunk in _chunks(keys, 100):
            request = {self._table: {"Keys": [self._key(key) for key in chunk], "ConsistentRead": True}}
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for raw in response["Responses"].get(self._table, []):
                    found[raw["input_key"]["S"]] = _plain(raw)
                request = response.get("UnprocessedKeys") or None
                if request:
                    time.sleep(0.05)
        return found

    @property
    def _ranges(self) -> str:
        return f"{self.deployment_id}#ranges"

    def _ranges_exist(self) -> bool:
        """Whether the deployment has range records: asked once, since ranges are only written
        into a ledger that was empty, by the run that found it so (it knows: `commit`)."""
        if self._has_ranges is None:
            self._has_ranges = bool(self._first(self._ranges))
        return self._has_ranges

    def _first(self, partition: str) -> list[dict]:
        return self._client.query(TableName=self._table, KeyConditionExpression="deployment_id = :id",
                                  ExpressionAttributeValues=_item({":id": partition}), Limit=1,
                                  ConsistentRead=True, ProjectionExpression="input_key")["Items"]

    def _in_ranges(self, keys: list[str]) -> dict[str, dict]:
        """The results of these keys (sorted) held in range records. The range that ends at or
        after a key is the only one that may hold it (ranges are disjoint), and it answers for
        every later key up to its end too."""
        found: dict[str, dict] = {}
        held: dict[str, dict] = {}
        end: str | None = None
        for key in keys:
            if end is None or key > end:
                response = self._client.query(
                    TableName=self._table, KeyConditionExpression="deployment_id = :id AND input_key >= :key",
                    ExpressionAttributeValues=_item({":id": self._ranges, ":key": key}), Limit=1,
                    ConsistentRead=True)
                if not response["Items"]:
                    break  # no range ends at or after this key: none holds it or any key after it
                record = _deserialize({"M": response["Items"][0]})
                end = record["input_key"]
                held = {entry.key: {"etag": entry.etag, "model_version": record["model_version"],
                                    "status": entry.status, "output_key": entry.output_key}
                        for entry in entries(record["entries"].value)}
            if key in held:
                found[key] = held[key]
        return found

    def needs_work(self, item: dict | None, etag: str) -> bool:
        """True when this key has no result at this ETag and model version."""
        if item is None:
            return True
        return item["etag"] != etag or item.get("model_version") != self.model_version

    # -- intents ---------------------------------------------------------------------------
    @property
    def _intents(self) -> str:
        return f"{self.deployment_id}#intents"

    def intend(self, scope: str, token: str, group: list[Entry], fence: dict, *,
               model_seconds: float = 0.0) -> Intent:
        """Record what a group will write before writing it, and count its files as pending,
        in one transaction that checks the lease (`fence`): an intent exists only if it was
        written while its scorer held the lease, so the next holder's recovery sees every intent
        whose files may still be written, and `pending` moves with the intents exactly."""
        if len(group) > MAX_FILES_PER_OUTPUT:
            raise ValueError(f"a group holds at most {MAX_FILES_PER_OUTPUT} files, not {len(group)}")
        if len({entry.key for entry in group}) != len(group):
            raise ValueError("a group names an input twice; each input has one entry (and one record)")
        parts = [packed for _, packed in _packed_parts(group)]
        names = [f"{scope}#{token}#{number}" for number in range(len(parts))]
        puts = [{"Put": {"TableName": self._groups, "ConditionExpression": f"attribute_not_exists({GROUP_KEY})",
                         "Item": _item({
                             "deployment_id": self._intents, GROUP_KEY: name, "model_version": self.model_version,
                             "model_seconds": _decimal(model_seconds if number == 0 else 0.0), "entries": part})}}
                for number, (name, part) in enumerate(zip(names, parts, strict=True))]
        self._once([self._deployment_update(fence, pending=len(group)), *puts], "an intent")
        return Intent(names, group, model_seconds)

    def _deployment_update(self, fence: dict, **counts: int) -> dict:
        """ADD the counts to the deployment, while its scorer holds the lease (`fence`)."""
        return {"Update": {
            "TableName": self._deployments, "Key": self._deployment_key(),
            "UpdateExpression": "ADD " + ", ".join(f"{name} :{name}" for name in counts),
            "ConditionExpression": f"attribute_exists(deployment_id) AND {fence['ConditionExpression']}",
            "ExpressionAttributeNames": fence["ExpressionAttributeNames"],
            "ExpressionAttributeValues": _item({**{f":{name}": value for name, value in counts.items()},
                                                **fence["ExpressionAttributeValues"]})}}

    def _once(self, items: list[dict], what: str, guards: int = 1) -> None:
        """Run a transaction whose first item is the fenced deployment update, then `guards` - 1
        more updates whose items must exist, then items conditional on an intent item (absent to
        put it, present to delete it). A refusal on those intent conditions alone means an
        earlier try landed and only its answer was lost; conflicts with other transactions on
        the same items are tried again."""
        for attempt in range(_TRANSACTION_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=items)
                return
            except self._client.exceptions.TransactionCanceledException as cancelled:
                reasons = [reason.get("Code", "None") for reason in cancelled.response.get("CancellationReasons", [])]
            if reasons[:1] == ["ConditionalCheckFailed"]:
                self._lost()
            if "ConditionalCheckFailed" in reasons[1:guards]:
                raise DeploymentDeleted(self.deployment_id)  # its instance is gone
            if "ConditionalCheckFailed" in reasons and set(reasons) <= {"ConditionalCheckFailed", "None"}:
                logger.info(f"an earlier try of {what} landed; counted once", extra={"reasons": reasons})
                return
            if not set(reasons) & _RETRIED_REASONS or attempt == _TRANSACTION_ATTEMPTS - 1:
                raise RuntimeError(f"DynamoDB refused {what}: {reasons}")
            time.sleep(random.uniform(0, 0.05 * 2 ** attempt))

    def _deployment_key(self) -> dict:
        return _item({"instance_id": self.instance_id, "deployment_id": self.deployment_id})

    def _lost(self) -> None:
        """Raise why a fenced write was refused: the deployment is gone, or the lease is."""
        found = self._client.get_item(TableName=self._deployments, Key=self._deployment_key(), ConsistentRead=True,
                                      ProjectionExpression="deployment_id")
        if "Item" not in found:
            raise DeploymentDeleted(self.deployment_id)
        raise LeaseLost(f"another scorer holds deployment {self.deployment_id} now; this one stops without "
                        "writing more")

    def intents(self) -> list[Intent]:
        """The intents in the partition: groups being written, or left by scorers that stopped
        (the caller picks those its lease may finish). The partition holds only unfinished
        groups, so it stays small."""
        groups: dict[str, list[dict]] = {}
        for item in self._partition(self._intents, table=self._groups):
            groups.setdefault(item[GROUP_KEY].rsplit("#", 1)[0], []).append(item)
        return [Intent([item[GROUP_KEY] for item in items],
                       [entry for item in items for entry in _intended(item["entries"])],
                       float(sum(item.get("model_seconds", 0) for item in items)))
                for items in groups.values()]

    # -- commit ----------------------------------------------------------------------------
    def commit(self, intent: Intent, fence: dict, *, written: list[Entry] | None = None,
               as_range: bool = False) -> None:
        """Settle an intent: record the outcome of its entries (`written`: those whose output file
        is there, all of them unless told), then count them (less their keys' earlier results),
        take all its files off `pending`, add their records and model seconds to the instance's
        usage and delete its items, in one transaction, while the lease is held (`fence`).

        The results are written before that transaction and unfenced (a batch has no
        conditions): a scorer reaches its commit only after its files were written, and then
        the next holder commits the very same results (it adopts files it finds), so a late
        write repeats them; only counts could double, and they are fenced. One gap is known: if
        a key was scored again after that recovery (its file overwritten), a late write can put
        its older key item back, and the key is scored once more (one extra record). It takes a
        pause past the lease, a recovery and an overwrite of the same key, in that order, and
        closing it would cost a conditional write per file.
        Entries not written are left without a result, to be scored again. `as_range`: the
        results go in range records (see the module's docstring: only for a group of the first
        pass of a run that found the ledger empty, with its keys in order after every earlier
        group's); else one key item each."""
        written = intent.entries if written is None else written
        now = _now()
        if as_range:
            self._batch_put(self._range_records(written))
            self._has_ranges = True
        else:
            self._batch_put(self._key_records(written))
        scored = [entry for entry in written if entry.status == SCORED]
        moved = Counter(entry.status for entry in written)
        moved.subtract(entry.previous for entry in written if entry.previous)
        usage = {"Update": {
            "TableName": self._instances, "Key": _item({"instance_id": self.instance_id}),
            "UpdateExpression": "ADD prediction_count :records, computation_time :seconds",
            "ConditionExpression": "attribute_exists(instance_id)",
            "ExpressionAttributeValues": _item({":records": sum(entry.records for entry in scored),
                                                ":seconds": _decimal(intent.model_seconds if written else 0.0)})}}
        deletes = [{"Delete": {"TableName": self._groups, "ConditionExpression": f"attribute_exists({GROUP_KEY})",
                               "Key": _item({"deployment_id": self._intents, GROUP_KEY: name})}}
                   for name in intent.names]
        self._once([self._deployment_update(fence, scored=moved[SCORED], failed=moved[FAILED],
                                            pending=-len(intent.entries)), usage, *deletes,
                    *self._written_files(intent.token, now, written)], "a commit", guards=2)

    def _key_records(self, written: list[Entry]) -> list[dict]:
        return [_item({
            "deployment_id": self.deployment_id, "input_key": entry.key, "etag": entry.etag,
            "model_version": self.model_version, "status": entry.status, "output_key": entry.output_key,
            **({"error_code": entry.error_code, "error_message": _clip(entry.error)} if entry.status == FAILED else {}),
        }) for entry in written]

    def _range_records(self, written: list[Entry]) -> list[dict]:
        """The results in key order, one record per 350 KB, each under the last key it holds (a
        retried or late write of the same group puts the same records again)."""
        return [_item({"deployment_id": self._ranges, "input_key": part[-1].key, "first_key": part[0].key,
                       "model_version": self.model_version, "entries": packed})
                for part, packed in _packed_parts(sorted(written, key=lambda entry: entry.key))]

    @property
    def _files(self) -> str:
        return files_partition(self.deployment_id)

    def _written_files(self, token: str, now: Decimal, written: list[Entry]) -> list[dict]:
        """The group's entry in the files partition: its output files, counts and first failures,
        newest first by the commit's time (`newest_files`). It rides in the commit's transaction, so
        it costs no request and exists exactly when the commit landed."""
        if not written:
            return []
        failed = [entry for entry in written if entry.status == FAILED]
        return [{"Put": {"TableName": self._groups, "ConditionExpression": f"attribute_not_exists({GROUP_KEY})",
                         "Item": _item({
                             "deployment_id": self._files, GROUP_KEY: f"{float(now):014.3f}#{token}",
                             "committed_at": now, "files": sorted({entry.output_key for entry in written}),
                             "scored": len(written) - len(failed), "failed": len(failed),
                             "records": sum(entry.records for entry in written if entry.status == SCORED),
                             "failures": [{"filename": entry.key, "code": entry.error_code,
                                           "message": _clip(entry.error, _SHOWN_MESSAGE_BYTES)}
                                          for entry in failed[:_FAILURES_SHOWN]]})}}]

    def _batch_put(self, items: list[dict]) -> None:
        self._batch_write([{"PutRequest": {"Item": item}} for item in items])

    def _batch_write(self, requests: list[dict]) -> None:
        """Put and delete requests, 25 a call, retrying what DynamoDB left unprocessed."""
        for chunk in _chunks(requests, 25):
            batch = {self._table: chunk}
            while batch:
                batch = self._client.batch_write_item(RequestItems=batch).get("UnprocessedItems") or None
                if batch:
                    time.sleep(0.05)

    # -- reading the whole partition -------------------------------------------------------
    def empty(self) -> bool:
        """Whether no input of the deployment has a result yet (a key item or a range record)."""
        return not self._first(self.deployment_id) and not self._ranges_exist()

    def recount(self) -> Counter:
        """How many inputs are scored and failed, from the ledger itself: what the deployment's
        counters must equal. An audit for tests and operators, and the one count of a deployment
        from before commits kept the counters (runner._succeed); no pass calls it otherwise, since
        it reads every result the deployment has and holds one status per key."""
        latest: dict[str, str] = {}
        for record in self._partition(self._ranges):
            latest.update((entry.key, entry.status) for entry in entries(record["entries"].value))
        latest.update((item["input_key"], item["status"]) for item in self._partition(self.deployment_id))
        return Counter(latest.values())

    def _partition(self, partition: str, *, table: str | None = None) -> Iterator[dict]:
        """Every item of a partition (of the ledger table, unless another is named), read strongly."""
        for page in self._client.get_paginator("query").paginate(
                TableName=table or self._table, KeyConditionExpression="deployment_id = :id", ConsistentRead=True,
                ExpressionAttributeValues=_item({":id": partition})):
            yield from (_deserialize({"M": raw}) for raw in page["Items"])
