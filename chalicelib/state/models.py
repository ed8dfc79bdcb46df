"""Published models and their versions: the only code that knows the models and versions tables
and the models bucket.

A model item keeps a copy of its latest version, so lists need no extra reads; a version is
`inspecting` until the TensorFlow side records its signatures and marks it ready or invalid.
"""
from __future__ import annotations

from enum import StrEnum

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from chalicelib.core import aws
from chalicelib.core.clock import now_iso
from chalicelib.core.errors import NotFound
from chalicelib.core.settings import get_settings
from chalicelib.state import pages


class VersionStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"  # a two-step upload: the archive goes straight to the bucket
    PENDING = "inspecting"
    READY = "ready"
    INVALID = "invalid"


AWAITING_UPLOAD, PENDING, READY, INVALID = VersionStatus
UPLOAD_SECONDS = 900  # how long a two-step upload's form may be used


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


def put_new(item: dict) -> None:
    _models().put_item(Item=item)


def page(instance_id: str, limit: int, start: str | None) -> tuple[list[dict], bool]:
    """One page of an instance's published models, and whether more follow."""
    return pages.query(_models(), ("instance_id", instance_id), "model_id", limit, start)


def remove_unused(instance_id: str, model_id: str) -> bool:
    """Delete a model no deployment uses, with its versions and archives; False when one does."""
    if not aws.conditionally(
        _models().delete_item,
        Key={"instance_id": instance_id, "model_id": model_id},
        ConditionExpression="attribute_exists(model_id) AND deployment_count = :zero",
        ExpressionAttributeValues={":zero": 0},
    ):
        return False
    _delete_versions(model_id)
    return True


def add_deployments(instance_id: str, model_id: str, amount: int) -> bool:
    """Count deployments of a model (a model in use cannot be deleted); False when it is gone."""
    return aws.conditionally(
        _models().update_item, Key={"instance_id": instance_id, "model_id": model_id},
        UpdateExpression="ADD deployment_count :amount", ConditionExpression="attribute_exists(model_id)",
        ExpressionAttributeValues={":amount": amount})


def _delete_versions(model_id: str) -> None:
    result = _versions().query(KeyConditionExpression=Key("model_id").eq(model_id))
    for version in result["Items"]:
        delete_archive(version["archive_key"])
        _versions().delete_item(Key={"model_id": model_id, "version_id": version["version_id"]})


def store_archive(stream, archive_key: str) -> None:
    aws.client("s3").upload_fileobj(stream, get_settings().models_bucket, archive_key)


def delete_archive(archive_key: str) -> None:
    aws.client("s3").delete_object(Bucket=get_settings().models_bucket, Key=archive_key)


def upload_form(archive_key: str, max_bytes: int) -> dict:
    """A presigned POST form for one archive, straight into the models bucket: this key only,
    at most `max_bytes` (S3 refuses more), for UPLOAD_SECONDS. The API never sees the bytes."""
    return aws.client("s3").generate_presigned_post(
        get_settings().models_bucket, archive_key, Conditions=[["content-length-range", 1, max_bytes]],
        ExpiresIn=UPLOAD_SECONDS)


def await_upload(version: dict) -> None:
    """Record a version whose archive is being uploaded straight to the bucket, and point the
    model at it, so the next read of the model notices the upload once it lands."""
    _versions().put_item(Item=version)
    if not aws.conditionally(_models().update_item,
                             Key={"instance_id": version["instance_id"], "model_id": version["model_id"]},
                             UpdateExpression="SET awaiting_upload = :id",
                             ConditionExpression="attribute_exists(model_id)",
                             ExpressionAttributeValues={":id": version["version_id"]}):
        raise NotFound(f"Published model {version['model_id']} was deleted.",
                       target={"type": "published_model", "id": version["model_id"]})


def archive_landed(archive_key: str) -> bool:
    try:
        aws.client("s3").head_object(Bucket=get_settings().models_bucket, Key=archive_key)
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def start_inspection(version: dict) -> dict | None:
    """A directly uploaded archive has landed: its version is inspected next and becomes the
    model's latest; the model item as it is now. None when another request did this first."""
    if not aws.conditionally(
            _versions().update_item, Key={"model_id": version["model_id"], "version_id": version["version_id"]},
            UpdateExpression="SET #status = :pending", ConditionExpression="#status = :awaiting",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":pending": PENDING, ":awaiting": AWAITING_UPLOAD}):
        return None
    version = {**version, "status": PENDING}
    updated = aws.conditional_response(
        _models().update_item, Key={"instance_id": version["instance_id"], "model_id": version["model_id"]},
        UpdateExpression="SET latest_version = :version, modified_at = :now REMOVE awaiting_upload",
        ConditionExpression="attribute_exists(model_id)",
        ExpressionAttributeValues={":version": version, ":now": now_iso()}, ReturnValues="ALL_NEW")
    if updated is None:
        raise NotFound(f"Published model {version['model_id']} was deleted.",
                       target={"type": "published_model", "id": version["model_id"]})
    return updated["Attributes"]


def record_digest(model_id: str, version_id: str, sha256: str) -> dict:
    """The SHA-256 of a directly uploaded archive, taken when the inspection first fetched it;
    every later load verifies against it. Recorded once: the version as stored afterwards."""
    aws.conditionally(_versions().update_item, Key={"model_id": model_id, "version_id": version_id},
                      UpdateExpression="SET archive_sha256 = :sha",
                      ConditionExpression="archive_sha256 = :none",
                      ExpressionAttributeValues={":sha": sha256, ":none": ""})
    return load_version(model_id, version_id)


def add_version(version: dict) -> dict | None:
    """Store a new version and make it the model's latest; the model item as it is now. None
    when a version of that id exists already (ids are written once)."""
    if not aws.conditionally(_versions().put_item, Item=version,
                             ConditionExpression="attribute_not_exists(version_id)"):
        return None
    return _models().update_item(
        Key={"instance_id": version["instance_id"], "model_id": version["model_id"]},
        UpdateExpression="SET latest_version = :version, modified_at = :now",
        ConditionExpression="attribute_exists(model_id)",
        ExpressionAttributeValues={":version": version, ":now": version["created_at"]},
        ReturnValues="ALL_NEW",
    )["Attributes"]


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
