"""Users' endpoints and server-side request forgery: which addresses the service refuses to call,
when the check applies, and that the data path checks again. No network: the resolver is
replaced by one that answers with chosen addresses (the redirect test uses loopback servers)."""
from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from types import SimpleNamespace

import pytest

from chalicelib.core.errors import BadRequest
from chalicelib.core.settings import get_settings
from chalicelib.state import connections
from chalicelib.state.connections import Location

HOST = "store.example.com"
KEYS = {"access_key": "user-access-key", "secret_key": "user-secret-key-do-not-leak"}


class Resolver:
    """socket.getaddrinfo for one host, with the addresses the test chooses; counts lookups."""

    def __init__(self, *addresses: str):
        self.addresses = list(addresses)
        self.lookups = 0

    def __call__(self, host, port, *args, **kwargs):
        self.lookups += 1
        if _is_address(host):  # an address literal resolves to itself, as with the real resolver
            return [_info(host)]
        if host != HOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [_info(address) for address in self.addresses]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _info(address: str) -> tuple:
    if ":" in address:
        return socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, 0, 0, 0)
    return socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0)


@pytest.fixture(autouse=True)
def production(settings_env):
    """The test stage, where the check applies (as on AWS), with no service endpoint of its own."""
    settings_env(TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT="")
    connections.forget_verdicts()
    yield
    connections.forget_verdicts()


@pytest.fixture
def resolve(monkeypatch):
    def answer(*addresses: str) -> Resolver:
        resolver = Resolver(*addresses)
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        return resolver
    return answer


def _refusal(side: str, url: str) -> connections.EndpointRefused:
    with pytest.raises(connections.EndpointRefused) as caught:
        connections.check_endpoint(side, url)
    error = caught.value
    assert error.status == 400 and error.code == f"{side}_connection_failed"
    assert error.target == {"type": "field", "name": side}
    return error


@pytest.mark.parametrize(("address", "kind"), [
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.251", "multicast"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fe80::1", "link-local"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
])
def test_a_host_resolving_outside_the_public_internet_is_refused(resolve, address, kind):
    resolve(address)
    error = _refusal("input", f"https://{HOST}")
    assert f"'{HOST}' resolves to {ipaddress.ip_address(address)}" in error.message
    assert f"which is not a public address ({kind})" in error.message


@pytest.mark.parametrize("addresses", [("93.184.216.34", "10.0.0.5"), ("10.0.0.5", "93.184.216.34")])
def test_one_private_address_among_public_ones_refuses_the_host(resolve, addresses):
    resolve(*addresses)
    assert "resolves to 10.0.0.5, which is not a public address" in _refusal("output", f"http://{HOST}:9000").message


def test_a_host_resolving_only_to_public_addresses_is_accepted(resolve):
    resolve("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    connections.check_endpoint("input", f"https://{HOST}")
    connections.check_endpoint("output", f"https://{HOST}:8443/")


def test_an_empty_url_is_aws_s3_and_needs_no_check(resolve):
    resolver = resolve("10.0.0.5")
    connections.check_endpoint("input", "")
    assert resolver.lookups == 0


def test_a_host_that_does_not_resolve_is_refused_and_looked_up_again_next_time(resolve):
    resolver = resolve()
    resolver.addresses = []
    assert "does not resolve" in _refusal("input", "https://nowhere.example.com").message
    assert "does not resolve" in _refusal("input", f"https://{HOST}").message
    resolver.addresses = ["93.184.216.34"]
    connections.check_endpoint("input", f"https://{HOST}")  # the failure was not cached


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://store.example.com", "must be http://host[:port] or https://host[:port]"),
    ("file:///etc/passwd", "must be http://host[:port] or https://host[:port]"),
    ("gopher://store.example.com:70", "must be http://host[:port] or https://host[:port]"),
    ("store.example.com", "must be http://host[:port] or https://host[:port]"),
    ("http://store.example.com\t.evil", "must be http://host[:port] or https://host[:port]"),
    ("http://user:hunter2@store.example.com", "may not carry credentials"),
    ("http://store.example.com@10.0.0.5", "may not carry credentials"),
    ("http://store.example.com/bucket", "without a path or query"),
    ("http://store.example.com/?x=1", "without a path or query"),
    ("http://store.example.com:0", "port must be a number"),
    ("http://store.example.com:70000", "port must be a number"),
    ("http://2130706433", "neither a DNS name nor an IP address"),  # read as 127.0.0.1
    ("http://0x7f.1", "neither a DNS name nor an IP address"),
    ("http://127.1", "neither a DNS name nor an IP address"),
    ("http://010.0.0.1", "neither a DNS name nor an IP address"),  # octal to some resolvers
    ("http://[fe80::1%25eth0]", "neither a DNS name nor an IP address"),
    ("http://store_1.example.com", "neither a DNS name nor an IP address"),
    ("http://store.example.com.", "neither a DNS name nor an IP address"),
])
def test_urls_that_are_not_a_plain_http_endpoint_are_refused_unresolved(resolve, url, why):
    resolver = resolve("93.184.216.34")
    error = _refusal("input", url)
    assert why in error.message
    assert "hunter2" not in error.message and resolver.lookups == 0


