"""Password guessing on the token route: a few free failures per username, then 429 with
Retry-After and locks that double; unknown usernames locked and costing alike. Through Chalice's
test client, moto in-process, time moved by replacing the throttle's clock."""
from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chalice.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiclient import basic, body, error_of
from chalicelib.core import aws
from chalicelib.core.errors import TooManyRequests, Unauthorized
from chalicelib.core.settings import get_settings
from chalicelib.state import instances, passwords, signin_throttle

FREE, WINDOW, FIRST_LOCK, MAX_LOCK = 5, 900, 60, 900  # the defaults in chalicelib.core.settings
TOKEN = "/v3/identity/token"
ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(signin_throttle, "clock", fake)
    return fake


@pytest.fixture
def api(aws_mock, clock):
    import app as service

    with Client(service.app, stage_name="test") as client:
        yield client.http


@pytest.fixture
def user(aws_mock) -> instances.NewInstance:
    return instances.create("signin")


def _sign_in(api, username: str, password: str):
    return api.get(TOKEN, headers=basic(username, password))


def _fail(api, username: str, times: int) -> list[int]:
    return [_sign_in(api, username, f"wrong-{i}").status_code for i in range(times)]


def _assert_locked(response, retry_after: int, *secrets: str) -> None:
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(retry_after)
    error = error_of(response)
    assert error["code"] == "too_many_attempts"
    assert error["target"] == {"type": "header", "name": "Authorization"}
    assert f"locked for {retry_after} more seconds" in error["message"]
    assert "right password is refused" in error["message"]
    for secret in secrets:
        assert secret not in response.body.decode()


def test_wrong_passwords_lock_the_username_with_429_and_retry_after(api, user):
    assert _fail(api, user.username, FREE) == [401] * FREE
    locking = _sign_in(api, user.username, "guess-that-locks")
    _assert_locked(locking, FIRST_LOCK, "guess-that-locks", user.username)
    again = _sign_in(api, user.username, "another-guess")
    _assert_locked(again, FIRST_LOCK, "another-guess", user.username)


def test_the_right_password_is_refused_unchecked_while_locked_and_accepted_after(api, user, clock, monkeypatch):
    _fail(api, user.username, FREE + 1)
    checked = []
    verify = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda *args: checked.append(args) or verify(*args))

    clock.advance(FIRST_LOCK - 1)
    _assert_locked(_sign_in(api, user.username, user.password), 1, user.password)
    assert checked == []  # refused before any password is checked

    clock.advance(1)
    assert "token" in body(_sign_in(api, user.username, user.password))
    assert len(checked) == 1


def test_locks_double_up_to_the_cap_and_a_success_starts_over(api, user, clock):
    for lock in (60, 120, 240, 480, 900, 900):
        assert _fail(api, user.username, FREE) == [401] * FREE
        _assert_locked(_sign_in(api, user.username, "x"), lock)
        clock.advance(lock)
    assert _sign_in(api, user.username, user.password).status_code == 200
    _fail(api, user.username, FREE)
    _assert_locked(_sign_in(api, user.username, "x"), FIRST_LOCK)


def test_a_success_resets_the_count(api, user):
    assert _fail(api, user.username, FREE - 1) == [401] * (FREE - 1)
    assert _sign_in(api, user.username, user.password).status_code == 200
    assert _fail(api, user.username, FREE) == [401] * FREE  # the count started over
    assert _sign_in(api, user.username, "x").status_code == 429


def test_failures_are_forgotten_after_the_window(api, user, clock):
    _fail(api, user.username, FREE)
    clock.advance(WINDOW)
    assert _fail(api, user.username, FREE) == [401] * FREE
    assert _sign_in(api, user.username, "x").status_code == 429


def test_an_unknown_username_is_locked_exactly_like_a_known_one(api, user, clock):
    def story(username: str) -> list[tuple[int, str | None, dict]]:
        responses = [_sign_in(api, username, f"guess-{i}") for i in range(FREE + 2)]
        clock.advance(FIRST_LOCK)
        responses.append(_sign_in(api, username, "after-the-lock"))
        return [(r.status_code, r.headers.get("Retry-After"), error_of(r)) for r in responses]

    known = story(user.username)
    unknown = story("no-such-user")
    assert known == unknown
    assert [status for status, _, _ in known] == [401] * FREE + [429, 429, 401]


