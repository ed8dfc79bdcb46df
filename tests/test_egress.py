"""The egress proxy (chalicelib.state.egress) with real sockets: what it lets through, what it
refuses, and that the stores' clients really go through it. Loopback plays both sides: the rule
in these tests allows 127.0.0.1 ("public") and refuses every other address, 127.0.0.2 included
("internal": Linux answers on all of 127/8)."""
from __future__ import annotations

import http.server
import ipaddress
import socket
import threading

import boto3
import pytest
import requests
from botocore.config import Config

from chalicelib.state import connections, egress
from chalicelib.state.connections import Location

ALLOWED = ipaddress.ip_address("127.0.0.1")


class Checked:
    """The proxy's rule for these tests, remembering every address it was asked about."""

    def __init__(self):
        self.asked: list[str] = []

    def __call__(self, address) -> bool:
        self.asked.append(str(address))
        return address == ALLOWED


@pytest.fixture
def rule():
    return Checked()


@pytest.fixture
def proxy(rule):
    running = egress.EgressProxy(rule)
    yield running
    running.close()


class Counting(http.server.BaseHTTPRequestHandler):
    """Answers 200 "ok" (or a 307 to `redirect_to`) and counts the requests it got."""

    hits: list[str]
    redirect_to: str | None = None
    interim: bool = False  # a 100 Continue before the answer
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.hits.append(self.headers.get("Host", ""))
        if self.interim:
            self.send_response_only(100)
            self.end_headers()
        if self.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.redirect_to)
            self.send_header("Content-Length", "0")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
        self.end_headers()
        if not self.redirect_to:
            self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """server(address, redirect_to=None) -> (url, hits); all are shut down after the test."""
    started = []

    def start(address: str, redirect_to: str | None = None, interim: bool = False):
        handler = type("Handler", (Counting,), {"hits": [], "redirect_to": redirect_to, "interim": interim})
        running = http.server.ThreadingHTTPServer((address, 0), handler)
        threading.Thread(target=running.serve_forever, daemon=True).start()
        started.append(running)
        return f"http://{address}:{running.server_address[1]}", handler.hits

    yield start
    for running in started:
        running.shutdown()
        running.server_close()


def _via(proxy) -> dict:
    return {"http": proxy.url, "https": proxy.url}


def test_a_checked_destination_is_reached_and_another_never_is(proxy, server):
    public, public_hits = server("127.0.0.1")
    internal, internal_hits = server("127.0.0.2")
    assert requests.get(f"{public}/object", proxies=_via(proxy), timeout=10).text == "ok"
    refused = requests.get(f"{internal}/latest/meta-data/", proxies=_via(proxy), timeout=10)
    assert refused.status_code == 403 and "127.0.0.2, which is not a public address" in refused.text
    assert len(public_hits) == 1 and internal_hits == []


@pytest.mark.parametrize("interim", [False, True])  # the redirect alone, or after a 100 Continue
def test_a_redirect_over_plain_http_is_refused_even_to_an_allowed_address(proxy, server, interim):
    target, target_hits = server("127.0.0.1")
    redirecting, _ = server("127.0.0.1", redirect_to=f"{target}/elsewhere", interim=interim)
    answer = requests.get(f"{redirecting}/object", proxies=_via(proxy), timeout=10)
    assert answer.status_code == 502 and "redirect (307)" in answer.text
    assert target_hits == []
    assert requests.get(f"{target}/object", proxies=_via(proxy), timeout=10).text == "ok"  # the proxy goes on


def test_a_tunnel_is_opened_only_to_a_checked_address(proxy, server):
    public, public_hits = server("127.0.0.1")
    internal, internal_hits = server("127.0.0.2")
    port = int(proxy.url.rsplit(":", 1)[1])

    def connect(url: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            authority = url.split("://", 1)[1]
            sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
            answer = sock.recv(4096)
            if b" 200 " in answer.split(b"\r\n", 1)[0]:  # through the tunnel, as TLS would go
                sock.sendall(f"GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode())
                while chunk := sock.recv(4096):
                    answer += chunk
            return answer

    assert connect(internal).startswith(b"HTTP/1.1 403")
    opened = connect(public)
    assert opened.startswith(b"HTTP/1.1 200 Connection established") and opened.endswith(b"ok")
    assert len(public_hits) == 1 and internal_hits == []


def test_the_proxy_resolves_once_and_connects_to_the_address_it_checked(proxy, server, monkeypatch):
    """The client hands the name to the proxy and never resolves it; a name with any refused
    address is refused whole, as a client could be steered to any of them."""
    public, public_hits = server("127.0.0.1")
    port = public.rsplit(":", 1)[1]
    answers = {"store.example.com": ["127.0.0.1"], "mixed.example.com": ["127.0.0.1", "127.0.0.2"]}
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port))) for address in answers[host]]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert requests.get(f"http://store.example.com:{port}/", proxies=_via(proxy), timeout=10).text == "ok"
    assert public_hits == [f"store.example.com:{port}"]
    mixed = requests.get(f"http://mixed.example.com:{port}/", proxies=_via(proxy), timeout=10)
    assert mixed.status_code == 403 and len(public_hits) == 1


def test_both_store_clients_go_through_it(proxy, rule, moto_server_url):
    """obstore (the data path) and boto3 (checks) reach the store only through the proxy: the
    rule is asked for each connection, and a store it refuses is never reached."""
    from obstore.store import S3Store

    boto3.client("s3", endpoint_url=moto_server_url, aws_access_key_id="k", aws_secret_access_key="s",
                 region_name="us-east-1").create_bucket(Bucket="through-the-proxy")
    keys = {"access_key_id": "k", "secret_access_key": "s", "region": "us-east-1"}
    store = S3Store("through-the-proxy", endpoint=moto_server_url, virtual_hosted_style_request=False,
                    client_options={"allow_http": True, "proxy_url": proxy.url}, **keys)
    store.put("a.json", b'{"x": 1}')
    assert bytes(store.get("a.json").bytes()) == b'{"x": 1}'
    assert str(ALLOWED) in rule.asked
    asked = len(rule.asked)
    client = boto3.client("s3", endpoint_url=moto_server_url, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1", config=Config(proxies=_via(proxy)))
    assert client.get_object(Bucket="through-the-proxy", Key="a.json")["Body"].read() == b'{"x": 1}'
    assert len(rule.asked) > asked

    internal_url = moto_server_url.replace("127.0.0.1", "127.0.0.2")
    refused = S3Store("through-the-proxy", endpoint=internal_url, virtual_hosted_style_request=False,
                      client_options={"allow_http": True, "proxy_url": proxy.url}, **keys)
    with pytest.raises(Exception, match="403"):
        refused.get("a.json")


def test_users_stores_are_opened_through_the_proxy_and_the_local_stack_not(settings_env):
    url = "https://store.example.com"
    settings_env(TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT="")
    proxied = connections._store("in", url, "us-east-1", "k", "s")
    assert proxied.client_options["proxy_url"] == connections._egress_url(url)
    client = connections._s3_client(url, "us-east-1", "k", "s")
    assert client.meta.config.proxies == {"http": connections._egress_url(url), "https": connections._egress_url(url)}
    assert connections._egress_url("") is None  # AWS S3 itself

    settings_env(TFBATCH_STAGE="local")
    local = connections.object_store(Location("in", url="http://127.0.0.1:9"), {"access_key": "k", "secret_key": "s"})
    assert "proxy_url" not in local.client_options