def test_an_unset_stage_is_production(resolve, monkeypatch):
    monkeypatch.delenv("TFBATCH_STAGE")
    monkeypatch.delenv("TFBATCH_AWS_ENDPOINT")
    get_settings.cache_clear()
    assert get_settings().stage == "local"  # the settings' default, for names and the local stack
    resolve("10.0.0.5")
    _refusal("input", f"http://{HOST}")
    # Not even the default local endpoint, which only follows from the default stage.
    assert get_settings().aws_endpoint == "http://127.0.0.1:5000"
    assert "resolves to 127.0.0.1" in _refusal("input", "http://127.0.0.1:5000").message


def test_the_local_stage_set_explicitly_exempts_loopback_stores(resolve, settings_env):
    resolver = resolve("10.0.0.5")
    settings_env(TFBATCH_STAGE="local")
    connections.check_endpoint("input", "http://127.0.0.1:5000")
    connections.check_endpoint("input", f"http://{HOST}:9000")
    assert resolver.lookups == 0


def test_the_service_own_store_endpoint_is_exempt(resolve, settings_env):
    settings_env(TFBATCH_AWS_ENDPOINT="http://10.0.0.9:4566")
    resolve("10.0.0.5")
    connections.check_endpoint("input", "http://10.0.0.9:4566")
    connections.check_endpoint("output", "http://10.0.0.9:4566/")
    _refusal("input", "http://10.0.0.9:4567")  # another port on that host is not the service's store
    _refusal("input", f"http://{HOST}")


def test_creation_checks_refuse_before_any_call_and_never_echo_keys(resolve):
    resolve("169.254.169.254")
    location = Location("in", url=f"https://{HOST}")
    for check, side in ((connections.check_input, "input"), (connections.check_output, "output")):
        with pytest.raises(connections.EndpointRefused) as caught:
            check(location, KEYS)
        assert caught.value.code == f"{side}_connection_failed" and HOST in caught.value.message
        assert KEYS["access_key"] not in caught.value.message and KEYS["secret_key"] not in caught.value.message


