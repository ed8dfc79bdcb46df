"""Deployment requests: create (batch: check both connections, keep the keys secret, subscribe
to uploads, queue the first run; online: ready at once), read with live status, list, delete.
"""
from __future__ import annotations

import re
import uuid

from chalicelib.api import views
from chalicelib.api.http import Answer, Call
from chalicelib.api.schemas import NewDeployment, parse
from chalicelib.core import tasks
from chalicelib.core.clock import now_iso
from chalicelib.core.errors import BadRequest, Conflict, NotFound, field
from chalicelib.core.settings import get_settings
from chalicelib.state import connections, deployments, instances, ledger, models, subscriptions
from chalicelib.state.connections import Location
from chalicelib.state.deployments import choose_signature


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


_ASSET_URL = re.compile(r"/published_models/([0-9a-fA-F-]{36})/?$")


def _model_id(request: NewDeployment) -> str:
    """The model named on the instance path: `published_model.guid`, or the model's URL in
    `deployable_asset_url` (the IBM client's way)."""
    if request.published_model is not None:
        return request.published_model.guid
    if request.deployable_asset_url:
        found = _ASSET_URL.search(request.deployable_asset_url.partition("?")[0])
        if found is None:
            raise BadRequest("'deployable_asset_url' must be a published model's URL, ending in "
                             "/published_models/<guid>.", target=field("deployable_asset_url"))
        return found.group(1).lower()
    raise BadRequest("Name the model to deploy in 'published_model': {\"guid\": ...}.",
                     target=field("published_model.guid"))


def create(call: Call, instance_id: str, model_id: str | None = None) -> dict:
    """A batch deployment (check both connections, keep the keys secret, subscribe to uploads,
    queue the first run) or an online one (ready at once: the model is inspected already)."""
    request = parse(NewDeployment, call.json())
    model_id = model_id or _model_id(request)
    model = models.load(instance_id, model_id)
    latest = model.get("latest_version")
    inspecting = request.type == "online" and latest is not None and latest["status"] == models.PENDING
    if not latest or (latest["status"] != models.READY and not inspecting):
        state = latest["status"] if latest else "without content"
        raise Conflict(f"Published model {model_id} is {state}; deploy it once its content is uploaded and "
                       "inspected as ready.", target={"type": "published_model", "id": model_id})
    signature = None if inspecting else _signature(latest, request.signature_name)
    if request.type == "batch":
        for side in ("input", "output"):
            if getattr(request, side) is None:
                raise BadRequest(f"A batch deployment needs '{side}': where to read and write files.",
                                 target=field(side))
    deployment_id = str(uuid.uuid4())
    now = now_iso()
    item = {
        "instance_id": instance_id, "deployment_id": deployment_id, "type": request.type,
        "name": request.name, "description": request.description,
        "model_id": model_id, "version_id": latest["version_id"], "archive_key": latest["archive_key"],
        "archive_sha256": latest.get("archive_sha256", ""),
        "model": {key: model.get(key, "") for key in ("name", "description", "author", "created_at",
                                                      "model_type", "runtime_environment")},
        "signature": signature, "created_at": now, "modified_at": now,
    }
    if request.type == "batch":
        return _create_batch(call, request, item)
    _count_deployment(instance_id, model_id)
    if inspecting:  # ready once its version is (the IBM client deploys right after uploading, and polls)
        item.update(status=deployments.IN_PROGRESS, signature_name=request.signature_name or "")
        del item["signature"]
        deployments.put_new(item)
        return Answer(202, views.deployment(item, call.base_url))
    item["status"] = deployments.ONLINE_READY
    deployments.put_new(item)
    return views.deployment(item, call.base_url)


def _signature(version: dict, requested: str | None) -> dict:
    return deployments.batchable(choose_signature(version["signatures"], requested))


def _settled(item: dict) -> dict:
    return deployments.settled_online(item, models.load_version)


def _count_deployment(instance_id: str, model_id: str) -> None:
    """Count the deployment on its instance (within the limit) and its model (which may not be
    deleted while in use); a model deleted meanwhile undoes the first and says so."""
    instances.add(instance_id, "deployment_count", 1, limit=get_settings().deployment_limit)
    if not models.add_deployments(instance_id, model_id, 1):
        instances.add(instance_id, "deployment_count", -1)
        raise NotFound(f"Published model {model_id} was deleted.", target={"type": "published_model", "id": model_id})


