"""Batch deployments: create (check both connections, keep the keys secret, queue the first
run), read with live status, list, delete.

The deployment item snapshots what scoring needs (model version, archive, chosen signature,
locations without keys), so a run never depends on the model item staying as it was.
Counters (scored, failed, pending) are changed only by the ledger's commits.
"""
from __future__ import annotations

import uuid

from boto3.dynamodb.conditions import Attr

from chalicelib import aws, connections, instances, leases, models, subscriptions, tasks, views
from chalicelib.clock import now_iso
from chalicelib.errors import BadRequest, Conflict, NotFound, field
from chalicelib.http import Call
from chalicelib.schemas import NewDeployment, parse
from chalicelib.settings import get_settings

INITIALIZING, IN_PROGRESS, SUCCESS, FAILED = "INITIALIZING", "DEPLOY_IN_PROGRESS", "SUCCESS", "FAILED"
# Which path is scoring: the backlog job (lists the bucket, large batches) or upload events.
BACKLOG, UPLOADS = "backlog", "uploads"


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


def _check_batchable(signature: dict) -> None:
    for tensor in signature["inputs"]:
        shape = tensor["shape"]
        if shape is not None and (len(shape) == 0 or shape[0] is not None):
            raise BadRequest(f"Input tensor '{tensor['name']}' of signature '{signature['name']}' has shape "
                             f"{shape}, without a batch dimension; export the model with a None first "
                             "dimension to score batches.", target=field("signature_name"))


def _location(connection, place) -> dict:
    return {"type": connection.type, "bucket": place.bucket, "prefix": place.prefix,
            "url": connection.connection.url.rstrip("/"), "region": connection.connection.region}


def _check_locations(source: dict, target: dict) -> None:
    """Results must never be read back as inputs (each would be scored again, in a loop): the
    output may lie inside the input (its keys are then skipped), never the input inside the
    output. One bucket written two ways (URL case, port, slash, path or virtual-host style) is
    one bucket (connections.same_bucket)."""
    if not connections.same_bucket(source, target):
        return
    both = f"input {_describe(source)} and output {_describe(target)} are the same bucket"
    if not target["prefix"]:
        raise BadRequest(f"The {both}: give output.target.prefix (e.g. 'predictions/') so results are never "
                         "read back as inputs.", target=field("output.target.prefix"))
    if source["prefix"].startswith(target["prefix"]):
        raise BadRequest(f"The {both}, and the input prefix lies inside the output prefix: results would be "
                         "read back as inputs. Use separate prefixes.", target=field("input.source.prefix"))


def _describe(location: dict) -> str:
    where = f" at {location['url']}" if location.get("url") else ""
    return f"(bucket '{location['bucket']}', prefix '{location['prefix']}'{where})"


def create(call: Call, instance_id: str, model_id: str | None = None) -> dict:
    request = parse(NewDeployment, call.json())
    if model_id is None:
        if request.published_model is None:
            raise BadRequest("Name the model to deploy in 'published_model': {\"guid\": ...}.",
                             target=field("published_model.guid"))
        model_id = request.published_model.guid
    model = models.load(instance_id, model_id)
    latest = model.get("latest_version")
    if not latest or latest["status"] != models.READY:
        state = latest["status"] if latest else "without content"
        raise Conflict(f"Published model {model_id} is {state}; deploy it once its content is uploaded and "
                       "inspected as ready.", target={"type": "published_model", "id": model_id})
    signature = choose_signature(latest["signatures"], request.signature_name)
    _check_batchable(signature)
    source = _location(request.input, request.input.source)
    target = _location(request.output, request.output.target)
    _check_locations(source, target)
    keys = {"input": request.input.connection.model_dump(include={"access_key", "secret_key"}),
            "output": request.output.connection.model_dump(include={"access_key", "secret_key"})}
    connections.check_input(source, keys["input"])
    connections.check_output(target, keys["output"])

    deployment_id = str(uuid.uuid4())
    instances.add(instance_id, "deployment_count", 1, limit=get_settings().deployment_limit)
    connections.save_keys(deployment_id, keys)
    now = now_iso()
    item = {
        "instance_id": instance_id, "deployment_id": deployment_id, "type": "batch",
        "name": request.name, "description": request.description,
        "model_id": model_id, "version_id": latest["version_id"], "archive_key": latest["archive_key"],
        "archive_sha256": latest.get("archive_sha256", ""),
        "model": {key: model.get(key, "") for key in ("name", "description", "author", "created_at",
                                                      "model_type", "runtime_environment")},
        "signature": signature, "input": source, "output": target,
        "status": INITIALIZING, "scored": 0, "failed": 0, "pending": 0,
        "created_at": now, "modified_at": now,
    }
    if not aws.conditionally(  # the model was deleted meanwhile: undo, and say so
            aws.table(get_settings().models_table).update_item,
            Key={"instance_id": instance_id, "model_id": model_id},
            UpdateExpression="ADD deployment_count :one", ConditionExpression="attribute_exists(model_id)",
            ExpressionAttributeValues={":one": 1}):
        connections.delete_keys(deployment_id)
        instances.add(instance_id, "deployment_count", -1)
        raise NotFound(f"Published model {model_id} was deleted.", target={"type": "published_model", "id": model_id})
    _table().put_item(Item=item)
    # Subscribe before the first run lists the bucket, so no upload falls between the two;
    # a file seen both ways is scored once (the ledger).
    item["trigger"] = subscriptions.subscribe(item, keys["input"])
    _table().update_item(Key={"instance_id": instance_id, "deployment_id": deployment_id},
                         UpdateExpression="SET #trigger = :trigger", ExpressionAttributeNames={"#trigger": "trigger"},
                         ExpressionAttributeValues={":trigger": item["trigger"]})
    tasks.send(tasks.SCORE_DEPLOYMENT, instance_id=instance_id, deployment_id=deployment_id)
    return views.deployment(item, call.base_url)


