"""v3 JSON representations of stored items, with absolute URLs built from the request.

Stored items hold DynamoDB Decimals; views turn them into plain JSON numbers.
"""
from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from chalicelib.core import clock
from chalicelib.core.errors import BadRequest, field
from chalicelib.core.settings import get_settings
from chalicelib.state.deployments import ScoringPath, Status

MAX_PAGE = 1000
MASK = "********"


def plain(value: Any) -> Any:
    """DynamoDB's Decimals and sets as JSON numbers and lists, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(item) for item in value]
    return value


def instance_url(base: str, instance_id: str) -> str:
    return f"{base}/v3/wml_instances/{instance_id}"


def model_url(base: str, instance_id: str, model_id: str) -> str:
    return f"{instance_url(base, instance_id)}/published_models/{model_id}"


def version_url(base: str, model_id: str, version_id: str) -> str:
    return f"{base}/v3/ml_assets/models/{model_id}/versions/{version_id}"


def _metadata(item: dict, url: str, guid: str) -> dict:
    return {"guid": guid, "url": url, "created_at": item["created_at"], "modified_at": item["modified_at"]}


def instance(item: dict, base: str) -> dict:
    settings = get_settings()
    url = instance_url(base, item["instance_id"])
    return {
        "metadata": _metadata(item, url, item["instance_id"]),
        "entity": {
            "name": item["name"],
            "source": "tfbatch",
            "status": item["status"],
            "plan": item["plan"],
            "region": settings.region,
            "published_models": {"url": f"{url}/published_models"},
            "deployments": {"url": f"{url}/deployments"},
            "usage": {
                "computation_time": {"current": plain(item["computation_time"])},
                "prediction_count": {"current": plain(item["prediction_count"])},
                "model_count": {"limit": settings.model_limit, "current": plain(item["model_count"])},
                "deployment_count": {"limit": settings.deployment_limit, "current": plain(item["deployment_count"])},
            },
        },
    }


def version(item: dict, base: str) -> dict:
    return {
        "url": version_url(base, item["model_id"], item["version_id"]),
        "guid": item["version_id"],
        "created_at": item["created_at"],
        "status": item["status"],
        **({"status_details": plain(item["status_details"])} if item.get("status_details") else {}),
        **({"signatures": plain(item["signatures"])} if item.get("signatures") else {}),
    }


def model(item: dict, base: str, *, latest: dict | None, deployment_count: int) -> dict:
    url = model_url(base, item["instance_id"], item["model_id"])
    entity = {
        "name": item["name"],
        "description": item.get("description", ""),
        "author": plain(item.get("author", {})),
        "model_type": item["model_type"],
        "runtime_environment": item["runtime_environment"],
        "status": latest["status"] if latest else "awaiting_content",
        "content_url": f"{url}/content",
        "deployments": {"count": deployment_count, "url": f"{url}/deployments"},
    }
    if latest:
        entity["latest_version"] = version(latest, base)
    return {"metadata": _metadata(item, url, item["model_id"]), "entity": entity}


def _page_args(call, check_start: Callable[[str], object], max_limit: int) -> tuple[int, str | None]:
    raw_limit = call.query("limit") or str(min(100, max_limit))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= max_limit:
        raise BadRequest(f"'limit' must be a whole number from 1 to {max_limit}.", target=field("limit"))
    start = call.query("start")
    if start is not None:
        try:
            start = base64.urlsafe_b64decode(start.encode()).decode()
            check_start(start)
        except ValueError:
            raise BadRequest("'start' is not a page token given by this API.", target=field("start")) from None
    return int(raw_limit), start


def page(call, fetch: Callable[[int, str | None], tuple[list[dict], bool]], sort_key: str, *,
         render: Callable[[dict], dict], url: str, check_start: Callable[[str], object] = uuid.UUID,
         max_limit: int = MAX_PAGE) -> dict:
    """One page in the v3 list shape, with first/next URLs (limit and start); `fetch(limit,
    start)` reads it from the store. A `start` token that `check_start` refuses (ValueError) is
    not one this API gave; `max_limit` keeps a page of large items under Lambda's 6 MB answer."""
    limit, start = _page_args(call, check_start, max_limit)
    shown, more = fetch(limit, start)
    body: dict[str, Any] = {"limit": limit, "count": len(shown), "resources": [render(item) for item in shown],
                            "first": {"url": f"{url}?limit={limit}"}}
    if more:
        token = base64.urlsafe_b64encode(shown[-1][sort_key].encode()).decode()
        body["next"] = {"url": f"{url}?limit={limit}&start={token}"}
    return body


