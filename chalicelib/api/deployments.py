"""Batch deployment requests: create (check both connections, keep the keys secret, subscribe
to uploads, queue the first run), read with live status, list, delete.
"""
from __future__ import annotations

import uuid

from chalicelib.api import views
from chalicelib.api.http import Call
from chalicelib.api.schemas import NewDeployment, parse
from chalicelib.core import tasks
from chalicelib.core.clock import now_iso
from chalicelib.core.errors import BadRequest, Conflict, NotFound, field
from chalicelib.core.settings import get_settings
from chalicelib.state import connections, deployments, instances, models, subscriptions
from chalicelib.state.connections import Location
from chalicelib.state.deployments import choose_signature


def _check_batchable(signature: dict) -> None:
    for tensor in signature["inputs"]:
        shape = tensor["shape"]
        if shape is not None and (len(shape) == 0 or shape[0] is not None):
            raise BadRequest(f"Input tensor '{tensor['name']}' of signature '{signature['name']}' has shape "
                             f"{shape}, without a batch dimension; export the model with a None first "
                             "dimension to score batches.", target=field("signature_name"))


def _location(connection, place) -> Location:
    return Location(place.bucket, place.prefix, connection.connection.url.rstrip("/"),
                    connection.connection.region or "", connection.type)


def _check_locations(source: Location, target: Location) -> None:
    """Results must never be read back as inputs (each would be scored again, in a loop): the
    output may lie inside the input (its keys are then skipped), never the input inside the
    output. One bucket written two ways (URL case, port, slash, path or virtual-host style) is
    one bucket (connections.same_bucket)."""
    if not connections.same_bucket(source, target):
        return
    both = f"input {source.describe()} and output {target.describe()} are the same bucket"
    if not target.prefix:
        raise BadRequest(f"The {both}: give output.target.prefix (e.g. 'predictions/') so results are never "
                         "read back as inputs.", target=field("output.target.prefix"))
    if source.prefix.startswith(target.prefix):
        raise BadRequest(f"The {both}, and the input prefix lies inside the output prefix: results would be "
                         "read back as inputs. Use separate prefixes.", target=field("input.source.prefix"))


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
        "signature": signature, "input": source.as_item(), "output": target.as_item(),
        "status": deployments.INITIALIZING, "scored": 0, "failed": 0, "pending": 0,
        "created_at": now, "modified_at": now,
    }
    if not models.add_deployments(instance_id, model_id, 1):  # the model was deleted meanwhile: undo, and say so
        connections.delete_keys(deployment_id)
        instances.add(instance_id, "deployment_count", -1)
        raise NotFound(f"Published model {model_id} was deleted.", target={"type": "published_model", "id": model_id})
    deployments.put_new(item)
    # Subscribe before the first run lists the bucket, so no upload falls between the two;
    # a file seen both ways is scored once (the ledger).
    item["trigger"] = subscriptions.subscribe(instance_id, deployment_id, source, keys["input"])
    deployments.set_trigger(instance_id, deployment_id, item["trigger"])
    tasks.send(tasks.SCORE_DEPLOYMENT, instance_id=instance_id, deployment_id=deployment_id)
    return views.deployment(item, call.base_url)


def get(call: Call, instance_id: str, deployment_id: str, model_id: str | None = None) -> dict:
    return views.deployment(deployments.load(instance_id, deployment_id, model_id), call.base_url)


def list_page(call: Call, instance_id: str, model_id: str | None = None) -> dict:
    if model_id is not None:
        models.load(instance_id, model_id)
    url = f"{views.instance_url(call.base_url, instance_id)}" + (
        f"/published_models/{model_id}/deployments" if model_id else "/deployments")
    return views.page(call, lambda limit, start: deployments.page(instance_id, limit, start, model_id),
                      "deployment_id", render=lambda item: views.deployment(item, call.base_url), url=url)


def delete(call: Call, instance_id: str, deployment_id: str, model_id: str | None = None) -> None:
    """Stop scoring (runs see the item gone), drop the keys; outputs and the ledger stay."""
    item = deployments.load(instance_id, deployment_id, model_id)
    if not deployments.remove(instance_id, deployment_id):
        raise NotFound(f"Deployment {deployment_id} does not exist.")
    subscriptions.unsubscribe(deployment_id, Location.from_item(item["input"]), item.get("trigger", ""),
                              connections.load_keys(deployment_id)["input"])
    connections.delete_keys(deployment_id)
    instances.add(instance_id, "deployment_count", -1)
    models.add_deployments(instance_id, item["model_id"], -1)
