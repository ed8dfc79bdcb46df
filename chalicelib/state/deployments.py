"""Deployment items: the only code that knows the deployments table's attributes and conditions
(leases.py owns the lease attributes on the same item, ledger.py the counters it adds).

A deployment item snapshots what scoring needs (model version, archive and its digest, chosen
signature, locations without keys), so a run never depends on the model item staying as it was.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from boto3.dynamodb.conditions import Attr

from chalicelib.core import aws
from chalicelib.core.clock import now_iso
from chalicelib.core.errors import BadRequest, NotFound, field
from chalicelib.core.settings import get_settings
from chalicelib.state import leases, pages, subscriptions
from chalicelib.state.connections import Location
from chalicelib.state.models import VersionStatus


class Status(StrEnum):
    """A deployment's status, as the v3 API shows it."""

    INITIALIZING = "INITIALIZING"
    IN_PROGRESS = "DEPLOY_IN_PROGRESS"
    SUCCESS = "SUCCESS"  # a batch deployment's backlog is scored
    FAILED = "FAILED"
    ONLINE_READY = "DEPLOY_SUCCESS"  # an online deployment serves its scoring URL (WML's word for it)


class ScoringPath(StrEnum):
    """Which path is scoring: the backlog job (lists the bucket, large batches) or upload events."""

    BACKLOG = "backlog"
    UPLOADS = "uploads"


INITIALIZING, IN_PROGRESS, SUCCESS, FAILED, ONLINE_READY = Status
BACKLOG, UPLOADS = ScoringPath


@dataclass(frozen=True)
class Deployment:
    """What scoring reads of a deployment item, typed and read from the item in one place. (The
    API's views render the item itself: they show every field, counters included.)"""

    instance_id: str
    deployment_id: str
    model_id: str
    version_id: str
    archive_key: str
    archive_sha256: str  # empty on items from before digests: such an archive is refused at load
    signature: dict  # the chosen serving signature: name, inputs and outputs with dtypes and shapes
    type: str  # batch or online
    status: Status
    input: Location | None = None  # a batch deployment's locations; an online one has none
    output: Location | None = None
    trigger: str = ""  # how new files are found (subscriptions.NOTIFICATIONS or POLLING)

    @classmethod
    def from_item(cls, item: dict) -> Deployment:
        source, target = (Location.from_item(item[side]) if side in item else None for side in ("input", "output"))
        return cls(item["instance_id"], item["deployment_id"], item["model_id"], item["version_id"],
                   item["archive_key"], item.get("archive_sha256", ""), item.get("signature") or {},
                   item.get("type", "batch"), Status(item["status"]), source, target, item.get("trigger", ""))

    @property
    def signature_name(self) -> str:
        return self.signature["name"]


def _table():
    return aws.table(get_settings().deployments_table)


def choose_signature(signatures: list[dict], requested: str | None) -> dict:
    """The deployment's signature, else serving_default, else the only one; never a guess."""
    by_name = {signature["name"]: signature for signature in signatures}
    if requested is not None:
        if requested not in by_name:
            raise BadRequest(f"The model has no signature '{requested}'; it has: {', '.join(sorted(by_name))}.",
                             target=field("signature_name"))
        return by_name[requested]
    if "serving_default" in by_name:
        return by_name["serving_default"]
    if len(by_name) == 1:
        return signatures[0]
    raise BadRequest(f"The model has several signatures ({', '.join(sorted(by_name))}) and none is "
                     "serving_default; name one in 'signature_name'.", target=field("signature_name"))


def batchable(signature: dict) -> dict:
    """The signature, if every input has a batch dimension (None first): scoring joins records."""
    for tensor in signature["inputs"]:
        shape = tensor["shape"]
        if shape is not None and (len(shape) == 0 or shape[0] is not None):
            raise BadRequest(f"Input tensor '{tensor['name']}' of signature '{signature['name']}' has shape "
                             f"{shape}, without a batch dimension; export the model with a None first "
                             "dimension to score batches.", target=field("signature_name"))
    return signature


