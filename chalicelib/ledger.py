"""The exactly-once ledger: one DynamoDB item per (deployment, input key), with the ETag and
model version it was scored at and the output file holding its one result record.

Every scorer holds the lease of the keys it scores (chalicelib.leases), so nobody else is
scoring them, and the protocol per group of files is:
1. intent: write what the group will produce (each file's output file, status and record
   count) as a few items in the deployment's intents partition (`<deployment>#intents`, so
   lookups and counts of the real keys never see them);
2. write the output files (their names are fixed in the intent);
3. commit: batch-write an item per file with its final status, then count them on the
   deployment and delete the intent in one transaction (a count retried after its answer was
   lost is refused on the intent, never added twice).
A scorer that dies leaves its intents behind. The next holder of the lease reads them before it
scores anything: the files whose output file exists are committed as planned (their records are
there); for each that does not, it claims the name first (an empty result file, written
create-only), and those inputs are simply scored again. So a crash at any point neither loses a
result nor writes a second one, and a group of hundreds of files costs a handful of requests
besides the commit's batch writes. Counters added after a crash may lag; `recount` sets them
from the ledger when a run ends.

A scorer that only *paused* past its lease and resumes is fenced at each step: its intent is
written in a transaction that checks it still holds the lease; its output files are written
create-only (S3 If-None-Match: *), so a name the new holder claimed refuses it; and its counts
are added only while it holds the lease. It stops at the first refusal (LeaseLost).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from chalicelib import aws
from chalicelib.leases import LeaseLost
from chalicelib.log import logger
from chalicelib.settings import get_settings

SCORED, FAILED = "scored", "failed"
_ENTRIES_PER_INTENT = 100  # keeps an intent item under DynamoDB's 400 KB with 1 KB keys and messages
_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems
_serialize = TypeSerializer().serialize


class DeploymentDeleted(Exception):
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


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _item(values: dict) -> dict:
    return {name: _serialize(value) for name, value in values.items()}


def _plain(raw: dict) -> dict:
    return {name: next(iter(value.values())) for name, value in raw.items()}


def _client_form(condition: dict) -> dict:
    """A condition (leases.Lease.fence) with its values serialized for the DynamoDB client."""
    return {**condition, "ExpressionAttributeValues": _item(condition["ExpressionAttributeValues"])}


def _now() -> Decimal:
    return Decimal(str(round(time.time(), 3)))


class Ledger:
    def __init__(self, instance_id: str, deployment_id: str, model_version: str):
        settings = get_settings()
        self.instance_id = instance_id
        self.deployment_id = deployment_id
        self.model_version = model_version
        self._table = settings.ledger_table
        self._deployments = settings.deployments_table
        self._client = aws.client("dynamodb")

    def _key(self, input_key: str) -> dict:
        return _item({"deployment_id": self.deployment_id, "input_key": input_key})

    def lookup(self, keys: Iterable[str]) -> dict[str, dict]:
        """The ledger items of these keys (absent keys are missing from the result)."""
        found: dict[str, dict] = {}
        for chunk in _chunks(sorted(set(keys)), 100):
            request = {self._table: {"Keys": [self._key(key) for key in chunk], "ConsistentRead": True}}
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for raw in response["Responses"].get(self._table, []):
                    found[raw["input_key"]["S"]] = _plain(raw)
                request = response.get("UnprocessedKeys") or None
                if request:
                    time.sleep(0.05)
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

    def intend(self, scope: str, token: str, entries: list[Entry], fence: dict) -> list[str]:
        """Record what a group will write before writing it; the intent's item keys. Written in
        transactions that check the lease (`fence`): an intent exists only if it was written
        while its scorer held the lease, so the next holder's recovery sees every intent whose
        files may still be written."""
        parts = list(_chunks(entries, _ENTRIES_PER_INTENT))
        names = [f"{scope}#{token}#{number}" for number in range(len(parts))]
        puts = [{"Put": {"TableName": self._table, "Item": _item({
            "deployment_id": self._intents, "input_key": name, "model_version": self.model_version,
            "entries": [{"key": e.key, "etag": e.etag, "output_key": e.output_key, "status": e.status,
                         "records": e.records, "error_code": e.error_code, "error": e.error[:1000]} for e in part],
        })}} for name, part in zip(names, parts, strict=True)]
        for chunk in _chunks(puts, _TRANSACTION_ITEMS - 1):
            try:
                self._client.transact_write_items(TransactItems=[self._fence_check(fence), *chunk])
            except self._client.exceptions.TransactionCanceledException as cancelled:
                reasons = [reason.get("Code") for reason in cancelled.response.get("CancellationReasons", [])]
                if reasons[:1] == ["ConditionalCheckFailed"]:
                    self._lost()
                raise
        return names

    def _fence_check(self, fence: dict) -> dict:
        return {"ConditionCheck": {"TableName": self._deployments, **_client_form(fence),
                                   "Key": self._deployment_key()}}

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

    @staticmethod
    def intent_token(name: str) -> str:
        """The token of the group an intent item (named by `intend`) belongs to."""
        return name.split("#")[-2]

    def forget(self, names: list[str]) -> None:
        self._batch_write([{"DeleteRequest": {"Key": _item({"deployment_id": self._intents, "input_key": name})}}
                           for name in names])

    def intents(self, scope: str | None) -> dict[str, list[Entry]]:
        """Intents left by scorers that died: item key -> planned entries. With a scope, only
        that scope's (a shard must not touch another live shard's); without, every one."""
        values = {":partition": self._intents}
        condition = "deployment_id = :partition"
        if scope is not None:
            condition += " AND begins_with(input_key, :scope)"
            values[":scope"] = f"{scope}#"
        found: dict[str, list[Entry]] = {}
        for page in self._client.get_paginator("query").paginate(
                TableName=self._table, KeyConditionExpression=condition, ConsistentRead=True,
                ExpressionAttributeValues=_item(values)):
            for raw in page["Items"]:
                item = TypeDeserializer().deserialize({"M": raw})
                found[item["input_key"]] = [Entry(e["key"], e["etag"], e["output_key"], e["status"], int(e["records"]),
                                                  e["error_code"], e["error"]) for e in item["entries"]]
        return found

    # -- commit ----------------------------------------------------------------------------
    def commit(self, entries: list[Entry], token: str, fence: dict, *, intents: list[str],
               pending_delta: int = 0) -> None:
        """Record the outcome of the entries, then count them on the deployment and delete their
        intent items (`intents`), in one transaction, if the lease is still held (`fence`). The
        items themselves need no fence: a scorer reaches its commit only after its files were
        written, and then the next holder commits the very same items (it adopts files it
        finds); only the counts would be added twice."""
        now = _now()
        self._batch_put([_item({
            "deployment_id": self.deployment_id, "input_key": entry.key, "etag": entry.etag,
            "model_version": self.model_version, "status": entry.status, "claim_token": token,
            "committed_at": now, "output_key": entry.output_key, "records": entry.records,
            **({"error_code": entry.error_code, "error_message": entry.error[:1000]} if entry.status == FAILED else {}),
        }) for entry in entries])
        scored = sum(1 for entry in entries if entry.status == SCORED)
        self._count_once(intents, fence, scored=scored, failed=len(entries) - scored,
                         pending=pending_delta - len(entries))

    def _count_once(self, intents: list[str], fence: dict, **counts: int) -> None:
        """Add the counts and delete the intents they come from, together: an ADD is not
        idempotent, and a try whose answer was lost (a dropped connection, retried by botocore)
        would count twice. Each intent item is deleted on condition that it exists, so a retry
        of a try that landed is refused on an intent alone, and means it is done; refused on
        the fence, the lease is gone (a holder that took over deletes the intents it recovers)."""
        update = {"Update": {
            "TableName": self._deployments, "Key": self._deployment_key(),
            "UpdateExpression": "ADD " + ", ".join(f"{name} :{name}" for name in counts),
            "ConditionExpression": f"attribute_exists(deployment_id) AND {fence['ConditionExpression']}",
            "ExpressionAttributeNames": fence["ExpressionAttributeNames"],
            "ExpressionAttributeValues": _item({**{f":{name}": value for name, value in counts.items()},
                                                **fence["ExpressionAttributeValues"]})}}
        deletes = [{"Delete": {"TableName": self._table, "ConditionExpression": "attribute_exists(input_key)",
                               "Key": _item({"deployment_id": self._intents, "input_key": name})}}
                   for name in intents]
        try:
            self._client.transact_write_items(TransactItems=[update, *deletes])
        except self._client.exceptions.TransactionCanceledException as cancelled:
            reasons = [reason.get("Code") for reason in cancelled.response.get("CancellationReasons", [])]
            if reasons[:1] == ["ConditionalCheckFailed"]:
                self._lost()
            if "ConditionalCheckFailed" in reasons[1:] and set(reasons[1:]) <= {"ConditionalCheckFailed", "None"}:
                logger.info("an earlier try of a commit landed; counted once", extra={"intents": intents})
                return
            raise

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
        """Whether no input of the deployment has a result yet (one read of one item)."""
        response = self._client.query(TableName=self._table, KeyConditionExpression="deployment_id = :id",
                                      ExpressionAttributeValues=_item({":id": self.deployment_id}),
                                      Limit=1, ConsistentRead=True, ProjectionExpression="input_key")
        return not response["Items"]

    def recount(self) -> Counter:
        """How many inputs are scored and failed, from the ledger itself."""
        counts: Counter = Counter()
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table, KeyConditionExpression="deployment_id = :id",
            ProjectionExpression="#status", ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_item({":id": self.deployment_id}),
        ):
            counts.update(raw["status"]["S"] for raw in page["Items"])
        return counts