def load(instance_id: str, deployment_id: str, model_id: str | None = None) -> dict:
    item = _table().get_item(Key={"instance_id": instance_id, "deployment_id": deployment_id},
                             ConsistentRead=True).get("Item")
    if item is None or (model_id is not None and item["model_id"] != model_id):
        raise NotFound(f"Deployment {deployment_id} does not exist" + (f" for model {model_id}." if model_id else "."),
                       target={"type": "deployment", "id": deployment_id})
    return item


def get(call: Call, instance_id: str, deployment_id: str, model_id: str | None = None) -> dict:
    return views.deployment(load(instance_id, deployment_id, model_id), call.base_url)


def list_page(call: Call, instance_id: str, model_id: str | None = None) -> dict:
    if model_id is not None:
        models.load(instance_id, model_id)
    url = f"{views.instance_url(call.base_url, instance_id)}" + (
        f"/published_models/{model_id}/deployments" if model_id else "/deployments")
    return views.query_page(
        call, _table(), ("instance_id", instance_id), "deployment_id",
        render=lambda item: views.deployment(item, call.base_url), url=url,
        filter_expression=Attr("model_id").eq(model_id) if model_id else None,
    )


def delete(call: Call, instance_id: str, deployment_id: str, model_id: str | None = None) -> None:
    """Stop scoring (runs see the item gone), drop the keys; outputs and the ledger stay."""
    item = load(instance_id, deployment_id, model_id)
    if not aws.conditionally(_table().delete_item, Key={"instance_id": instance_id, "deployment_id": deployment_id},
                             ConditionExpression="attribute_exists(deployment_id)"):
        raise NotFound(f"Deployment {deployment_id} does not exist.")
    subscriptions.unsubscribe(item, connections.load_keys(deployment_id)["input"])
    connections.delete_keys(deployment_id)
    instances.add(instance_id, "deployment_count", -1)
    aws.table(get_settings().models_table).update_item(
        Key={"instance_id": instance_id, "model_id": item["model_id"]},
        UpdateExpression="ADD deployment_count :minus", ConditionExpression="attribute_exists(model_id)",
        ExpressionAttributeValues={":minus": -1})


def set_status(instance_id: str, deployment_id: str, status: str, *, failure: str | None = None,
               fields: dict | None = None, unless_rescan: bool = False, fence: dict | None = None) -> bool:
    """Change the status (and set other fields) of a deployment that still exists; False when it
    was deleted, with `unless_rescan` when uploads asked the backlog run for another pass, and
    with a scorer's `fence` (leases.Lease.fence) when that scorer no longer holds its lease."""
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
    names = {"#status": "status", **{f"#{name}": name for name in fields or {}}}
    if fence is not None:
        condition += f" AND {fence['ConditionExpression']}"
        names.update(fence["ExpressionAttributeNames"])
        values.update(fence["ExpressionAttributeValues"])
    return aws.conditionally(_table().update_item, Key={"instance_id": instance_id, "deployment_id": deployment_id},
                             UpdateExpression=update, ConditionExpression=condition,
                             ExpressionAttributeNames=names, ExpressionAttributeValues=values)


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
