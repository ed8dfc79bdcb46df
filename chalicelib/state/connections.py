"""Users' object stores: checking a connection, keeping its keys secret, opening it for data.

The keys are stored in Secrets Manager, one secret per deployment, and never returned,
logged or put in an error message. Checks use boto3 (control plane, one call each); the data
path opens the same store with obstore, which costs a third of boto3's CPU per request.

Server-side request forgery: the service calls a user's endpoint from its own network
position (the metadata service, the VPC, loopback). So outside the local stack an endpoint must
be a plain http(s)://host[:port] whose host resolves only to globally routable addresses; every
address the resolver returns is checked, as a client may connect to any of them. An unset
TFBATCH_STAGE is production: only a stage set explicitly to "local" exempts the local stack's
loopback stores. The service's own store endpoint (TFBATCH_AWS_ENDPOINT, set explicitly) is the
operator's, not a user's, and is exempt.

Checking the url is not enough on its own: a client resolves the host again when it connects
(DNS rebinding) and may follow a store's redirect to anywhere. So every client of a store the
rule applies to (obstore on the data path, boto3 for checks) connects through the process's
egress proxy (`egress.py`), which resolves each destination itself, applies the same rule to
every address, connects to the address it checked, and refuses redirects over plain http; over
https a redirect is a new connection through it, checked like the first. botocore also never
follows a `Location` on its own (urllib3 with `Retry(False)`), and its S3 region redirector is
switched off for users' endpoints (on a store that always redirects it recursed, ~300
requests per call).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.core import aws, caches
from chalicelib.core.errors import BadRequest
from chalicelib.core.settings import get_settings
from chalicelib.state import egress

WRITE_CHECK_MARK = ".tfbatch-write-check-"  # the probe object's name; never an input
_CHECK_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
# A user's endpoint in path style: the host checked is the host called (not "<bucket>.<host>").
_ENDPOINT_CONFIG = _CHECK_CONFIG.merge(Config(s3={"addressing_style": "path"}))

VERDICT_SECONDS = 60.0  # how long a host's check holds before it is resolved again
_verdicts: dict[str, tuple[float, str | None]] = {}  # host -> (expiry, refusal reason or None)
_verdicts_lock = threading.Lock()

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_URL_CHARACTERS = re.compile(r"[!-~]+")  # printable ASCII: no spaces, controls or look-alikes
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # carries an IPv4 address in its last 32 bits
# IPv6 ranges that Python 3.11 counts as global but that are not: IPv4-compatible (deprecated,
# may be tunnelled to the IPv4 address) and local-use NAT64 (RFC 8215).
_NOT_GLOBAL = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class EndpointRefused(BadRequest):
    """A user's endpoint the service will not call (see the module's docstring). `lasting` is
    False when the host merely did not resolve, which often passes."""

    lasting = True


def endpoint(url: str) -> str | None:
    return url.rstrip("/") or None


_AWS_S3 = ("https", "s3.amazonaws.com", 443)
_AWS_S3_HOST = re.compile(r"^(?:(?P<bucket>.+)\.)?s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com$")


@dataclass(frozen=True)
class Location:
    """A bucket and prefix in a store, as a deployment names its input or output. The store is
    AWS S3 (`url` empty) or an S3-compatible endpoint; keys are never part of a location (they
    live in Secrets Manager). Kept in the deployment item as a map: `as_item`, `from_item`."""

    bucket: str
    prefix: str = ""
    url: str = ""
    region: str = ""  # empty: the service's region
    type: str = "s3"  # as the request named the connection type (s3, cloudobjectstorage)

    @classmethod
    def from_item(cls, raw: Mapping[str, Any]) -> Location:
        return cls(raw["bucket"], raw.get("prefix") or "", raw.get("url") or "", raw.get("region") or "",
                   raw.get("type") or "s3")

    def as_item(self) -> dict[str, str]:
        return {"type": self.type, "bucket": self.bucket, "prefix": self.prefix, "url": self.url,
                "region": self.region}

    def describe(self) -> str:
        """The location as error messages name it."""
        where = f" at {self.url}" if self.url else ""
        return f"(bucket '{self.bucket}', prefix '{self.prefix}'{where})"


def same_bucket(first: Location, second: Location) -> bool:
    """Whether two locations name one bucket, however their URLs are written: scheme and host in
    any case, a default port or none, a trailing slash, path or virtual-host style (the bucket
    in the host), and every AWS S3 endpoint (no URL, global or regional) as one store."""
    return _bucket_identity(first) == _bucket_identity(second)


def _bucket_identity(location: Location) -> tuple:
    bucket = location.bucket.lower()
    url = endpoint(location.url)
    if url is None:
        return (*_AWS_S3, bucket)
    parts = urlsplit(url if "://" in url else f"https://{url}")
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = None
    if host.startswith(f"{bucket}."):  # virtual-host style: the bucket is the host's first label
        host = host[len(bucket) + 1:]
    aws = _AWS_S3_HOST.match(host)
    if aws is not None and aws.group("bucket") is None:
        return (*_AWS_S3, bucket)
    return (scheme, host, port, bucket)


def check_endpoint(side: str | None, url: str) -> None:
    """Refuse an endpoint the service must not call: a url that is not plain http(s)://host[:port],
    or a host with any resolved address that is not globally routable. An empty url is AWS S3.

    Called at creation and each time the data path opens a store, since DNS may change."""
    if not url or _exempt(url):
        return
    host = _host(side, url)
    reason = _verdict(host)
    if reason is not None:
        refused = _refused(side, f"The {_name(side)} url's host '{host}' {reason}.")
        refused.lasting = reason != _UNRESOLVED
        raise refused


def _exempt(url: str) -> bool:
    """The local stack, whose stores are on loopback, when the stage is set to "local" explicitly
    (an unset stage defaults to "local" in the settings, but here it is production), and the
    service's own store when its endpoint is set explicitly (the default one follows the stage)."""
    settings = get_settings()
    if settings.stage == "local" and os.environ.get("TFBATCH_STAGE") == "local":
        return True
    return bool(os.environ.get("TFBATCH_AWS_ENDPOINT")) and endpoint(url) == settings.aws_endpoint