def deployment_url(base: str, item: dict) -> str:
    return f"{model_url(base, item['instance_id'], item['model_id'])}/deployments/{item['deployment_id']}"


def _connection(location: dict, side: str) -> dict:
    place = {"bucket": location["bucket"], **({"prefix": location["prefix"]} if location["prefix"] else {})}
    return {"type": location["type"], "source" if side == "input" else "target": place,
            "connection": {"access_key": MASK, "secret_key": MASK, "url": location["url"]}}


def scoring_url(base: str, item: dict) -> str:
    """Where an online deployment scores (POST a payload there)."""
    return f"{instance_url(base, item['instance_id'])}/deployments/{item['deployment_id']}/online"


def _batch_details(item: dict) -> dict[str, Any]:
    scored, failed, pending = (int(item.get(name, 0)) for name in ("scored", "failed", "pending"))
    total = scored + failed + pending
    done = 1.0 if item["status"] == Status.SUCCESS else 0.0
    details: dict[str, Any] = {
        "status": item["status"], "total": total, "scored": scored, "failed": failed, "pending": pending,
        "progress": round((scored + failed) / total, 4) if total else done,
    }
    if item.get("path") and item["status"] == Status.IN_PROGRESS:  # which path is working now
        details["path"] = "backlog job" if item["path"] == ScoringPath.BACKLOG else "upload events"
    if item.get("failure"):
        details["failures"] = [item["failure"]]
    return details


def deployment(item: dict, base: str) -> dict:
    model = item["model"]
    published_model = model_url(base, item["instance_id"], item["model_id"])
    entity: dict[str, Any] = {
        "runtime_environment": model.get("runtime_environment", ""),
        "name": item["name"], "description": item.get("description", ""), "type": item.get("type", "batch"),
        "published_model": {
            "author": plain(model.get("author", {})), "name": model.get("name", ""),
            "url": published_model, "guid": item["model_id"],
            "description": model.get("description", ""), "created_at": model.get("created_at", ""),
        },
        "deployable_asset": {"url": published_model, "guid": item["model_id"], "type": "model"},
        "model_type": model.get("model_type", ""),
        "deployed_version": {"url": version_url(base, item["model_id"], item["version_id"]),
                             "guid": item["version_id"]},
        "signature_name": item["signature"]["name"] if item.get("signature") else item.get("signature_name", ""),
        "status": item["status"],
    }
    if entity["type"] == "online":
        entity["scoring_url"] = scoring_url(base, item)
        entity["status_details"] = {"status": item["status"], **({"failures": [item["failure"]]}
                                                                 if item.get("failure") else {})}
    else:
        entity["status_details"] = _batch_details(item)
        entity["input"] = _connection(item["input"], "input")
        entity["output"] = _connection(item["output"], "output")
    return {
        "metadata": {"guid": item["deployment_id"], "url": deployment_url(base, item),
                     "created_at": item["created_at"], "modified_at": item["modified_at"]},
        "entity": entity,
    }


def result_group(item: dict) -> dict:
    """One committed group of a batch deployment: the files it wrote in the output location, its
    counts and its first failures (at most 25; the errors file holds them all)."""
    return {"committed_at": clock.iso(datetime.fromtimestamp(float(item["committed_at"]), UTC)),
            "files": list(item["files"]), "scored": int(item["scored"]), "failed": int(item["failed"]),
            "records": int(item["records"]), "failures": plain(item["failures"])}
