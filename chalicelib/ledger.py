"""The exactly-once ledger: one DynamoDB item per (deployment, input key), with the ETag and
model version it was scored at and the output file holding its one result record.

The protocol, per group of files:
1. claim: a conditional put per file (status `claimed`, a claim token, and the outcome it
   plans: output file, status, record count). A file already done at this ETag and model
   version, or freshly claimed by another scorer, is not claimed again.
2. write the output file (its name is fixed at claim time).
3. commit: write the claimed items with their final status, then add to the deployment's
   counters.
A scorer that dies leaves claims behind. Once they are older than the lease, the next scorer
looks for their output file: if it exists, the records are there and the claims are committed
as planned; if not, the files are claimed again and scored. So a crash at any point neither
loses a result nor writes a second one. Counters added after a crash may lag; `recount` sets
them from the ledger itself when a run ends.

Claims are single conditional puts, run concurrently, and commits are batch writes: DynamoDB
transactions would save requests on AWS, but moto copies every table on each transaction,
which would make the local stack crawl as the ledger grows.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

from boto3.dynamodb.types import TypeSerializer

from chalicelib import aws
from chalicelib.settings import get_settings

CLAIMED, SCORED, FAILED = "claimed", "scored", "failed"
_serialize = TypeSerializer().serialize
_CLAIM_THREADS = 8


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
    def __init__(self, instance_id: str, deployment_id: str, model_version: str, *,
                 lease_seconds: int | None = None):
        settings = get_settings()
        self.instance_id = instance_id
        self.deployment_id = deployment_id
        self.model_version = model_version
        self.lease_seconds = lease_seconds if lease_seconds is not None else settings.lease_seconds
        self._table = settings.ledger_table
        self._deployments = settings.deployments_table
        self._client = aws.client("dynamodb")
        self._pool = ThreadPoolExecutor(_CLAIM_THREADS, thread_name_prefix="ledger")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

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
        """True when this key at this ETag has no result and nobody holds a live claim on it."""
        if item is None:
            return True
        if item["status"] == CLAIMED:
            return self.expired(item)
        return item["etag"] != etag or item.get("model_version") != self.model_version

    def expired(self, item: dict) -> bool:
        return float(item["claimed_at"]) < time.time() - self.lease_seconds

    # -- claim -----------------------------------------------------------------------------
    @staticmethod
    def _outcome(entry: Entry) -> dict:
        """What a claim plans, so a successor can commit it if the output file was written."""
        return {"output_key": entry.output_key, "planned_status": entry.status, "records": entry.records,
                "error_code": entry.error_code, "error_message": entry.error[:1000]}

    def _claim_one(self, entry: Entry, token: str) -> bool:
        now = time.time()
        return aws.conditionally(
            self._client.put_item,
            TableName=self._table,
            Item=_item({"deployment_id": self.deployment_id, "input_key": entry.key, "etag": entry.etag,
                        "model_version": self.model_version, "status": CLAIMED, "claim_token": token,
                        "claimed_at": Decimal(str(round(now, 3))), **self._outcome(entry)}),
            ConditionExpression=(
                "attribute_not_exists(input_key)"
                " OR (#status = :claimed AND claimed_at < :expired)"
                " OR (#status <> :claimed AND (etag <> :etag OR model_version <> :version))"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_item({
                ":claimed": CLAIMED, ":expired": Decimal(str(round(now - self.lease_seconds, 3))),
                ":etag": entry.etag, ":version": self.model_version}),
        )

    def claim(self, entries: list[Entry], token: str) -> list[Entry]:
        """Claim what can be claimed; returns the entries now held with `token`."""
        won = self._pool.map(lambda entry: self._claim_one(entry, token), entries)
        return [entry for entry, held in zip(entries, won) if held]

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
        for chunk in _chunks(entries, 25):
            requests = [{"PutRequest": {"Item": _item({
                "deployment_id": self.deployment_id, "input_key": entry.key, "etag": entry.etag,
                "model_version": self.model_version, "status": entry.status, "claim_token": token,
                "claimed_at": now, "committed_at": now, **self._outcome(entry)})}} for entry in chunk]
            batch = {self._table: requests}
            while batch:
                batch = self._client.batch_write_item(RequestItems=batch).get("UnprocessedItems") or None
                if batch:
                    time.sleep(0.05)
        scored = sum(1 for entry in entries if entry.status == SCORED)
        self._add_counts(scored=scored, failed=len(entries) - scored, pending=pending_delta - len(entries))

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
    def claims(self) -> Iterator[dict]:
        """Every item still in `claimed` status."""
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table, KeyConditionExpression="deployment_id = :id",
            FilterExpression="#status = :claimed", ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_item({":id": self.deployment_id, ":claimed": CLAIMED}),
        ):
            for raw in page["Items"]:
                yield _plain(raw)

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
