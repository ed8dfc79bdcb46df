"""The model repository: published models, their uploaded versions, and inspection results.

A model is created from metadata, then gets content: each upload of a SavedModel archive is a
new version, checked (safe entries, size limits) before it is stored, then inspected by the
TensorFlow side, which records the serving signatures and marks the version ready or invalid.
The model item keeps a copy of its latest version so lists need no extra reads.
"""
from __future__ import annotations

import hashlib
import io
import uuid

from boto3.dynamodb.conditions import Key

from chalicelib import archives, aws, instances, tasks, views
from chalicelib.clock import now_iso
from chalicelib.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from chalicelib.http import Call
from chalicelib.schemas import NewModel, parse
from chalicelib.settings import get_settings

PENDING, READY, INVALID = "inspecting", "ready", "invalid"
ARCHIVE_TYPES = ["application/gzip", "application/x-gzip", "application/x-tar", "application/zip",
                 "application/octet-stream"]


def archive_limits() -> archives.Limits:
    settings = get_settings()
    return archives.Limits(settings.max_inflated_bytes, settings.max_archive_entries,
                           settings.max_compression_ratio)


def _models():
    return aws.table(get_settings().models_table)


def _versions():
    return aws.table(get_settings().versions_table)


def load(instance_id: str, model_id: str) -> dict:
    item = _models().get_item(Key={"instance_id": instance_id, "model_id": model_id}).get("Item")
    if item is None:
        raise NotFound(f"Published model {model_id} does not exist in this instance.",
                       target={"type": "published_model", "id": model_id})
    return item


def _view(call: Call, item: dict) -> dict:
    return views.model(item, call.base_url, latest=item.get("latest_version"),
                       deployment_count=int(item.get("deployment_count", 0)))


def create(call: Call, instance_id: str) -> dict:
    request = parse(NewModel, call.json())
    instances.add(instance_id, "model_count", 1, limit=get_settings().model_limit)
    now = now_iso()
    item = {
        "instance_id": instance_id,
        "model_id": str(uuid.uuid4()),
        "name": request.name,
        "description": request.description,
        "model_type": request.model_type,
        "runtime_environment": request.runtime_environment,
        "author": request.author.model_dump(),
        "deployment_count": 0,
        "created_at": now,
        "modified_at": now,
    }
    _models().put_item(Item=item)
    return _view(call, item)


def get(call: Call, instance_id: str, model_id: str) -> dict:
    return _view(call, load(instance_id, model_id))


def list_page(call: Call, instance_id: str) -> dict:
    return views.query_page(
        call, _models(), ("instance_id", instance_id), "model_id", render=lambda item: _view(call, item),
        url=f"{views.instance_url(call.base_url, instance_id)}/published_models",
    )


def delete(call: Call, instance_id: str, model_id: str) -> None:
    load(instance_id, model_id)
    if not aws.conditionally(
        _models().delete_item,
        Key={"instance_id": instance_id, "model_id": model_id},
        ConditionExpression="attribute_exists(model_id) AND deployment_count = :zero",
        ExpressionAttributeValues={":zero": 0},
    ):
        raise Conflict(f"Published model {model_id} is used by deployments; delete them first.",
                       target={"type": "published_model", "id": model_id})
    instances.add(instance_id, "model_count", -1)
    _delete_versions(model_id)


def _delete_versions(model_id: str) -> None:
    settings = get_settings()
    result = _versions().query(KeyConditionExpression=Key("model_id").eq(model_id))
    s3 = aws.client("s3")
    for version in result["Items"]:
        s3.delete_object(Bucket=settings.models_bucket, Key=version["archive_key"])
        _versions().delete_item(Key={"model_id": model_id, "version_id": version["version_id"]})


def upload_content(call: Call, instance_id: str, model_id: str) -> dict:
    """Check the archive, store it as a new version, and queue its inspection."""
    settings = get_settings()
    item = load(instance_id, model_id)
    body = call.request.raw_body or b""
    if len(body) > settings.max_archive_bytes:
        raise PayloadTooLarge(f"The archive is {len(body)} bytes; the limit is {settings.max_archive_bytes}.",
                              target={"type": "body"})
    stream = io.BytesIO(body)
    try:
        archives.check(stream, archive_limits())
        kind = archives.archive_format(body[:512])
    except archives.ArchiveError as error:
        raise BadRequest(str(error), code="invalid_archive", target={"type": "body"}) from None
    version_id = str(uuid.uuid4())
    archive_key = f"models/{instance_id}/{model_id}/{version_id}/model.{kind}"
    stream.seek(0)
    aws.client("s3").upload_fileobj(stream, settings.models_bucket, archive_key)
    now = now_iso()
    version = {
        "model_id": model_id,
        "version_id": version_id,
        "instance_id": instance_id,
        "archive_key": archive_key,
        "archive_sha256": hashlib.sha256(body).hexdigest(),  # checked before every extraction (engine)
        "status": PENDING,
        "created_at": now,
    }
    _versions().put_item(Item=version)
    item = _models().update_item(
        Key={"instance_id": instance_id, "model_id": model_id},
        UpdateExpression="SET latest_version = :version, modified_at = :now",
        ConditionExpression="attribute_exists(model_id)",
        ExpressionAttributeValues={":version": version, ":now": now},
        ReturnValues="ALL_NEW",
    )["Attributes"]
    tasks.send(tasks.INSPECT_MODEL, instance_id=instance_id, model_id=model_id, version_id=version_id)
    return _view(call, item)


def load_version(model_id: str, version_id: str) -> dict:
    item = _versions().get_item(Key={"model_id": model_id, "version_id": version_id}).get("Item")
    if item is None:
        raise NotFound(f"Version {version_id} of model {model_id} does not exist.",
                       target={"type": "model_version", "id": version_id})
    return item


def latest_ready_version(model_id: str) -> dict:
    """The newest version of a published model that inspection accepted (for `tfbatch score`)."""
    found = _versions().query(KeyConditionExpression=Key("model_id").eq(model_id))["Items"]
    ready = [version for version in found if version["status"] == READY]
    if not ready:
        raise NotFound(f"Model {model_id} has no version ready to score"
                       f"{' (yet)' if found else ''}.", target={"type": "model", "id": model_id})
    return max(ready, key=lambda version: version["created_at"])


def get_version(call: Call, model_id: str, version_id: str) -> dict:
    version = load_version(model_id, version_id)
    if version["instance_id"] != call.instance_id:  # another instance's version: as if absent
        raise NotFound(f"Version {version_id} of model {model_id} does not exist.",
                       target={"type": "model_version", "id": version_id})
    return views.version(version, call.base_url)


def record_inspection(model_id: str, version_id: str, *, status: str, details: dict,
                      signatures: list[dict] | None = None) -> None:
    """Store what inspection found, on the version and on the model if it is still the latest."""
    version = load_version(model_id, version_id)
    version.update(status=status, status_details=details)
    if signatures is not None:
        version["signatures"] = signatures
    _versions().put_item(Item=version)
    # Only while it is still the latest: after a newer upload or a deletion the version item is enough.
    aws.conditionally(
        _models().update_item,
        Key={"instance_id": version["instance_id"], "model_id": model_id},
        UpdateExpression="SET latest_version = :version, modified_at = :now",
        ConditionExpression="latest_version.version_id = :id",
        ExpressionAttributeValues={":version": version, ":id": version_id, ":now": now_iso()},
    )