def settled_online(item: dict, load_version) -> dict:
    """An online deployment created while its version was being inspected, as it stands now:
    ready once the version is (its signature chosen then, and the archive's digest, which a
    two-step upload records only at inspection), FAILED if the version is invalid. Whoever
    reads it first (a request for it, or a score) makes the change, once."""
    if item.get("type") != "online" or item["status"] != IN_PROGRESS:
        return item
    version = load_version(item["model_id"], item["version_id"])
    if version["status"] == VersionStatus.PENDING:
        return item
    if version["status"] == VersionStatus.READY:
        try:
            signature = batchable(choose_signature(version["signatures"], item.get("signature_name") or None))
        except BadRequest as error:
            return finish_online(item, failure=error.message)
        return finish_online(item, signature=signature, archive_sha256=version.get("archive_sha256", ""))
    reason = version.get("status_details", {}).get("message", "it could not be inspected")
    return finish_online(item, failure=str(reason))


COUNTED_BY_COMMITS = "counted_by_commits"  # its counters were only ever moved by ledger commits


def put_new(item: dict) -> None:
    _table().put_item(Item={**item, COUNTED_BY_COMMITS: True})


def set_trigger(instance_id: str, deployment_id: str, trigger: str) -> None:
    """How new files are found: bucket notifications or polling (chalicelib.state.subscriptions)."""
    _table().update_item(Key={"instance_id": instance_id, "deployment_id": deployment_id},
                         UpdateExpression="SET #trigger = :trigger", ExpressionAttributeNames={"#trigger": "trigger"},
                         ExpressionAttributeValues={":trigger": trigger})


def load(instance_id: str, deployment_id: str, model_id: str | None = None) -> dict:
    item = _table().get_item(Key={"instance_id": instance_id, "deployment_id": deployment_id},
                             ConsistentRead=True).get("Item")
    if item is None or (model_id is not None and item["model_id"] != model_id):
        raise NotFound(f"Deployment {deployment_id} does not exist" + (f" for model {model_id}." if model_id else "."),
                       target={"type": "deployment", "id": deployment_id})
    return item


def page(instance_id: str, limit: int, start: str | None, model_id: str | None = None) -> tuple[list[dict], bool]:
    """One page of an instance's deployments (of one model, if given), and whether more follow."""
    return pages.query(_table(), ("instance_id", instance_id), "deployment_id", limit, start,
                       filter_expression=Attr("model_id").eq(model_id) if model_id else None)


def remove(instance_id: str, deployment_id: str) -> bool:
    """Delete the item (runs see it gone and stop); False when it was gone already."""
    return aws.conditionally(_table().delete_item, Key={"instance_id": instance_id, "deployment_id": deployment_id},
                             ConditionExpression="attribute_exists(deployment_id)")


def _set_status(instance_id: str, deployment_id: str, status: Status, *, failure: str | None = None,
                fields: dict | None = None, unless_rescan: bool = False, fence: dict | None = None,
                waiting: bool = False) -> bool:
    """Change the status (and set other fields) of a deployment that still exists; False when it
    was deleted, with `unless_rescan` when uploads asked the backlog run for another pass, and
    with a scorer's `fence` (leases.Lease.fence) when that scorer no longer holds its lease."""
    return _status_change(instance_id, deployment_id, status, failure=failure, fields=fields,
                          unless_rescan=unless_rescan, fence=fence, waiting=waiting) is not None


