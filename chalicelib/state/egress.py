"""The way out to users' stores: a forward proxy inside the process that checks every connection.

Clients of a user's store (obstore on the data path, boto3 for checks and notifications) reach
it through this proxy (`proxy_url`, botocore's `proxies`) whenever the address rule applies.
For each connection the proxy itself resolves the destination, refuses it unless every address
passes the rule (connections' "globally routable" check), and connects to the very address it
checked. That closes what a check before the client cannot:
- DNS rebinding: the client never resolves the host; the address checked is the address used;
- redirects: a store that answers 3xx sends the client to a new destination, which is a new
  request through the proxy and checked like the first. Over plain http the proxy sees the
  answer and refuses every redirect outright (502); over https the answer is inside TLS, so a
  redirect to another public host can be followed, never one into a private network.

The proxy listens on loopback only, on a port the kernel picks, in daemon threads (one per
client connection, two while a tunnel is open); an idle connection is closed after
IDLE_SECONDS. It forwards bytes and never reads them beyond the request and response heads.
"""
from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from chalicelib.core.log import logger

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
IDLE_SECONDS = 120.0
CONNECT_SECONDS = 10.0
_MAX_HEAD = 64 * 1024
_CHUNK = 256 * 1024
_DROPPED_HEADERS = (b"proxy-", b"connection:", b"keep-alive:")


class Refused(Exception):
    """The destination is not one the service may call; the message says why (no secrets)."""

    status = 403


class RedirectRefused(Refused):
    status = 502


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a scorer opens dozens of connections at once

    def __init__(self, allowed: Callable[[Address], bool]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.allowed = allowed


class EgressProxy:
    """One proxy, its rule (`allowed`: may this address be called?), and its URL."""

    def __init__(self, allowed: Callable[[Address], bool]):
        self._server = _Server(allowed)
        threading.Thread(target=self._server.serve_forever, name="egress-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def open_checked(host: str, port: int, allowed: Callable[[Address], bool]) -> socket.socket:
    """A connection to `host:port` made to an address that passed the rule, every address the
    host resolves to having passed it (a client might be steered to any of them)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Refused(f"{host} does not resolve") from error
    addresses = [(ipaddress.ip_address(info[4][0].split("%", 1)[0]), info) for info in found]
    bad = next((address for address, _ in addresses if not allowed(address)), None)
    if bad is not None or not addresses:
        raise Refused(f"{host} resolves to {bad}, which is not a public address")
    last: OSError | None = None
    for _, (family, kind, proto, _, sockaddr) in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(CONNECT_SECONDS)
        try:
            sock.connect(sockaddr)  # the address checked, not the name: nothing resolves it again
        except OSError as error:
            sock.close()
            last = error
            continue
        sock.settimeout(IDLE_SECONDS)
        return sock
    raise Refused(f"{host}:{port} does not answer") from last


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client = self.request
        client.settimeout(IDLE_SECONDS)
        try:
            head, rest = _read_head(client)
            line, *headers = head.split(b"\r\n")
            method, target, version = line.split(b" ", 2)
            if method == b"CONNECT":
                self._tunnel(client, target.decode("ascii"), rest)
            else:
                self._forward(client, method, target.decode("ascii"), version, headers, rest)
        except Refused as refused:
            logger.warning("egress refused", extra={"reason": str(refused)})
            _answer(client, refused.status, f"tfbatch refused the connection: {refused}.")
        except (OSError, ValueError, UnicodeError):
            pass  # a client or store that hung up or spoke nonsense: nothing to forward
        finally:
            client.close()

    def _tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        """CONNECT host:port (https): a byte tunnel to the checked address; TLS stays end to end."""
        host, _, port = target.rpartition(":")
        upstream = open_checked(host.strip("[]"), int(port), self.server.allowed)
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            _splice(client, upstream)

    def _forward(self, client: socket.socket, method: bytes, target: str, version: bytes, headers: list[bytes],
                 rest: bytes) -> None:
        """A plain-http request in absolute form: sent on to the checked address, one request a
        connection (Connection: close both ways), and its answer refused if it is a redirect."""
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise Refused(f"only http:// requests and CONNECT tunnels pass, not {target[:64]!r}")
        upstream = open_checked(parts.hostname, parts.port or 80, self.server.allowed)
        with upstream:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kept = [header for header in headers if header and not header.lower().startswith(_DROPPED_HEADERS)]
            upstream.sendall(b"\r\n".join([method + b" " + path.encode("ascii") + b" " + version, *kept,
                                           b"Connection: close"]) + b"\r\n\r\n" + rest)
            sending = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
            sending.start()  # the request's body, if any, while the answer comes back
            answer, more = _final_head(upstream, client)
            status = int(answer.split(b" ", 2)[1])
            if 300 <= status < 400 and status != 304:  # 304 Not Modified sends nobody anywhere
                raise RedirectRefused(f"{parts.hostname} answered with a redirect ({status}), which the service "
                                      "does not follow")
            lines = [line for line in answer.split(b"\r\n") if not line.lower().startswith(_DROPPED_HEADERS)]
            client.sendall(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + more)
            _pump(upstream, client)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head of an HTTP message (up to its blank line) and the bytes read past it."""
    return _read_head_after(sock, b"")


def _final_head(upstream: socket.socket, client: socket.socket) -> tuple[bytes, bytes]:
    """The answer's final head: interim 1xx heads (100 Continue) are passed on as they come,
    so the check applies to the status that counts."""
    head, more = _read_head(upstream)
    while (status := head.split(b" ", 2)[1]).startswith(b"1") and status != b"101":
        client.sendall(head + b"\r\n\r\n")
        head, more = _read_head_after(upstream, more)
    return head, more


def _read_head_after(sock: socket.socket, data: bytes) -> tuple[bytes, bytes]:
    """Like _read_head, starting from bytes already read."""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD:
            raise ValueError("the message head is too large")
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise ValueError("the connection closed before the head ended")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until the source ends, then tell the sink no more comes."""
    try:
        while chunk := source.recv(_CHUNK):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _splice(client: socket.socket, upstream: socket.socket) -> None:
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join(IDLE_SECONDS)


def _answer(client: socket.socket, status: int, message: str) -> None:
    body = message.encode()
    reason = {403: "Forbidden", 502: "Bad Gateway"}.get(status, "Error")
    try:
        client.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                       f"Connection: close\r\n\r\n".encode() + body)
    except OSError:
        pass
