"""v3 JSON representations of stored items, with absolute URLs built from the request.

Stored items hold DynamoDB Decimals; views turn them into plain JSON numbers.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from chalicelib.settings import get_settings


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


def page(resources: list[dict], *, url: str, limit: int, next_start: str | None) -> dict:
    body: dict[str, Any] = {"limit": limit, "count": len(resources), "resources": resources,
                            "first": {"url": f"{url}?limit={limit}"}}
    if next_start:
        body["next"] = {"url": f"{url}?limit={limit}&start={next_start}"}
    return body
