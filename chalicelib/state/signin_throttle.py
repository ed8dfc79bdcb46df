"""Password guessing, slowed per username: a few free attempts, then locks that double.

Every sign-in first takes one attempt from its username's allowance, and only then is the
password checked, so parallel guesses cannot all be verified before any of them is counted. An
attempt stays counted until a sign-in with that username succeeds, which resets the record. After
`signin_free_failures` attempts within `signin_window_seconds`, the next attempt locks the username
for `signin_lock_seconds`, doubled with each further lock up to `signin_max_lock_seconds`. While it
is locked every attempt is refused with 429 and `Retry-After`, the right password included, and
no password is checked (a cheap refusal).

Per username, not per source IP: API Gateway does tell the caller's IP, but an attacker rotates
addresses for free, while the username is what every guess has in common. The price is that
anyone can lock a username for a while; locks are short, and tokens already issued keep working
(and are refreshed with PUT, without the password). For the same reason more than
`signin_free_failures` sign-ins of one username at the same instant can see 429: an attempt
counts while its password is being checked.

Unknown usernames get a record and locks exactly like known ones, and nothing here reads the
credentials, so neither a refusal nor its timing tells whether a username exists. Records are
keyed by the SHA-256 of the username (attacker text of any length) and expire through DynamoDB's
TTL, so guesses at random usernames cannot grow the table without bound.

Each change is a write conditioned on the version that was read (optimistic concurrency), so of
many parallel attempts exactly the free ones get through.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from chalicelib.core import aws
from chalicelib.core.errors import TooManyRequests, header
from chalicelib.core.settings import Settings, get_settings

# Wall-clock seconds: every API process shares the records, and DynamoDB's TTL reads epoch seconds.
# Tests replace it to move time without sleeping.
clock: Callable[[], float] = time.time

_MAX_DOUBLINGS = 30  # past any sensible cap; keeps 2**locks small


@dataclass(frozen=True)
class Limits:
    free_failures: int
    window_seconds: int
    lock_seconds: int
    max_lock_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.signin_free_failures, settings.signin_window_seconds,
                   settings.signin_lock_seconds, settings.signin_max_lock_seconds)

    def lock_after(self, locks: int) -> int:
        """Seconds of the lock that follows `locks` earlier ones: the first lock, doubled each time, capped."""
        return min(self.lock_seconds * 2 ** min(locks, _MAX_DOUBLINGS), self.max_lock_seconds)


@dataclass(frozen=True)
class Record:
    """One username's attempts since its last successful sign-in (times in epoch seconds)."""

    attempts: int = 0  # counted in the current window
    window_ends: float = 0.0
    locked_until: float = 0.0
    locks: int = 0  # each doubles the next

    def expires_at(self, limits: Limits) -> int:
        """When the record may be forgotten: one quiet window after its window or lock ends."""
        return math.ceil(max(self.window_ends, self.locked_until) + limits.window_seconds)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds until an attempt may be allowed again, when refused


def decide(record: Record, now: float, limits: Limits) -> tuple[Verdict, Record | None]:
    """The verdict on one more attempt, and the record to write for it (None: nothing changes)."""
    if record.locked_until > now:
        return Verdict(False, max(1, math.ceil(record.locked_until - now))), None
    if record.window_ends <= now:
        record = replace(record, attempts=0, window_ends=now + limits.window_seconds)
    if record.attempts < limits.free_failures:
        return Verdict(True), replace(record, attempts=record.attempts + 1)
    lock = limits.lock_after(record.locks)
    # The next window starts when the lock ends, with the attempts of this one forgotten.
    until = now + lock
    return Verdict(False, lock), Record(attempts=0, window_ends=until, locked_until=until, locks=record.locks + 1)


def admit(username: str) -> None:
    """Count one sign-in attempt for this username before its password is checked.

    Raises TooManyRequests while the username is locked, and for the attempt that locks it.
    """
    settings = get_settings()
    limits = Limits.from_settings(settings)
    table = aws.table(settings.signin_attempts_table)
    key = _key(username)
    # Every write that beats ours moves the record one step towards its lock, after which
    # attempts are refused on a read alone: free_failures + 1 lost races at most, barring resets.
    for _ in range(limits.free_failures + 3):
        now = clock()
        record, version = _read(table, key, now)
        verdict, changed = decide(record, now, limits)
        if changed is None or _write(table, key, changed, version, limits):
            if not verdict.allowed:
                raise _refusal(verdict.retry_after)
            return
    raise _refusal(1)  # always beaten by parallel attempts: refuse rather than check unthrottled


def succeeded(username: str) -> None:
    """The right password: forget the username's attempts and locks.

    A reset rather than a delete, so that versions only grow and a write conditioned on an old
    version can never match a newer record.
    """
    aws.conditionally(
        aws.table(get_settings().signin_attempts_table).update_item,
        Key=_key(username),
        UpdateExpression="SET attempts = :zero, locked_until = :zero, #locks = :zero ADD #version :one",
        ConditionExpression="attribute_exists(username_hash)",
        ExpressionAttributeNames={"#locks": "locks", "#version": "version"},  # reserved words
        ExpressionAttributeValues={":zero": 0, ":one": 1},
    )


def _refusal(retry_after: int) -> TooManyRequests:
    # The same words for every username, known or not; never the username or password.
    return TooManyRequests(
        f"Too many sign-in attempts with this username: sign-in is locked for {retry_after} more "
        f"seconds, and until then even the right password is refused. Try again after Retry-After.",
        retry_after=retry_after, code="too_many_attempts", target=header("Authorization"),
    )


def _key(username: str) -> dict[str, str]:
    """A fixed-size key that holds none of the attacker's text."""
    return {"username_hash": hashlib.sha256(username.encode()).hexdigest()}


def _read(table: Any, key: dict[str, str], now: float) -> tuple[Record, int | None]:
    """The record and its version (None: no item); an expired item reads as a fresh record."""
    item = table.get_item(Key=key, ConsistentRead=True).get("Item")
    if item is None:
        return Record(), None
    version = int(item["version"])
    if item["expires_at"] <= now:  # TTL deletes lazily (within days), so expiry is checked here too
        return Record(), version
    return Record(attempts=int(item["attempts"]), window_ends=float(item["window_ends"]),
                  locked_until=float(item["locked_until"]), locks=int(item["locks"])), version


def _write(table: Any, key: dict[str, str], record: Record, version: int | None, limits: Limits) -> bool:
    """Store the record unless another attempt changed the item since it was read; False if one did."""
    item = {**key, "attempts": record.attempts, "window_ends": _seconds(record.window_ends),
            "locked_until": _seconds(record.locked_until), "locks": record.locks,
            "expires_at": record.expires_at(limits), "version": (version or 0) + 1}
    if version is None:
        return aws.conditionally(table.put_item, Item=item, ConditionExpression="attribute_not_exists(username_hash)")
    return aws.conditionally(table.put_item, Item=item, ConditionExpression="#version = :seen",
                             ExpressionAttributeNames={"#version": "version"},
                             ExpressionAttributeValues={":seen": version})


def _seconds(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))