def test_known_and_unknown_usernames_cost_the_same_work(api, user, monkeypatch):
    """Equal timing, checked as equal work: the same DynamoDB calls on the same tables, and one
    scrypt each (so not a second one to hash a dummy password)."""
    instances._dummy_hash()  # made once per process, not per request
    work: list[tuple[str, str]] = []
    scrypt = passwords.hashlib.scrypt
    monkeypatch.setattr(passwords.hashlib, "scrypt", lambda *a, **k: work.append(("scrypt", "")) or scrypt(*a, **k))
    for name in (get_settings().credentials_table, get_settings().signin_attempts_table):
        aws.table(name).meta.client.meta.events.register(
            "provide-client-params.dynamodb", lambda params, model, **_: work.append((model.name, params["TableName"])))

    def cost(username: str) -> list[tuple[str, str]]:
        work.clear()
        _sign_in(api, username, "wrong")
        return list(work)

    assert cost(user.username) == cost("no-such-user")
    assert cost(user.username).count(("scrypt", "")) == 1
    _fail(api, user.username, FREE)
    _fail(api, "no-such-user", FREE)
    locked = cost(user.username)
    assert locked == cost("no-such-user") and ("scrypt", "") not in locked
    assert all(table == get_settings().signin_attempts_table for _, table in locked)  # credentials not read


@pytest.fixture
def atomic_moto(monkeypatch):
    """DynamoDB checks a write's condition and stores the item in one atomic step; moto does it in
    two Python steps that threads can interleave. One lock around moto's item operations gives
    back DynamoDB's guarantee, so what the threads test is this service's counting."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("get_item", "put_item", "update_item", "delete_item"):
        original = getattr(DynamoDBBackend, name)

        def serialized(*args, _original=original, **kwargs):
            with lock:
                return _original(*args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, serialized)


def test_parallel_wrong_guesses_are_counted_atomically(aws_mock, atomic_moto, clock, user):
    """Chalice's test client holds one current request per app, so the threads call the function
    behind the route."""
    guesses = 16
    start = threading.Barrier(guesses)

    def guess(i: int) -> str:
        start.wait()
        try:
            instances.authenticate(user.username, f"parallel-{i}")
        except (Unauthorized, TooManyRequests) as error:
            return type(error).__name__
        return "signed in"

    with ThreadPoolExecutor(guesses) as pool:
        outcomes = list(pool.map(guess, range(guesses)))
    assert sorted(outcomes) == sorted(["Unauthorized"] * FREE + ["TooManyRequests"] * (guesses - FREE))
    with pytest.raises(TooManyRequests):
        instances.authenticate(user.username, user.password)


def test_records_hold_a_hash_of_the_username_and_expire(api, user, clock):
    long_name = "ü" * 5000  # attacker text of any length
    for username in (user.username, long_name, ""):
        _fail(api, username, FREE + 1)
    settings = get_settings()
    items = aws.table(settings.signin_attempts_table).scan()["Items"]
    assert sorted(item["username_hash"] for item in items) == sorted(
        hashlib.sha256(name.encode()).hexdigest() for name in (user.username, long_name, ""))
    assert all(user.username not in str(item) for item in items)
    assert all(clock.now < item["expires_at"] <= clock.now + FIRST_LOCK + WINDOW for item in items)
    ttl = aws.client("dynamodb").describe_time_to_live(TableName=settings.signin_attempts_table)
    assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_an_expired_record_is_ignored_before_dynamodb_deletes_it(api, user, clock):
    _fail(api, user.username, FREE + 1)  # one lock: the next would be twice as long
    clock.advance(FIRST_LOCK + WINDOW)  # past expires_at; moto, like DynamoDB at times, still has the item
    assert aws.table(get_settings().signin_attempts_table).scan()["Count"] == 1
    assert _fail(api, user.username, FREE) == [401] * FREE
    _assert_locked(_sign_in(api, user.username, "x"), FIRST_LOCK)


def test_limits_come_from_the_settings(aws_mock, clock, settings_env):
    settings_env(TFBATCH_SIGNIN_FREE_FAILURES=2, TFBATCH_SIGNIN_LOCK_SECONDS=10,
                 TFBATCH_SIGNIN_MAX_LOCK_SECONDS=15, TFBATCH_SIGNIN_WINDOW_SECONDS=100)
    import app as service

    with Client(service.app, stage_name="test") as client:
        for lock in (10, 15):
            assert _fail(client.http, "someone", 2) == [401, 401]
            _assert_locked(_sign_in(client.http, "someone", "x"), lock)
            clock.advance(lock)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(username=st.text(max_size=300), password=st.text(max_size=40))
def test_any_basic_credentials_are_answered_401_or_429_never_a_server_error(api, user, username, password):
    """The examples share one moto, so repeated usernames lock: 429 is a fine answer too."""
    response = _sign_in(api, username, password)
    assert response.status_code in (401, 429), response.body[:300]
    error_of(response)
    if response.status_code == 429:
        assert int(response.headers["Retry-After"]) >= 1


def test_the_stack_gives_the_table_a_ttl_and_the_api_access_to_it():
    from deploy import stack

    table = stack.resources_for(get_settings(), "prod")["SigninAttemptsTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "username_hash", "KeyType": "HASH"}]
    policy = json.loads((ROOT / ".chalice" / "policy-api.json").read_text())
    (tables,) = [statement for statement in policy["Statement"] if statement["Sid"] == "ServiceTables"]
    assert {"Fn::GetAtt": ["SigninAttemptsTable", "Arn"]} in tables["Resource"]