def _status_change(instance_id: str, deployment_id: str, status: Status, *, failure: str | None = None,
                   fields: dict | None = None, unless_rescan: bool = False, fence: dict | None = None,
                   waiting: bool = False, returning: bool = False) -> dict | None:
    """`_set_status`, answering None where refused; else, with `returning`, the item as it is
    after the change (only `succeed` asks: every other change would carry the item back for
    nothing)."""
    update = "SET #status = :status, modified_at = :now"
    values: dict = {":status": status, ":now": now_iso()}
    if failure is not None:
        update += ", failure = :failure"
        values[":failure"] = failure[:2000]
    for name, value in (fields or {}).items():
        update += f", #{name} = :{name}"
        values[f":{name}"] = value
    if status != FAILED:
        update += " REMOVE failure"  # a run that works again: an earlier run's failure is history
    condition = "attribute_exists(deployment_id)"
    if unless_rescan:
        condition += " AND (attribute_not_exists(rescan) OR rescan = :false)"
        values[":false"] = False
    if waiting:  # only from DEPLOY_IN_PROGRESS (an online deployment waiting for its version)
        condition += " AND #status = :waiting"
        values[":waiting"] = IN_PROGRESS
    names = {"#status": "status", **{f"#{name}": name for name in fields or {}}}
    if fence is not None:
        condition += f" AND {fence['ConditionExpression']}"
        names.update(fence["ExpressionAttributeNames"])
        values.update(fence["ExpressionAttributeValues"])
    response = aws.conditional_response(
        _table().update_item, Key={"instance_id": instance_id, "deployment_id": deployment_id},
        UpdateExpression=update, ConditionExpression=condition, ExpressionAttributeNames=names,
        ExpressionAttributeValues=values, ReturnValues="ALL_NEW" if returning else "NONE")
    return None if response is None else response.get("Attributes", {})


def finish_online(item: dict, *, signature: dict | None = None, archive_sha256: str = "",
                  failure: str | None = None) -> dict:
    """An online deployment waiting for its version's inspection becomes ready with `signature`,
    or FAILED with `failure`; whoever reads it first makes the change, once (conditional on it
    still waiting). The item as it is now."""
    fields = {"signature": signature, "archive_sha256": archive_sha256} if signature is not None else {}
    status = ONLINE_READY if failure is None else FAILED
    if _set_status(item["instance_id"], item["deployment_id"], status, failure=failure, fields=fields,
                   waiting=True):
        return {**item, **fields, "status": status, **({"failure": failure} if failure else {})}
    return load(item["instance_id"], item["deployment_id"])


def start_run(instance_id: str, deployment_id: str, path: ScoringPath, fence: dict) -> bool:
    """A scorer that holds the lease (`fence`) starts: in progress, on this path."""
    return _set_status(instance_id, deployment_id, IN_PROGRESS, fields={"path": path}, fence=fence)


def start_pass(instance_id: str, deployment_id: str, fence: dict) -> bool:
    """The holder starts a pass over the bucket: requests for another pass so far are served by it."""
    return _set_status(instance_id, deployment_id, IN_PROGRESS, fields={"rescan": False}, fence=fence)


def succeed(instance_id: str, deployment_id: str, *, fence: dict, recounted: dict | None = None) -> dict | None:
    """SUCCESS with nothing pending, unless uploads asked for another pass meanwhile or the lease
    is gone (None); later uploads take the upload path. The counters as they are then (the
    ledger's commits keep them exact), or as `recounted` for a deployment created before that
    was so (COUNTED_BY_COMMITS), once. A pass that ended under the lease committed every intent,
    so `pending` is 0 already; it is set again so that a count gone wrong can never keep the
    deployment from settling."""
    fields = {"pending": 0, "path": UPLOADS}
    if recounted is not None:
        fields.update({"scored": recounted["scored"], "failed": recounted["failed"], COUNTED_BY_COMMITS: True})
    item = _status_change(instance_id, deployment_id, SUCCESS, unless_rescan=True, fence=fence, fields=fields,
                          returning=True)
    return None if item is None else {"scored": int(item.get("scored", 0)), "failed": int(item.get("failed", 0)),
                                      "pending": 0}


def fail(instance_id: str, deployment_id: str, reason: str, *, fence: dict | None = None) -> bool:
    """FAILED with the reason users see; with a `fence`, only while that scorer holds the lease."""
    return _set_status(instance_id, deployment_id, FAILED, failure=reason, fence=fence)


def ask_for_pass(instance_id: str, deployment_id: str) -> bool:
    """A backlog job is already running: ask it to pass over the bucket once more."""
    return _set_status(instance_id, deployment_id, IN_PROGRESS, fields={"rescan": True})


