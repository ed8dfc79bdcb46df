"""A fault-injecting HTTP proxy for chaos tests: it sits between the service and the moto server
and, at random (a seeded RNG), answers a request the way a struggling AWS would.

Faults, each a share of the requests while `enabled`:
- throttling: S3 503 SlowDown; DynamoDB 400 ThrottlingException or
  ProvisionedThroughputExceededException; other JSON services (SQS, Secrets Manager,
  EventBridge) 400 ThrottlingException. Bodies and x-amz(n)-* headers as AWS writes them, so
  botocore's and obstore's retries treat them as AWS's own;
- 500 InternalError (S3's XML, DynamoDB's InternalServerError);
- a connection reset before forwarding: the request never reaches the store;
- a connection reset after forwarding: the request took effect, but the client never hears
  it (the case that breaks naive exactly-once: a retried write lands twice, or is refused);
- a slow response (held before or after forwarding).

Writes (everything but S3 reads: PUTs, and every DynamoDB, SQS and Secrets Manager call) are
hit `write_factor` times as often as reads, which are most of the traffic. Requests to moto's
own /moto-api are never touched. The RNG is seeded, but which request draws
which number depends on thread timing, so a seed reproduces the mix of faults, not the exact
sequence.
"""
from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

THROTTLE, ERROR, RESET_BEFORE, RESET_AFTER, SLOW = "throttle", "error", "reset_before", "reset_after", "slow"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
               "expect", "content-length"}
_DYNAMODB = "com.amazonaws.dynamodb.v20120810#"


class FaultProxy:
    """`rates` maps each fault to the share of requests it hits (the rest pass untouched)."""

    def __init__(self, upstream: str, seed: int, rates: dict[str, float], *, slow_seconds: float = 0.8,
                 write_factor: float = 2.0):
        self.upstream = urlsplit(upstream)
        self.seed = seed
        self.rates = rates
        self.slow_seconds = slow_seconds
        self.write_factor = write_factor  # writes are few beside reads, and where exactly-once is at stake
        self.enabled = False
        self.counts: Counter = Counter()  # (fault, service) -> how many
        self.requests: Counter = Counter()  # (service, operation) -> requests that reached the proxy
        self.request_bytes: Counter = Counter()  # (service, operation) -> bytes of their bodies
        self.write_units: Counter = Counter()  # (service, operation) -> DynamoDB write units, as AWS bills them
        self.read_units: Counter = Counter()  # (service, operation) -> DynamoDB read units, at least
        self.after_effect: list[str] = []  # what was reset after it took effect
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stalls: list = []  # (matches, held, release) of `stall`
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def draw(self, write: bool) -> tuple[str | None, float]:
        """The fault for the next request (None: none) and a number for its details. A write
        (anything but an S3 read) is hit `write_factor` times as often."""
        if not self.enabled:
            return None, 0.0
        with self._lock:
            point, detail = self._rng.random(), self._rng.random()
        if write:
            point /= self.write_factor
        for fault, rate in self.rates.items():
            if point < rate:
                return fault, detail
            point -= rate
        return None, detail

    def stall(self, matches) -> tuple[threading.Event, threading.Event]:
        """Hold the first request for which `matches(method, path)` is true, before forwarding it,
        as a network that stalls one write would: (held, release). `held` is set once it is
        caught; it goes on to the store when `release` is set."""
        held, release = threading.Event(), threading.Event()
        with self._lock:
            self._stalls.append((matches, held, release))
        return held, release

    def _hold_if_stalled(self, method: str, path: str) -> None:
        with self._lock:
            caught = next(((held, release) for matches, held, release in self._stalls
                           if not held.is_set() and matches(method, path)), None)
            if caught is not None:
                caught[0].set()
        if caught is not None:
            caught[1].wait()

    def count(self, fault: str, service: str, what: str = "") -> None:
        with self._lock:
            self.counts[(fault, service)] += 1
            if fault == RESET_AFTER:
                self.after_effect.append(what)

    def requests_so_far(self) -> Counter:
        """The requests counted so far (a copy: the proxy's threads go on counting)."""
        with self._lock:
            return Counter(self.requests)

    def reset_counts(self) -> None:
        with self._lock:
            for counter in (self.requests, self.request_bytes, self.write_units, self.read_units):
                counter.clear()

    def tally(self, service: str, operation: str, body: bytes) -> None:
        written, read = _units(operation, body) if service == "dynamodb" else (0, 0)
        with self._lock:
            self.requests[(service, operation)] += 1
            self.request_bytes[(service, operation)] += len(body)
            self.write_units[(service, operation)] += written
            self.read_units[(service, operation)] += read

    def summary(self) -> str:
        by_fault = Counter()
        for (fault, _), number in self.counts.items():
            by_fault[fault] += number
        landed = Counter(self.after_effect).most_common(6)
        return (", ".join(f"{fault} {number}" for fault, number in sorted(by_fault.items())) or "no faults") + (
            f" (reset after effect: {', '.join(f'{what} {number}' for what, number in landed)})" if landed else "")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up (a killed scorer, a reset of ours) is no error of the proxy's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _service(headers) -> tuple[str, str]:
    """(service, operation) of a request: DynamoDB and the other JSON services name their
    operation in X-Amz-Target; everything else here is S3."""
    target = headers.get("X-Amz-Target", "")
    if target.startswith("DynamoDB_"):
        return "dynamodb", target.split(".")[-1]
    if target:
        return "json", target
    return "s3", ""


