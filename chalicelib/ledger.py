"""The exactly-once ledger: one DynamoDB item per (deployment, input key), with the ETag and
model version it was scored at and the output file holding its one result record.

Every scorer holds the lease of the keys it scores (chalicelib.leases), so nobody else is
scoring them. The protocol, per group of files:
1. claim: batch-write an item per file (status `claimed`, the claim token, and the outcome it
   plans: output file, status, record count);
2. write the output file (its name is fixed at claim time);
3. commit: batch-write the items with their final status, then add to the deployment's counters.
A scorer that dies leaves claims behind; the next holder of the lease finds them when it looks
the files up. If their planned output file exists, the records are there and the claims are
committed as planned (adopted); if not, the files are scored again. So a crash at any point
neither loses a result nor writes a second one, and a group costs a few requests, not one per
file. Counters added after a crash may lag; `recount` sets them from the ledger when a run ends.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from boto3.dynamodb.types import TypeSerializer

from chalicelib import aws
from chalicelib.settings import get_settings

CLAIMED, SCORED, FAILED = "claimed", "scored", "failed"
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
        """True when this key at this ETag has no result (a claim found under the lease was
        abandoned: the caller adopts it first when its output exists)."""
        if item is None or item["status"] == CLAIMED:
            return True
        return item["etag"] != etag or item.get("model_version") != self.model_version

    # -- claim ---------------------------------------------------------------------------
    @staticmethod
    def _outcome(entry: Entry) -> dict:
        """What a claim plans, so a successor can commit it if the output file was written."""
        return {"output_key": entry.output_key, "planned_status": entry.status, "records": entry.records,
                "error_code": entry.error_code, "error_message": entry.error[:1000]}

    def claim(self, entries: list[Entry], token: str) -> list[Entry]:
        """Claim the entries (the caller holds their lease, so nobody else is scoring them)."""
        now = _now()
        self._batch_write([_item({
            "deployment_id": self.deployment_id, "input_key": entry.key, "etag": entry.etag,
            "model_version": self.model_version, "status": CLAIMED, "claim_token": token, "claimed_at": now,
            **self._outcome(entry)}) for entry in entries])
        return entries

    def reassign(self, entries: list[Entry], token: str) -> None:
        """Change the planned outcome of claims still held (a file the model refused moves to errors)."""
        for entry in entries:
            outcome = self._outcome(entry)
            self._client.update_item(
                TableName=self._table, Key=self._key(entry.key),
                UpdateExpression="SET " + ", ".join(f"{name} = :{name}" for name in outcome),
                ConditionExpression="claim_token = :token",
                ExpressionAttributeValues=_item({**{f":{name}": value for name, value in outcome.items()},
                                                 ":token": token}),
            )

    # -- commit ----------------------------------------------------------------------------
    def commit(self, entries: list[Entry], token: str, *, pending_delta: int = 0) -> None:
        """Record the outcome of claimed entries, then count them on the deployment."""
        now = _now()
        self._batch_write([_item({
            "deployment_id": self.deployment_id, "input_key": entry.key, "etag": entry.etag,
            "model_version": self.model_version, "status": entry.status, "claim_token": token,
            "claimed_at": now, "committed_at": now, **self._outcome(entry)}) for entry in entries])
        scored = sum(1 for entry in entries if entry.status == SCORED)
        self._add_counts(scored=scored, failed=len(entries) - scored, pending=pending_delta - len(entries))

    def _batch_write(self, items: list[dict]) -> None:
        for chunk in _chunks(items, 25):
            batch = {self._table: [{"PutRequest": {"Item": item}} for item in chunk]}
            while batch:
                batch = self._client.batch_write_item(RequestItems=batch).get("UnprocessedItems") or None
                if batch:
                    time.sleep(0.05)

    def _add_counts(self, **counts: int) -> None:
        if not aws.conditionally(
            self._client.update_item,
            TableName=self._deployments,
            Key=_item({"instance_id": self.instance_id, "deployment_id": self.deployment_id}),
            UpdateExpression="ADD " + ", ".join(f"{name} :{name}" for name in counts),
            ConditionExpression="attribute_exists(deployment_id)",
            ExpressionAttributeValues=_item({f":{name}": value for name, value in counts.items()}),
        ):
            raise DeploymentDeleted(self.deployment_id)

    # -- reading the whole partition -------------------------------------------------------
    def recount(self) -> Counter:
        """How many inputs are scored, failed and claimed, from the ledger itself."""
        counts: Counter = Counter()
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table, KeyConditionExpression="deployment_id = :id",
            ProjectionExpression="#status", ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_item({":id": self.deployment_id}),
        ):
            counts.update(raw["status"]["S"] for raw in page["Items"])
        return counts
