"""Scorer leases: at most one live scorer per deployment (or per shard of its keys).

Exactly-once needs every file to have one scorer. Claiming each file with a conditional write
costs a request per file; a lease costs a few requests per run. While a scorer holds the lease
of its scope, nobody else scores those keys, so a group needs no per-file claim, and any
intent it finds in the ledger was left by a scorer that died (chalicelib.state.ledger).

Scopes: "all" (an unsharded run, the sweep after shards, upload scoring) conflicts with every
other lease; "shard-IofN" (share I of N) conflicts with "all" and with itself. The leases live
on the deployment item as `lease_<scope>` = {holder, expires}; `lease_version` grows with every
change, so taking a lease is a read and a write conditional on the version read (optimistic
concurrency). Taking a lease also removes the expired leases it conflicts with, in the same
write: a scorer that only paused past its lease must find its fence (`Lease.fence`) gone,
whichever scope took its work over.

A scorer that finds the lease taken hands its work over instead of waiting: it sets `rescan`,
conditional on the version it read (so the holder cannot have released in between), and the
holder, which releases only while `rescan` is unset, passes over the bucket once more. A holder
renews its lease every third of TFBATCH_LEASE_SECONDS; one that cannot is told to stop, and
after the lease's expiry (a crash) anyone may take it. Work handed to a holder that then died
is not lost: the scheduled poller queues a run for every deployment whose `rescan` is set
while no lease is live.
"""
from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

from chalicelib.core import aws
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings

ALL = "all"
_ATTEMPTS = 1000  # optimistic retries (and seconds of waiting) before giving up


class RunStopped(Exception):
    """What stops a scorer before its work is done, as one family: the lease is lost, the
    deployment was deleted (ledger.DeploymentDeleted), or nothing can be scored (the runner's
    Fatal). A run catches this family in one place; anything else is a bug and propagates."""


class LeaseLost(RunStopped):
    """The lease could not be renewed (expired, taken over, or the deployment was deleted)."""


def shard_scope(index: int, count: int) -> str:
    """Share `index` of `count`: the count is part of the name, so a share of an earlier job
    with another count is never mistaken for a live sibling."""
    return f"shard-{index}of{count}"


def may_recover(holder: str, scope: str) -> bool:
    """Whether the holder of scope `holder` may finish intents left under `scope`: its own, and
    those of scopes that cannot be live beside it ("all" while a shard holds its lease, a
    shard of a job with another count). Never a live sibling shard's: that one is working."""
    if holder == ALL or scope in (holder, ALL):
        return True
    return holder.partition("of")[2] != scope.partition("of")[2]


def live_leases(item: dict) -> set[str]:
    """The lease attributes of a deployment item that have not expired."""
    now = time.time()
    return {name for name, value in _leases(item).items() if float(value["expires"]) > now}


def expired_leases(item: dict) -> set[str]:
    """The lease attributes whose holder stopped renewing without giving them back: it died."""
    now = time.time()
    return {name for name, value in _leases(item).items() if float(value["expires"]) <= now}


def _leases(item: dict) -> dict:
    return {name: value for name, value in item.items() if name.startswith("lease_") and name != "lease_version"}


def _table():
    return aws.table(get_settings().deployments_table)


def _attribute(scope: str) -> str:
    return f"lease_{scope.replace('-', '_')}"