def _host(side: str | None, url: str) -> str:
    """The host of a plain http(s)://host[:port] url. Anything else is refused: another scheme,
    user@host, a path, an IPv6 zone, a host that is neither a DNS name nor an IP address in its
    usual form (resolvers read 2130706433, 0x7f.1 or 127.1 as 127.0.0.1), since each is a way
    for the client to call something other than the host checked."""
    name = _name(side)
    parts = urlsplit(url) if _URL_CHARACTERS.fullmatch(url) else None
    if parts is None or parts.scheme not in ("http", "https"):
        raise _refused(side, f"The {name} url must be http://host[:port] or https://host[:port].")
    if "@" in parts.netloc:  # the url is not echoed: it may hold a password
        raise _refused(side, f"The {name} url may not carry credentials (user@host); "
                             "give the keys in access_key and secret_key.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _refused(side, f"The {name} url must be http(s)://host[:port], without a path or query.")
    if not _port_ok(parts):
        raise _refused(side, f"The {name} url's port must be a number from 1 to 65535.")
    if not parts.hostname or not _plain_host(parts.hostname):
        raise _refused(side, f"The {name} url's host '{parts.hostname or ''}' is neither a DNS name nor "
                             "an IP address in its usual form; give the store's endpoint.")
    return parts.hostname


def _port_ok(parts) -> bool:
    try:
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        return False
    return port != 0 and not parts.netloc.endswith(":")


def _plain_host(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        return (len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
                and labels[-1][0].isalpha())  # a numeric last label makes resolvers read a number
    return not getattr(address, "scope_id", None)


_UNRESOLVED = "does not resolve; check the url"


def _verdict(host: str) -> str | None:
    """Why the host may not be called (None: it may). Cached per host for VERDICT_SECONDS, so the
    data path's re-check costs a lookup a minute; a failed lookup is not cached (often passing)."""
    now = time.monotonic()
    cached = _verdicts.get(host)
    if cached is not None and cached[0] > now:
        return cached[1]
    try:
        addresses = _addresses(host)
    except (OSError, UnicodeError, ValueError):
        return _UNRESOLVED
    bad = next((address for address in addresses if not _public(address)), None)
    reason = None if bad is None else (f"resolves to {_shown(bad)}, which is not a public address "
                                       f"({_kind(bad)}); the service calls no store inside a private "
                                       "network: give the store's public endpoint")
    _remember(host, reason, now + VERDICT_SECONDS)
    return reason


def _addresses(host: str) -> list[Address]:
    """Every address the host resolves to, IPv4 and IPv6: the clients may connect to any."""
    found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    if not found:
        raise OSError(f"no address for {host}")
    return [ipaddress.ip_address(info[4][0]) for info in found]


def _remember(host: str, reason: str | None, expiry: float) -> None:
    with _verdicts_lock:
        if len(_verdicts) >= 256:  # bounded: drop the expired ones (hosts are few per process)
            now = time.monotonic()
            for stale in [name for name, (until, _) in _verdicts.items() if until <= now]:
                del _verdicts[stale]
        _verdicts[host] = (expiry, reason)


def forget_verdicts() -> None:
    """Resolve every host again at its next check (tests; an operator's shell)."""
    with _verdicts_lock:
        _verdicts.clear()


def _public(address: Address) -> bool:
    """Globally routable unicast. An IPv6 address that carries an IPv4 one reaches it, so that
    one must be public too; an IPv4-mapped one is only that IPv4 address."""
    inner = _embedded(address)
    if inner is not None and address.ipv4_mapped is not None:
        return _public(inner)
    if inner is not None and not _public(inner):
        return False
    if any(address in network for network in _NOT_GLOBAL):
        return False
    return address.is_global and not address.is_multicast  # Python 3.11 counts multicast as global


def _embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and is routed to: mapped, 6to4 or NAT64."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def _shown(address: Address) -> str:
    inner = _embedded(address)
    return f"{address} (IPv4 {inner})" if inner is not None else str(address)


def _kind(address: Address) -> str:
    """A word for the error message: which kind of address it is (or the IPv4 one it carries)."""
    inner = _embedded(address)
    if inner is not None and not _public(inner):
        address = inner
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "carrier-grade NAT"
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "not globally routable"


def _name(side: str | None) -> str:
    return f"{side} connection" if side else "connection"


def _refused(side: str | None, message: str) -> EndpointRefused:
    """Names the side, the host and why; never the keys."""
    return EndpointRefused(message,
                           code=f"{side}_connection_failed" if side else "connection_failed",
                           target={"type": "field", "name": side} if side else None)


_egress: egress.EgressProxy | None = None
_egress_lock = threading.Lock()


def _egress_url(url: str | None) -> str | None:
    """The egress proxy's URL for clients of this endpoint, None where the rule does not apply
    (AWS S3 itself, the local stack's loopback stores, the service's own store)."""
    global _egress
    if not url or _exempt(url):
        return None
    with _egress_lock:
        if _egress is None:
            _egress = egress.EgressProxy(_public)
        return _egress.url


def s3_client(location: Location, keys: dict, *, side: str | None = None) -> Any:
    """boto3 on the user's store with the user's keys (control plane: checks, notifications).
    The endpoint is checked again first: its DNS may have changed since creation."""
    url = endpoint(location.url)
    check_endpoint(side, url or "")
    return _s3_client(url, location.region or get_settings().region, keys["access_key"], keys["secret_key"])


@caches.per_process(maxsize=32)
def _s3_client(url: str | None, region: str, access_key: str, secret_key: str) -> Any:
    """Cached: building a boto3 client costs tens of milliseconds, and one deployment's creation
    uses the input's client twice (check, subscription). The keys stay in this process only."""
    config = _ENDPOINT_CONFIG if url else _CHECK_CONFIG
    proxy = _egress_url(url)
    if proxy is not None:
        config = config.merge(Config(proxies={"http": proxy, "https": proxy}))
    client = boto3.client("s3", endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                          region_name=region, config=config)
    if url:  # one fixed endpoint: a "wrong region" redirect has nowhere else to go
        client.meta.events.register_first("needs-retry.s3", _no_region_redirect)
    return client


def _no_region_redirect(request_dict: dict, **_: Any) -> None:
    """Runs before botocore's S3 region redirector, which skips a request marked as redirected
    already. On a custom endpoint it would only ask the same store again (HeadBucket), and on a
    store that always answers with a redirect it recursed until Python's recursion limit."""
    redirect = request_dict.get("context", {}).get("s3_redirect")
    if redirect is not None:
        redirect["redirected"] = True


def _refusal(side: str, action: str, location: Location, error: Exception) -> BadRequest:
    where = f"bucket '{location.bucket}'" + (f" at {location.url}" if location.url else "")
    if isinstance(error, ClientError):
        detail = f"{error.response['Error'].get('Code', 'Error')}: {error.response['Error'].get('Message', '')}"
    else:
        detail = type(error).__name__ + (": could not connect" if "connect" in str(error).lower() else "")
    return BadRequest(f"The {side} connection failed: {action} {where} with the given keys was refused "
                      f"({detail.strip()}). Check the bucket, url and keys.",
                      code=f"{side}_connection_failed", target={"type": "field", "name": side})


def check_input(location: Location, keys: dict) -> None:
    client = s3_client(location, keys, side="input")  # checks the endpoint first
    try:
        client.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as error:
        raise _refusal("input", "listing", location, error) from None


def check_output(location: Location, keys: dict) -> None:
    client = s3_client(location, keys, side="output")  # checks the endpoint first
    probe = f"{location.prefix}{WRITE_CHECK_MARK}{uuid.uuid4().hex}"
    try:
        client.put_object(Bucket=location.bucket, Key=probe, Body=b"")
        client.delete_object(Bucket=location.bucket, Key=probe)
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


_tenant_lock = threading.Lock()
_tenant: str | None = None


def serve_only(instance_id: str) -> None:
    """Forget every other instance's keys, clients and stores before a run of `instance_id`.

    The caches above save a Secrets Manager read, a client and fresh connections per warm run,
    but a scoring process runs one tenant's graph after another's: whatever the caches hold is
    in the memory that graph runs in. So they hold one instance's at a time, and a run for
    another instance starts with them empty (a Lambda container runs one invocation at a time,
    so there a run never shares the process with another tenant's keys)."""
    global _tenant
    with _tenant_lock:
        if _tenant != instance_id:
            _keys.cache_clear()
            _s3_client.cache_clear()
            _store.cache_clear()
            _tenant = instance_id


@caches.per_process(maxsize=256)
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


def object_store(location: Location, keys: dict, *, side: str | None = None):
    """An obstore S3Store on the location's bucket (data path: lists, gets and puts).

    Stores are kept per process by bucket, endpoint and keys: a warm invocation reuses its
    client and open connections instead of paying for a new client (about 10 ms here) and new
    connections (a TLS handshake each on AWS) on every run. The endpoint is checked again at
    each opening (its DNS may have changed since creation), from the cached verdict when fresh."""
    url = endpoint(location.url)
    check_endpoint(side, url or "")
    return _store(location.bucket, url, location.region or get_settings().region, keys["access_key"],
                  keys["secret_key"])


@caches.per_process(maxsize=32)
def _store(bucket: str, url: str | None, region: str, access_key: str, secret_key: str):
    from obstore.store import S3Store

    options: dict[str, Any] = {"region": region, "access_key_id": access_key, "secret_access_key": secret_key}
    if url:
        proxy = _egress_url(url)
        options.update(endpoint=url, virtual_hosted_style_request=False,
                       client_options={"allow_http": url.startswith("http://"), "timeout": "60s",
                                       **({"proxy_url": proxy} if proxy else {})})
    return S3Store(bucket, **options)
