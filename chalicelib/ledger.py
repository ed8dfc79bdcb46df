"""The exactly-once ledger: one DynamoDB item per (deployment, input key), with the ETag and
model version it was scored at and the output file holding its one result record.

The protocol, per group of files:
1. claim: a conditional put per file (status `claimed`, a claim token, the output file it
   will go to). A file already done at this ETag, or freshly claimed by another scorer, is
   not claimed again.
2. write the output file (its name is fixed at claim time).
3. commit: set status `scored`/`failed` where the claim token still matches, in the same
   transaction as the deployment's counters.
A scorer that dies leaves claims behind. Once they are older than the lease, the next scorer
looks for their output file: if it exists, the records are there and the claims are
committed as they are; if not, the files are claimed again and scored. So a crash at any
point neither loses a result nor writes a second one.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.settings import get_settings

CLAIMED, SCORED, FAILED = "claimed", "scored", "failed"
_TRANSACTION_LIMIT = 100
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

    def lookup(self, keys: Iterable[str]) -> dict[str, dict]:
        """The ledger items of these keys (absent keys are missing from the result)."""
        found: dict[str, dict] = {}
        for chunk in _chunks(sorted(set(keys)), 100):
            request = {self._table: {"Keys": [_item({"deployment_id": self.deployment_id, "input_key": key})
                                              for key in chunk], "ConsistentRead": True}}
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for raw in response["Responses"].get(self._table, []):
                    found[raw["input_key"]["S"]] = {name: next(iter(value.values())) for name, value in raw.items()}
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

    def claim(self, entries: list[Entry], token: str) -> list[Entry]:
        """Claim what can be claimed; returns the entries now held with `token`."""
        held: list[Entry] = []
        for chunk in _chunks(entries, _TRANSACTION_LIMIT):
            while chunk:
                refused = self._transact([self._claim_action(entry, token) for entry in chunk])
                if refused is None:
                    held += chunk
                    break
                chunk = [entry for index, entry in enumerate(chunk) if index not in refused]
        return held

    def _claim_action(self, entry: Entry, token: str) -> dict:
        now = time.time()
        return {"Put": {
            "TableName": self._table,
            "Item": _item({
                "deployment_id": self.deployment_id, "input_key": entry.key, "etag": entry.etag,
                "model_version": self.model_version, "status": CLAIMED, "claim_token": token,
                "claimed_at": Decimal(str(round(now, 3))), **self._outcome(entry),
            }),
            "ConditionExpression": (
                "attribute_not_exists(input_key)"
                " OR (#status = :claimed AND claimed_at < :expired)"
                " OR (#status <> :claimed AND (etag <> :etag OR model_version <> :version))"
            ),
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": _item({
                ":claimed": CLAIMED, ":expired": Decimal(str(round(now - self.lease_seconds, 3))),
                ":etag": entry.etag, ":version": self.model_version,
            }),
        }}

    @staticmethod
    def _outcome(entry: Entry) -> dict:
        """What a claim plans, so a successor can commit it if the output file was written."""
        return {"output_key": entry.output_key, "planned_status": entry.status, "records": entry.records,
                "error_code": entry.error_code, "error_message": entry.error[:1000]}

    def reassign(self, entries: list[Entry], token: str) -> None:
        """Change the planned outcome of claims still held (a file the model refused moves to errors)."""
        for entry in entries:
            outcome = self._outcome(entry)
            self._client.update_item(
                TableName=self._table,
                Key=_item({"deployment_id": self.deployment_id, "input_key": entry.key}),
                UpdateExpression="SET " + ", ".join(f"{name} = :{name}" for name in outcome),
                ConditionExpression="claim_token = :token",
                ExpressionAttributeValues=_item({**{f":{name}": value for name, value in outcome.items()},
                                                 ":token": token}),
            )

    def commit(self, entries: list[Entry], token: str, *, pending_delta: int = 0) -> None:
        """Record the outcome of claimed entries, with the deployment's counters, atomically."""
        for chunk in _chunks(entries, _TRANSACTION_LIMIT - 1):
            while chunk:
                actions = [self._commit_action(entry, token) for entry in chunk]
                actions.append(self._counters_action(chunk, pending_delta))
                refused = self._transact(actions)
                if refused is None:
                    break
                if len(actions) - 1 in refused:
                    raise DeploymentDeleted(self.deployment_id)
                # A claim was taken over (we outlived the lease): that entry is no longer ours.
                chunk = [entry for index, entry in enumerate(chunk) if index not in refused]
            pending_delta = 0

    def _commit_action(self, entry: Entry, token: str) -> dict:
        values = {":status": entry.status, ":token": token, ":now": Decimal(str(round(time.time(), 3)))}
        update = "SET #status = :status, committed_at = :now"
        return {"Update": {
            "TableName": self._table,
            "Key": _item({"deployment_id": self.deployment_id, "input_key": entry.key}),
            "UpdateExpression": update,
            "ConditionExpression": "claim_token = :token AND #status = :claimed",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": _item({**values, ":claimed": CLAIMED}),
        }}

    def _counters_action(self, entries: list[Entry], pending_delta: int) -> dict:
        scored = sum(1 for entry in entries if entry.status == SCORED)
        failed = len(entries) - scored
        return {"Update": {
            "TableName": self._deployments,
            "Key": _item({"instance_id": self.instance_id, "deployment_id": self.deployment_id}),
            "UpdateExpression": "ADD scored :scored, failed :failed, pending :pending",
            "ConditionExpression": "attribute_exists(deployment_id)",
            "ExpressionAttributeValues": _item({":scored": scored, ":failed": failed,
                                                ":pending": pending_delta - len(entries)}),
        }}

    def _transact(self, actions: list[dict]) -> set[int] | None:
        """Run a transaction; None on success, else the indexes whose condition failed."""
        try:
            self._client.transact_write_items(TransactItems=actions)
            return None
        except ClientError as error:
            if error.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = error.response.get("CancellationReasons", [])
            refused = {index for index, reason in enumerate(reasons) if reason.get("Code") == "ConditionalCheckFailed"}
            if not refused:
                raise
            return refused

    def claims(self) -> Iterator[dict]:
        """Every item still in `claimed` status (a query over this deployment's partition)."""
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table, KeyConditionExpression="deployment_id = :id",
            FilterExpression="#status = :claimed", ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_item({":id": self.deployment_id, ":claimed": CLAIMED}),
        ):
            for raw in page["Items"]:
                yield {name: next(iter(value.values())) for name, value in raw.items()}
