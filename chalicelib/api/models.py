"""Published model requests: create from metadata, read, list, delete, and upload content.

Each upload of a SavedModel archive is a new version, checked (safe entries, size limits)
before it is stored, then queued for inspection by the TensorFlow side. The IBM client takes
another path to the same items (`create_asset`, `upload_version`): it creates the model under
/v3/ml_assets/models with its framework, then PUTs the archive to the version URL it was given.
"""
from __future__ import annotations

import hashlib
import io
import re
import uuid

from chalicelib.api import views
from chalicelib.api.http import Call
from chalicelib.api.schemas import NewAsset, NewModel, parse
from chalicelib.core import archives, tasks
from chalicelib.core.clock import now_iso
from chalicelib.core.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.state import instances, models

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ARCHIVE_TYPES = ["application/gzip", "application/x-gzip", "application/x-tar", "application/zip",
                 "application/octet-stream"]


def _view(call: Call, item: dict) -> dict:
    return views.model(item, call.base_url, latest=item.get("latest_version"),
                       deployment_count=int(item.get("deployment_count", 0)))


def create(call: Call, instance_id: str) -> dict:
    return _view(call, _create(instance_id, parse(NewModel, call.json())))


def create_asset(call: Call) -> dict:
    """POST /v3/ml_assets/models (the IBM client): the model, and the URL to PUT its content to."""
    item = _create(call.instance_id, parse(NewAsset, call.json()).as_model())
    view = _view(call, item)
    version_id = str(uuid.uuid4())
    version_url = views.version_url(call.base_url, item["model_id"], version_id)
    view["entity"]["model_version"] = {"guid": version_id, "content_url": f"{version_url}/content"}
    return view


def _create(instance_id: str, request: NewModel) -> dict:
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
    models.put_new(item)
    return item


def get(call: Call, instance_id: str, model_id: str) -> dict:
    return _view(call, _noticed(models.load(instance_id, model_id)))


def start_upload(call: Call, instance_id: str, model_id: str) -> dict:
    """The two-step upload, for archives larger than API Gateway passes (10 MB): a new version,
    and a form to POST its archive with straight to the models bucket (this key only, at most
    TFBATCH_MAX_ARCHIVE_BYTES, for models.UPLOAD_SECONDS). The next read of the model (or of the
    version) after the archive lands queues its inspection, which checks it like any upload."""
    model = models.load(instance_id, model_id)
    if model.get("awaiting_upload") and models.load_version(model_id, model["awaiting_upload"])["status"] == \
            models.AWAITING_UPLOAD:
        raise Conflict(f"Published model {model_id} has an upload under way (version {model['awaiting_upload']}); "
                       "finish it, or wait for its form to expire, before starting another.",
                       target={"type": "model_version", "id": model["awaiting_upload"]})
    version_id = str(uuid.uuid4())
    version = {"model_id": model_id, "version_id": version_id, "instance_id": instance_id,
               "archive_key": f"models/{instance_id}/{model_id}/{version_id}/model.archive",
               "archive_sha256": "", "upload": "direct", "status": models.AWAITING_UPLOAD, "created_at": now_iso()}
    models.await_upload(version)
    max_bytes = get_settings().max_archive_bytes
    form = models.upload_form(version["archive_key"], max_bytes)
    return {"version": views.version(version, call.base_url),
            "upload": {"method": "POST", "url": form["url"], "fields": form["fields"], "file_field": "file",
                       "max_bytes": max_bytes, "expires_in": models.UPLOAD_SECONDS}}


def _noticed(item: dict) -> dict:
    """The model as it stands once an archive uploaded straight to the bucket is noticed: its
    version inspected next, and the model's latest."""
    version_id = item.get("awaiting_upload")
    if not version_id:
        return item
    version = models.load_version(item["model_id"], version_id)
    try:
        landed = version["status"] == models.AWAITING_UPLOAD and models.archive_landed(version["archive_key"])
    except Exception:  # the store cannot say now: the model as it is, and the next read asks again
        logger.warning("could not check for an uploaded archive", exc_info=True,
                       extra={"model_id": item["model_id"], "version_id": version_id})
        return item
    if not landed:
        return item
    updated = models.start_inspection(version)
    if updated is None:  # another request noticed it first
        return models.load(item["instance_id"], item["model_id"])
    tasks.send(tasks.INSPECT_MODEL, instance_id=item["instance_id"], model_id=item["model_id"], version_id=version_id)
    return updated


