"""Users' object stores: checking a connection, keeping its keys secret, opening it for data.

The keys are stored in Secrets Manager, one secret per deployment, and never returned,
logged or put in an error message. Checks use boto3 (control plane, one call each); the data
path opens the same store with obstore, which costs a third of boto3's CPU per request.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws
from chalicelib.errors import BadRequest
from chalicelib.settings import get_settings

WRITE_CHECK_MARK = ".tfbatch-write-check-"  # the probe object's name; never an input
_CHECK_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})


def endpoint(url: str) -> str | None:
    return url.rstrip("/") or None


def check_endpoint(side: str, url: str) -> None:
    """Refuse endpoints inside the service's own network (metadata service, loopback, private
    ranges): the service would call them with its own network position. The exceptions are the
    service's own store endpoint and the local stack, whose stores are on loopback."""
    settings = get_settings()
    host = urlsplit(url).hostname if url else None
    if host is None or settings.stage == "local" or endpoint(url) == settings.aws_endpoint:
        return
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        raise BadRequest(f"The {side} connection url's host '{host}' does not resolve.",
                         code=f"{side}_connection_failed", target={"type": "field", "name": side}) from None
    if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
        raise BadRequest(f"The {side} connection url points into a private network ({host}); "
                         "give the store's public endpoint.", code=f"{side}_connection_failed",
                         target={"type": "field", "name": side})


def s3_client(location: dict, keys: dict) -> Any:
    """boto3 on the user's store with the user's keys (control plane: checks, notifications)."""
    return _s3_client(endpoint(location.get("url", "")), location.get("region") or get_settings().region,
                      keys["access_key"], keys["secret_key"])


@functools.lru_cache(maxsize=32)
def _s3_client(url: str | None, region: str, access_key: str, secret_key: str) -> Any:
    """Cached: building a boto3 client costs tens of milliseconds, and one deployment's creation
    uses the input's client twice (check, subscription). The keys stay in this process only."""
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        region_name=region, config=_CHECK_CONFIG)


def _refusal(side: str, action: str, location: dict, error: Exception) -> BadRequest:
    where = f"bucket '{location['bucket']}'" + (f" at {location['url']}" if location.get("url") else "")
    if isinstance(error, ClientError):
        detail = f"{error.response['Error'].get('Code', 'Error')}: {error.response['Error'].get('Message', '')}"
    else:
        detail = type(error).__name__ + (": could not connect" if "connect" in str(error).lower() else "")
    return BadRequest(f"The {side} connection failed: {action} {where} with the given keys was refused "
                      f"({detail.strip()}). Check the bucket, url and keys.",
                      code=f"{side}_connection_failed", target={"type": "field", "name": side})


def check_input(location: dict, keys: dict) -> None:
    check_endpoint("input", location["url"])
    try:
        s3_client(location, keys).list_objects_v2(Bucket=location["bucket"], Prefix=location["prefix"], MaxKeys=1)
    except (ClientError, BotoCoreError) as error:
        raise _refusal("input", "listing", location, error) from None


def check_output(location: dict, keys: dict) -> None:
    check_endpoint("output", location["url"])
    probe = f"{location['prefix']}{WRITE_CHECK_MARK}{uuid.uuid4().hex}"
    client = s3_client(location, keys)
    try:
        client.put_object(Bucket=location["bucket"], Key=probe, Body=b"")
        client.delete_object(Bucket=location["bucket"], Key=probe)
    except (ClientError, BotoCoreError) as error:
        raise _refusal("output", "writing to", location, error) from None


def secret_id(deployment_id: str) -> str:
    return f"{get_settings().secret_prefix}/deployments/{deployment_id}"


def save_keys(deployment_id: str, keys: dict[str, dict]) -> None:
    aws.client("secretsmanager").create_secret(Name=secret_id(deployment_id),
                                               SecretString=orjson.dumps(keys).decode())


def load_keys(deployment_id: str) -> dict[str, dict]:
    """The deployment's keys. They never change for a deployment id (new keys mean a new
    deployment), so each process reads them once; a deleted deployment is noticed by its item."""
    return {side: dict(keys) for side, keys in _keys(deployment_id).items()}


@functools.lru_cache(maxsize=256)
def _keys(deployment_id: str) -> dict[str, dict]:
    raw = aws.client("secretsmanager").get_secret_value(SecretId=secret_id(deployment_id))["SecretString"]
    return orjson.loads(raw)


def delete_keys(deployment_id: str) -> None:
    _keys.cache_clear()  # this process forgets them too (deletions are rare: clearing all is fine)
    sm = aws.client("secretsmanager")
    try:
        sm.delete_secret(SecretId=secret_id(deployment_id), ForceDeleteWithoutRecovery=True)
    except sm.exceptions.ResourceNotFoundException:
        pass


def object_store(location: dict, keys: dict):
    """An obstore S3Store on the location's bucket (data path: lists, gets and puts).

    Stores are kept per process by bucket, endpoint and keys: a warm invocation reuses its
    client and open connections instead of paying for a new client (about 10 ms here) and new
    connections (a TLS handshake each on AWS) on every run."""
    return _store(location["bucket"], endpoint(location.get("url", "")),
                  location.get("region") or get_settings().region, keys["access_key"], keys["secret_key"])


@functools.lru_cache(maxsize=32)
def _store(bucket: str, url: str | None, region: str, access_key: str, secret_key: str):
    from obstore.store import S3Store

    options: dict[str, Any] = {"region": region, "access_key_id": access_key, "secret_access_key": secret_key}
    if url:
        options.update(endpoint=url, virtual_hosted_style_request=False,
                       client_options={"allow_http": url.startswith("http://"), "timeout": "60s"})
    return S3Store(bucket, **options)