def record_batch_job(instance_id: str, deployment_id: str, job_id: str) -> bool:
    """The AWS Batch job now scoring the backlog (checked before submitting another)."""
    return _set_status(instance_id, deployment_id, IN_PROGRESS, fields={"batch_job_id": job_id})


def owe_pass(instance_id: str, deployment_id: str) -> bool:
    """During a burst of uploads, note that the bucket needs another pass (`rescan`) and that the
    backlog path is working; True when the caller must queue a run for that pass.

    One atomic write, whose old image tells who will make the pass: a live lease's holder (it
    cannot release while `rescan` is set), or whoever set `rescan` before (a run already queued,
    or the poller's requeue if that run dies). So a burst of thousands of messages queues one
    run, not one per message, each listing the whole bucket again."""
    response = aws.conditional_response(
        _table().update_item, Key={"instance_id": instance_id, "deployment_id": deployment_id},
        UpdateExpression="SET rescan = :true, #status = :running, #path = :backlog, modified_at = :now",
        ConditionExpression="attribute_exists(deployment_id)",
        ExpressionAttributeNames={"#status": "status", "#path": "path"},
        ExpressionAttributeValues={":true": True, ":running": IN_PROGRESS, ":backlog": BACKLOG, ":now": now_iso()},
        ReturnValues="ALL_OLD")
    if response is None:
        return False  # deleted meanwhile: nothing to score
    old = response["Attributes"]
    return not (old.get("rescan") is True or leases.live_leases(old))


def settle(instance_id: str, deployment_id: str) -> bool:
    """SUCCESS once nothing is pending (after uploads were scored); False while work remains."""
    return aws.conditionally(_table().update_item, Key={"instance_id": instance_id, "deployment_id": deployment_id},
                             UpdateExpression="SET #status = :success, modified_at = :now REMOVE failure",
                             ConditionExpression="attribute_exists(deployment_id) AND pending <= :zero",
                             ExpressionAttributeNames={"#status": "status"},
                             ExpressionAttributeValues={":success": SUCCESS, ":zero": 0, ":now": now_iso()})


def start_shards(instance_id: str, deployment_id: str, count: int) -> None:
    """A sharded backlog run begins: no shard is done yet."""
    _table().update_item(Key={"instance_id": instance_id, "deployment_id": deployment_id},
                         UpdateExpression="SET shards = :count, #status = :running, #path = :backlog, "
                                          "modified_at = :now REMOVE shards_done",
                         ConditionExpression="attribute_exists(deployment_id)",
                         ExpressionAttributeNames={"#status": "status", "#path": "path"},
                         ExpressionAttributeValues={":count": count, ":running": IN_PROGRESS, ":backlog": BACKLOG,
                                                    ":now": now_iso()})


def shard_done(instance_id: str, deployment_id: str, index: int, count: int) -> bool:
    """Record that a shard finished its pass; True for the one that completes the set (it then
    sweeps and settles the deployment). A shard that is rerun counts once. False when the
    deployment was deleted meanwhile."""
    response = aws.conditional_response(_table().update_item,
                                        Key={"instance_id": instance_id, "deployment_id": deployment_id},
                                        UpdateExpression="ADD shards_done :me SET modified_at = :now",
                                        ConditionExpression="attribute_exists(deployment_id)",
                                        ExpressionAttributeValues={":me": {str(index)}, ":now": now_iso()},
                                        ReturnValues="UPDATED_NEW")
    return response is not None and len(response["Attributes"]["shards_done"]) >= count


def polled() -> list[dict]:
    """Deployments the poller looks at: stores that cannot notify (new files are found by
    listing), work handed over to a scorer (`rescan`), and runs in progress, in case their
    scorer died (on any path: backlog, shard or uploads)."""
    table, items = _table(), []
    query = {"FilterExpression": Attr("trigger").eq(subscriptions.POLLING) | Attr("rescan").eq(True)
             | Attr("status").eq(IN_PROGRESS)}
    while True:
        page = table.scan(**query)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