def list_page(call: Call, instance_id: str) -> dict:
    return views.page(call, lambda limit, start: models.page(instance_id, limit, start), "model_id",
                      render=lambda item: _view(call, item),
                      url=f"{views.instance_url(call.base_url, instance_id)}/published_models")


def delete(call: Call, instance_id: str, model_id: str) -> None:
    models.load(instance_id, model_id)
    if not models.remove_unused(instance_id, model_id):
        raise Conflict(f"Published model {model_id} is used by deployments; delete them first.",
                       target={"type": "published_model", "id": model_id})
    instances.add(instance_id, "model_count", -1)


def upload_content(call: Call, instance_id: str, model_id: str) -> dict:
    """Check the archive, store it as a new version, and queue its inspection."""
    return _view(call, _store_version(call, instance_id, model_id, str(uuid.uuid4())))


def upload_version(call: Call, model_id: str, version_id: str) -> dict:
    """PUT /v3/ml_assets/models/{model}/versions/{version}/content (the IBM client): the same,
    under the version id the model's creation handed out."""
    if not _UUID.match(version_id):
        raise BadRequest("The version id must be a lowercase UUID, as given in 'content_url'.",
                         target={"type": "version", "id": version_id[:64]})
    models.load(call.instance_id, model_id)  # another instance's model: as if absent
    return _view(call, _store_version(call, call.instance_id, model_id, version_id))


def _store_version(call: Call, instance_id: str, model_id: str, version_id: str) -> dict:
    settings = get_settings()
    models.load(instance_id, model_id)
    body = call.request.raw_body or b""
    if len(body) > settings.max_archive_bytes:
        raise PayloadTooLarge(f"The archive is {len(body)} bytes; the limit is {settings.max_archive_bytes}.",
                              target={"type": "body"})
    stream = io.BytesIO(body)
    try:
        archives.check(stream, archives.configured_limits())
        kind = archives.archive_format(body[:512])
    except archives.ArchiveError as error:
        raise BadRequest(str(error), code="invalid_archive", target={"type": "body"}) from None
    digest = hashlib.sha256(body).hexdigest()
    # Named by its digest: an upload refused below (the version has content already) can never
    # overwrite the archive the version holds, which would then fail its digest check for good.
    archive_key = f"models/{instance_id}/{model_id}/{version_id}/{digest}.{kind}"
    stream.seek(0)
    models.store_archive(stream, archive_key)
    version = {
        "model_id": model_id,
        "version_id": version_id,
        "instance_id": instance_id,
        "archive_key": archive_key,
        "archive_sha256": digest,  # checked before every extraction (engine)
        "status": models.PENDING,
        "created_at": now_iso(),
    }
    item = models.add_version(version)
    if item is None:
        if models.load_version(model_id, version_id).get("archive_key") != archive_key:
            models.delete_archive(archive_key)  # refused: no version refers to it
        raise Conflict(f"Version {version_id} of model {model_id} has content already; upload again to the "
                       "model's content URL for a new version.", target={"type": "model_version", "id": version_id})
    tasks.send(tasks.INSPECT_MODEL, instance_id=instance_id, model_id=model_id, version_id=version_id)
    return item


def delete_asset(call: Call, model_id: str) -> None:
    """DELETE /v3/ml_assets/models/{model} (the IBM client): as DELETE of the published model."""
    delete(call, call.instance_id, model_id)


def get_version(call: Call, model_id: str, version_id: str) -> dict:
    version = models.load_version(model_id, version_id)
    if version["instance_id"] != call.instance_id:  # another instance's version: as if absent
        raise NotFound(f"Version {version_id} of model {model_id} does not exist.",
                       target={"type": "model_version", "id": version_id})
    if version["status"] == models.AWAITING_UPLOAD:
        _noticed(models.load(call.instance_id, model_id))
        version = models.load_version(model_id, version_id)
    return views.version(version, call.base_url)