def test_the_data_path_checks_again_and_refuses_a_host_that_turned_private(resolve, monkeypatch):
    """DNS rebinding: public at creation, private later. Each opening of a store for a run
    checks again, from a verdict cached for VERDICT_SECONDS so warm runs do not resolve per file."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(connections, "time", SimpleNamespace(monotonic=lambda: clock.now))
    resolver = resolve("93.184.216.34")
    source = Location("in", url=f"https://{HOST}")
    connections.check_endpoint("input", source.url)  # creation
    assert connections.object_store(source, KEYS, side="input") is not None
    assert connections.s3_client(source, KEYS, side="input") is not None
    assert resolver.lookups == 1  # one lookup for the creation check and both openings

    resolver.addresses = ["10.0.0.5"]
    clock.now += connections.VERDICT_SECONDS / 2
    connections.object_store(source, KEYS, side="input")  # within the cached verdict
    clock.now += connections.VERDICT_SECONDS
    for opening in (connections.object_store, connections.s3_client):
        with pytest.raises(connections.EndpointRefused) as caught:
            opening(source, KEYS, side="input")
        assert caught.value.code == "input_connection_failed"
        assert "resolves to 10.0.0.5, which is not a public address" in caught.value.message
    assert resolver.lookups == 2


def _server(handler) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_the_check_client_does_not_follow_a_redirect(settings_env):
    """A store that answers every request with a 307 to an internal URL: botocore does not go
    there, and its region redirector does not ask the store again and again."""
    seen: list[str] = []

    class Internal(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append("internal")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    internal, internal_url = _server(Internal)

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def redirect(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append("store")
            self.send_response(307)
            self.send_header("Location", f"{internal_url}/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_HEAD = redirect

        def log_message(self, *args):
            pass

    store, store_url = _server(Redirecting)
    try:
        settings_env(TFBATCH_AWS_ENDPOINT=store_url)  # exempt from the address check: loopback here
        location = Location("in", url=store_url)
        with pytest.raises(BadRequest) as caught:
            connections.check_input(location, KEYS)
        assert caught.value.code == "input_connection_failed" and "307" in caught.value.message
        assert "internal" not in seen and 1 <= seen.count("store") <= 2
    finally:
        store.shutdown()
        internal.shutdown()


def test_a_run_for_another_instance_starts_with_no_keys_of_the_last_one(aws_mock):
    """A scoring process runs one tenant's graph after another's: the caches of keys, clients
    and stores hold one instance's at a time."""
    connections.save_keys("deployment-a", {"input": {"access_key": "a-key", "secret_key": "a-secret"}})
    connections.save_keys("deployment-b", {"input": {"access_key": "b-key", "secret_key": "b-secret"}})
    connections.serve_only("instance-a")
    assert connections.load_keys("deployment-a")["input"]["secret_key"] == "a-secret"
    connections.object_store(Location("in"), {"access_key": "a-key", "secret_key": "a-secret"})
    connections.serve_only("instance-a")  # the same tenant again: the caches stay warm
    assert connections._keys.cache_info().currsize == 1 and connections._store.cache_info().currsize == 1
    connections.serve_only("instance-b")
    assert connections._keys.cache_info().currsize == 0 and connections._store.cache_info().currsize == 0
    assert connections.load_keys("deployment-b")["input"]["secret_key"] == "b-secret"


@pytest.mark.parametrize("first, second, same", [
    (Location("b", url="http://store.example:9000"), Location("b", url="HTTP://Store.Example:9000/"), True),
    (Location("b", url="https://store.example"), Location("b", url="https://store.example:443"), True),
    (Location("b", url="http://store.example"), Location("b", url="http://store.example:80/"), True),
    (Location("b", url="https://store.example"), Location("b", url="https://b.store.example"), True),
    (Location("b", url=""), Location("b", url="https://s3.amazonaws.com"), True),
    (Location("b", url=""), Location("B", url="https://b.s3.eu-west-1.amazonaws.com/"), True),
    (Location("b", url=""), Location("b", url="https://s3.dualstack.us-east-1.amazonaws.com"), True),
    (Location("b", url="http://store.example:9000"), Location("b", url="http://store.example:9001"), False),
    (Location("b", url="https://store.example"), Location("b", url="http://store.example"), False),
    (Location("b", url=""), Location("c", url=""), False),
    (Location("b", url=""), Location("b", url="https://storage.example.com"), False),
])
def test_one_bucket_is_recognised_however_its_url_is_written(first, second, same):
    assert connections.same_bucket(first, second) is same
    assert connections.same_bucket(second, first) is same