def _s3_operation(method: str, path: str) -> str:
    """An S3 request's operation, from its method and its path-style URL (bucket, key, query)."""
    route, _, query = path.partition("?")
    is_bucket = "/" not in route.strip("/")
    if method == "GET":
        return "ListObjects" if is_bucket else "GetObject"
    if method == "PUT":
        return "CreateBucket" if is_bucket and "notification" not in query else "PutObject"
    return {"HEAD": "HeadObject", "DELETE": "DeleteObject", "POST": "PostObject"}.get(method, method)


def _s3_error(status: int, code: str, message: str) -> tuple[int, dict, bytes]:
    request_id = uuid.uuid4().hex[:16].upper()
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{request_id}</RequestId><HostId>{uuid.uuid4().hex}</HostId></Error>").encode()
    return status, {"Content-Type": "application/xml", "x-amz-request-id": request_id,
                    "x-amz-id-2": uuid.uuid4().hex}, body


def _json_error(status: int, kind: str, message: str, content_type: str) -> tuple[int, dict, bytes]:
    body = json.dumps({"__type": kind, "message": message}).encode()
    return status, {"Content-Type": content_type, "x-amzn-RequestId": str(uuid.uuid4()),
                    "x-amz-crc32": str(zlib.crc32(body) & 0xFFFFFFFF)}, body


def _error_answer(fault: str, service: str, detail: float) -> tuple[int, dict, bytes]:
    if service == "s3":
        if fault == THROTTLE:
            return _s3_error(503, "SlowDown", "Please reduce your request rate.")
        return _s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
    if service == "dynamodb":
        if fault == THROTTLE and detail < 0.5:
            return _json_error(400, _DYNAMODB + "ThrottlingException", "Rate of requests exceeds the allowed "
                               "throughput.", "application/x-amz-json-1.0")
        if fault == THROTTLE:
            return _json_error(400, _DYNAMODB + "ProvisionedThroughputExceededException",
                               "The level of configured provisioned throughput for the table was exceeded. "
                               "Consider increasing your provisioning level with the UpdateTable API.",
                               "application/x-amz-json-1.0")
        return _json_error(500, _DYNAMODB + "InternalServerError", "Internal server error",
                           "application/x-amz-json-1.0")
    if fault == THROTTLE:
        return _json_error(400, "ThrottlingException", "Rate exceeded", "application/x-amz-json-1.1")
    return _json_error(500, "InternalFailure", "The request processing has failed because of an unknown error.",
                       "application/x-amz-json-1.1")


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: thousands of requests
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reset(self) -> None:
            """Close without a response, with a TCP reset (SO_LINGER 0), as a dropped connection."""
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
            try:
                headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                content = response.read()
                return response.status, response.getheaders(), content
            finally:
                upstream.close()

        def _answer(self, status: int, headers, body: bytes) -> None:
            self.send_response_only(status)
            length = None
            for name, value in headers:
                if name.lower() in _HOP_BY_HOP:
                    if name.lower() == "content-length":
                        length = value
                    continue
                self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", length if length is not None else "0")
            elif status not in (204, 304):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and status not in (204, 304):
                self.wfile.write(body)

        def _handle(self) -> None:
            body = self._body()
            service, operation = _service(self.headers)
            if not self.path.startswith("/moto-api"):
                proxy.tally(service, operation or _s3_operation(self.command, self.path), body)
            write = service != "s3" or self.command not in ("GET", "HEAD")
            fault, detail = (None, 0.0) if self.path.startswith("/moto-api") else proxy.draw(write)
            if fault is not None:
                proxy.count(fault, service, operation or f"S3 {self.command}")
            if fault == RESET_BEFORE:
                return self._reset()
            if fault in (THROTTLE, ERROR):
                status, headers, content = _error_answer(fault, service, detail)
                return self._answer(status, list(headers.items()), content)
            if fault == SLOW and detail < 0.5:
                time.sleep(detail * 2 * proxy.slow_seconds)
            proxy._hold_if_stalled(self.command, self.path)
            try:
                status, headers, content = self._forward(body)
            except OSError:
                return self._reset()  # the store is gone (end of the test): as a dropped connection
            if fault == RESET_AFTER:
                return self._reset()
            if fault == SLOW and detail >= 0.5:
                time.sleep((detail - 0.5) * 2 * proxy.slow_seconds)
            self._answer(status, headers, content)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _handle

    return Handler


def _units(operation: str, body: bytes) -> tuple[int, int]:
    """DynamoDB's write and read units for one request, from its body: counting never breaks the
    request it counts (a body it cannot read counts none). Each item written costs a unit per
    started KB (its JSON here, binary values at their own size), twice inside a transaction,
    and an update or delete at least one; each item read strongly costs at least a unit (a
    query of large items costs more: the answer's size is not counted here)."""
    try:
        request = json.loads(body or b"{}")
        if operation == "BatchWriteItem":
            return sum(_write_units(write.get("PutRequest", {}).get("Item"))
                       for writes in request.get("RequestItems", {}).values() for write in writes), 0
        if operation == "TransactWriteItems":
            return sum(2 * _write_units(operation.get("Item")) for item in request.get("TransactItems", [])
                       for operation in item.values()), 0
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            return _write_units(request.get("Item")), 0
        if operation == "BatchGetItem":
            return 0, sum(len(table.get("Keys", [])) for table in request.get("RequestItems", {}).values())
        return (0, 1) if operation in ("GetItem", "Query", "Scan") else (0, 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0


def _write_units(item: dict | None) -> int:
    size = len(json.dumps(item or {}, separators=(",", ":")))
    size -= sum(len(value["B"]) // 4 for value in (item or {}).values() if isinstance(value, dict) and "B" in value)
    return max(1, -(-size // 1024))