class Lease:
    def __init__(self, instance_id: str, deployment_id: str, scope: str):
        self.key = {"instance_id": instance_id, "deployment_id": deployment_id}
        self.scope = scope
        self.holder = uuid.uuid4().hex
        self.seconds = get_settings().lease_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._valid_until = 0.0  # the expiry last written (time.time() seconds)
        self.held = False
        self._progress = time.monotonic()  # the work's last heartbeat (beat)
        # The longest a working scorer may go without a heartbeat: one model call at most
        # (engine bounds it), and a lease's worth for everything around it.
        settings = get_settings()
        self.quiet_seconds = settings.lease_seconds + settings.model_call_seconds

    # -- taking it -------------------------------------------------------------------------
    def acquire(self, wait_seconds: float = 0, *, read: dict | None = None) -> bool:
        """Take the lease, or hand the work to its holder; False when handed over.

        With `wait_seconds`, a run that exists to do this work (the backlog job, a shard) first
        waits that long for a holder that died to expire, rather than handing over to it. `read`
        is the deployment item just read consistently by the caller, which saves the first read:
        every write here is conditional on the version read, so a stale item only costs a retry."""
        deadline = time.monotonic() + wait_seconds
        for _ in range(_ATTEMPTS):
            item, read = read or self._read(), None
            version = int(item.get("lease_version", 0))
            if not self._conflicts(item):
                if self._take(version, stale=self._conflicting(expired_leases(item))):
                    return True
                continue
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            if self._write(version, "SET rescan = :true, lease_version = :next", {}, {":true": True}):
                return False
        raise LeaseLost("the leases kept changing; try again")

    def _read(self) -> dict:
        item = _table().get_item(Key=self.key, ConsistentRead=True).get("Item")
        if item is None:
            raise LeaseLost("the deployment no longer exists")
        return item

    def _take(self, version: int, stale: set[str]) -> bool:
        """Write this holder's lease and remove the expired ones it conflicts with (`stale`)."""
        expires = self._expiry()
        removed = {f"#stale{number}": name for number, name in enumerate(sorted(stale - {_attribute(self.scope)}))}
        update = "SET #lease = :mine, lease_version = :next" + (f" REMOVE {', '.join(removed)}" if removed else "")
        taken = self._write(version, update, {"#lease": _attribute(self.scope), **removed},
                            {":mine": {"holder": self.holder, "expires": expires}})
        if taken:
            self.held, self._valid_until = True, float(expires)
            self.beat()
            self._renewer = threading.Thread(target=self._renew_until_stopped, name="lease", daemon=True)
            self._renewer.start()
        return taken

    def _conflicts(self, item: dict) -> bool:
        return bool(self._conflicting(live_leases(item)))

    def _conflicting(self, names: set[str]) -> set[str]:
        """The lease attributes among `names` this scope cannot be held beside."""
        return set(names) if self.scope == ALL else names & {_attribute(ALL), _attribute(self.scope)}

    def _write(self, version: int, update: str, names: dict, values: dict) -> bool:
        condition = "attribute_exists(deployment_id) AND "
        condition += "lease_version = :version" if version else "attribute_not_exists(lease_version)"
        return aws.conditionally(
            _table().update_item, Key=self.key, UpdateExpression=update, ConditionExpression=condition,
            **({"ExpressionAttributeNames": names} if names else {}),
            ExpressionAttributeValues={**values, ":next": version + 1, **({":version": version} if version else {})})

    def _expiry(self) -> Decimal:
        return Decimal(str(round(time.time() + self.seconds, 3)))

    # -- holding it ------------------------------------------------------------------------
    def beat(self) -> None:
        """The work made progress: renewing the lease is still earned."""
        self._progress = time.monotonic()

    def _renew_until_stopped(self) -> None:
        """Renew every third of the lease, as long as the work keeps beating: a scorer stuck
        somewhere (a call that never returns) lets its lease go, and the poller gives the work
        to another, instead of renewing forever on a timer. A renewal refused means the lease
        is gone; one that fails (the network, throttling) is tried again at the next tick, but
        once less than a tick of the lease is left the holder is told it lost it, before anyone
        else may take it."""
        while not self._stop.wait(self.seconds / 3):
            if time.monotonic() - self._progress > self.quiet_seconds:
                logger.warning("no progress; letting the lease go", extra={
                    "deployment_id": self.key["deployment_id"], "scope": self.scope,
                    "quiet_seconds": round(time.monotonic() - self._progress, 1)})
                self.lost.set()
                return
            expires = self._expiry()
            try:
                renewed = self._update("SET #lease.expires = :expires ADD lease_version :one", {":expires": expires})
            except Exception:
                logger.warning("lease renewal failed; retrying", exc_info=True,
                               extra={"deployment_id": self.key["deployment_id"], "scope": self.scope})
                if time.time() >= self._valid_until - self.seconds / 3:
                    self.lost.set()
                    return
                continue
            if not renewed:
                self.lost.set()
                return
            self._valid_until = float(expires)

    def fence(self) -> dict:
        """The condition, on the deployment item, that this scorer still holds its lease. Every
        effect of a scorer on shared state is made conditional on it (fencing): a scorer paused
        past its lease (a GC pause, a frozen container, a stalled network) that resumes after
        another took over finds its writes refused, instead of landing beside the new holder's.
        `check` is only the early warning. Values are plain (the resource API's); the client's
        callers serialize them."""
        return {"ConditionExpression": "#lease.holder = :holder",
                "ExpressionAttributeNames": {"#lease": _attribute(self.scope)},
                "ExpressionAttributeValues": {":holder": self.holder}}

    def check(self) -> None:
        """Raise LeaseLost when the lease is gone: call before anything that writes results."""
        if self.lost.is_set():
            raise LeaseLost(f"the {self.scope} lease of deployment {self.key['deployment_id']} was lost")

    def _update(self, update: str, values: dict, extra_condition: str = "") -> bool:
        return aws.conditionally(
            _table().update_item, Key=self.key, UpdateExpression=update,
            ConditionExpression="#lease.holder = :me" + extra_condition,
            ExpressionAttributeNames={"#lease": _attribute(self.scope)},
            ExpressionAttributeValues={**values, ":me": self.holder, ":one": 1})

    # -- giving it back --------------------------------------------------------------------
    def release(self, *, unless_rescan: bool) -> bool:
        """Give the lease back; with `unless_rescan`, only while nobody handed work over (False:
        the holder must pass over the bucket again, and the flag is cleared for that pass)."""
        if unless_rescan:
            if self._update("REMOVE #lease ADD lease_version :one", {":false": False},
                            " AND (attribute_not_exists(rescan) OR rescan = :false)"):
                self._stop_renewing()
                return True
            if not self._update("SET rescan = :false ADD lease_version :one", {":false": False}):
                raise LeaseLost(f"the {self.scope} lease of deployment {self.key['deployment_id']} was lost")
            return False
        self._update("REMOVE #lease ADD lease_version :one", {})
        self._stop_renewing()
        return True

    def abandon(self) -> None:
        """Give the lease back if it is still held (a run that ended early or failed)."""
        if self.held:
            self._update("REMOVE #lease ADD lease_version :one", {})
            self._stop_renewing()

    def _stop_renewing(self) -> None:
        self.held = False
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