def _create_batch(call: Call, request: NewDeployment, item: dict) -> dict:
    instance_id, deployment_id = item["instance_id"], item["deployment_id"]
    source = _location(request.input, request.input.source)
    target = _location(request.output, request.output.target)
    _check_locations(source, target)
    keys = {"input": request.input.connection.model_dump(include={"access_key", "secret_key"}),
            "output": request.output.connection.model_dump(include={"access_key", "secret_key"})}
    connections.check_input(source, keys["input"])
    connections.check_output(target, keys["output"])
    _count_deployment(instance_id, item["model_id"])
    connections.save_keys(deployment_id, keys)
    item.update({"input": source.as_item(), "output": target.as_item(), "status": deployments.INITIALIZING,
                 "scored": 0, "failed": 0, "pending": 0})
    deployments.put_new(item)
    # Subscribe before the first run lists the bucket, so no upload falls between the two;
    # a file seen both ways is scored once (the ledger).
    item["trigger"] = subscriptions.subscribe(instance_id, deployment_id, source, keys["input"])
    deployments.set_trigger(instance_id, deployment_id, item["trigger"])
    tasks.send(tasks.SCORE_DEPLOYMENT, instance_id=instance_id, deployment_id=deployment_id)
    return views.deployment(item, call.base_url)


def get(call: Call, instance_id: str, deployment_id: str, model_id: str | None = None) -> dict:
    return views.deployment(_settled(deployments.load(instance_id, deployment_id, model_id)), call.base_url)


def list_page(call: Call, instance_id: str, model_id: str | None = None) -> dict:
    if model_id is not None:
        models.load(instance_id, model_id)
    url = f"{views.instance_url(call.base_url, instance_id)}" + (
        f"/published_models/{model_id}/deployments" if model_id else "/deployments")
    return views.page(call, lambda limit, start: deployments.page(instance_id, limit, start, model_id),
                      "deployment_id", render=lambda item: views.deployment(_settled(item), call.base_url), url=url)


def result_files(call: Call, instance_id: str, deployment_id: str) -> dict:
    """A batch deployment's committed groups, newest first: which files each wrote, its counts
    and first failures. Read from the service's own ledger, so a user (and the Dashboard) sees
    results and failures without handing the output store's keys back to the page."""
    item = deployments.load(instance_id, deployment_id)
    if item.get("type", "batch") != "batch":
        raise BadRequest(f"Deployment {deployment_id} is online; it writes no result files.",
                         target={"type": "deployment", "id": deployment_id})
    url = f"{views.instance_url(call.base_url, instance_id)}/deployments/{deployment_id}/result_files"
    return views.page(call, lambda limit, start: ledger.newest_files(deployment_id, limit, start), ledger.GROUP_KEY,
                      render=views.result_group, url=url, check_start=_files_page_token,
                      max_limit=RESULT_FILES_PAGE)


# A group's entry is at most ~40 KB (25 failures of a 1 KB key and a 500-byte message), a few
# times that once JSON escapes control characters: 50 a page stays well under Lambda's 6 MB.
RESULT_FILES_PAGE = 50


def _files_page_token(start: str) -> None:
    if not ledger.FILES_SORT_KEY.fullmatch(start):
        raise ValueError(start)


def delete(call: Call, instance_id: str, deployment_id: str, model_id: str | None = None) -> None:
    """Stop scoring (runs see the item gone), drop the keys; outputs and the ledger stay."""
    item = deployments.load(instance_id, deployment_id, model_id)
    if not deployments.remove(instance_id, deployment_id):
        raise NotFound(f"Deployment {deployment_id} does not exist.")
    if item.get("type", "batch") == "batch":
        subscriptions.unsubscribe(deployment_id, Location.from_item(item["input"]), item.get("trigger", ""),
                                  connections.load_keys(deployment_id)["input"])
        connections.delete_keys(deployment_id)
    instances.add(instance_id, "deployment_count", -1)
    models.add_deployments(instance_id, item["model_id"], -1)
