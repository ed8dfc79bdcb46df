"""Scorer leases: one live scorer per deployment (or shard), work handed over instead of lost."""
from __future__ import annotations

import time

import pytest

from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from chalicelib.state import leases


@pytest.fixture
def deployment(aws_mock, settings_env):
    # Leases that outlast any pause of a loaded machine: a test that needs one to lapse shortens it
    # itself, so no other test depends on the scheduler renewing in time.
    settings_env(TFBATCH_LEASE_SECONDS=60)
    key = {"instance_id": "i-1", "deployment_id": "d-1"}
    aws.table(get_settings().deployments_table).put_item(Item=key)
    return key


def _lease(scope: str = leases.ALL) -> leases.Lease:
    return leases.Lease("i-1", "d-1", scope)


def _item(key: dict) -> dict:
    return aws.table(get_settings().deployments_table).get_item(Key=key, ConsistentRead=True)["Item"]


def test_a_second_scorer_hands_over_and_the_holder_passes_again_before_releasing(deployment):
    holder, late = _lease(), _lease()
    assert holder.acquire()
    assert not late.acquire()  # handed over: the holder must look again
    assert _item(deployment)["rescan"] is True
    assert not holder.release(unless_rescan=True)  # so it may not leave yet
    assert _item(deployment)["rescan"] is False
    assert holder.release(unless_rescan=True)
    assert not leases.live_leases(_item(deployment))
    assert late.acquire()
    late.release(unless_rescan=True)


def test_shards_hold_leases_side_by_side_but_never_with_the_whole(deployment):
    first, second = _lease(leases.shard_scope(0, 2)), _lease(leases.shard_scope(1, 2))
    assert first.acquire() and second.acquire()
    assert not _lease(leases.shard_scope(1, 2)).acquire()  # the same shard twice: no
    assert not _lease().acquire()  # the whole deployment while shards run: no
    first.release(unless_rescan=False)
    second.release(unless_rescan=False)
    whole = _lease()
    assert whole.acquire()
    assert not _lease(leases.shard_scope(0, 2)).acquire()
    whole.abandon()


def test_a_dead_holders_lease_is_waited_out_by_a_job(deployment, settings_env):
    settings_env(TFBATCH_LEASE_SECONDS=1)
    dead = _lease()
    assert dead.acquire()
    dead._stop_renewing()  # the process died: nobody renews
    started = time.monotonic()
    job = _lease()
    assert job.acquire(wait_seconds=5)
    assert 0.5 < time.monotonic() - started < 5
    job.abandon()


def test_a_holder_that_cannot_renew_is_stopped(deployment, settings_env):
    settings_env(TFBATCH_LEASE_SECONDS=1)
    holder = _lease()
    assert holder.acquire()
    aws.table(get_settings().deployments_table).delete_item(Key=deployment)  # the deployment is deleted
    deadline = time.monotonic() + 5
    while not holder.lost.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(leases.LeaseLost):
        holder.check()


def test_the_poller_requeues_work_handed_to_a_scorer_that_died(deployment, settings_env):
    settings_env(TFBATCH_LEASE_SECONDS=1)
    from chalicelib.scoring import worktasks

    aws.table(get_settings().deployments_table).update_item(
        Key=deployment, UpdateExpression="SET #s = :s, modified_at = :now, #t = :t",
        ExpressionAttributeNames={"#s": "status", "#t": "trigger"},
        ExpressionAttributeValues={":s": "DEPLOY_IN_PROGRESS", ":now": "2026-01-01T00:00:00.000Z",
                                   ":t": "notifications"})
    holder = _lease()
    assert holder.acquire()
    assert not _lease().acquire()  # handed over
    assert worktasks.poll_stores() == 0  # the holder is alive: it will pass again
    holder._stop_renewing()  # and now it died without doing so
    time.sleep(1.1)
    assert worktasks.poll_stores() == 1


def test_a_burst_queues_one_run_and_otherwise_only_owes_passes(deployment):
    from chalicelib.state import deployments

    assert deployments.owe_pass("i-1", "d-1")  # nobody on it: queue a run
    assert not deployments.owe_pass("i-1", "d-1")  # that run will pass over the bucket
    assert _item(deployment)["path"] == deployments.BACKLOG
    holder = _lease()
    assert holder.acquire()  # the queued run starts and clears the flag for its pass
    deployments.start_pass("i-1", "d-1", holder.fence())
    assert not deployments.owe_pass("i-1", "d-1")  # the holder owes another pass now
    assert not holder.release(unless_rescan=True)  # so it passes again, clearing the flag
    assert holder.release(unless_rescan=True)
    assert deployments.owe_pass("i-1", "d-1")  # idle again: a new burst queues a new run
    aws.table(get_settings().deployments_table).delete_item(Key=deployment)
    assert not deployments.owe_pass("i-1", "d-1")  # deleted: nothing to queue


def test_a_stale_item_given_to_acquire_only_costs_a_retry(deployment):
    stale = _item(deployment)  # read before someone else took the lease
    holder = _lease()
    assert holder.acquire()
    assert not _lease().acquire(read=stale)  # the conditional take fails, the re-read sees the holder
    assert _item(deployment)["rescan"] is True  # and the work was handed over, not raced
    assert not holder.release(unless_rescan=True)
    assert holder.release(unless_rescan=True)
    released = _item(deployment)
    late = _lease()
    assert late.acquire(read=stale)  # stale the other way: the retry finds it free
    assert leases.live_leases(_item(deployment)) and not leases.live_leases(released)
    late.release(unless_rescan=False)


def test_a_holder_whose_renewals_fail_is_told_before_its_lease_ends(deployment, monkeypatch, settings_env):
    settings_env(TFBATCH_LEASE_SECONDS=3)  # renewals every second; told with a second to spare
    holder = _lease()
    assert holder.acquire()

    def unreachable(*args, **kwargs):
        raise ConnectionError("the network is down")  # injected: renewals cannot reach DynamoDB

    monkeypatch.setattr(holder, "_update", unreachable)
    started = time.time()
    assert holder.lost.wait(timeout=5)
    assert time.time() < float(_item(deployment)["lease_all"]["expires"])  # told while it still held it
    assert time.time() - started < holder.seconds
    holder._stop_renewing()


def test_a_holder_whose_work_stops_beating_lets_the_lease_go(deployment, settings_env):
    """Renewal follows the work's heartbeats, not a bare timer: stuck work loses the lease."""
    settings_env(TFBATCH_LEASE_SECONDS=1, TFBATCH_MODEL_CALL_SECONDS=1)  # quiet for 2 s at most
    working, stuck = _lease(leases.shard_scope(0, 2)), _lease(leases.shard_scope(1, 2))
    assert working.acquire() and stuck.acquire()
    while not stuck.lost.is_set():  # it goes once the quiet limit passes
        working.beat()
        time.sleep(0.05)
    assert not working.lost.is_set()  # beating all along, it kept its lease
    with pytest.raises(leases.LeaseLost):
        stuck.check()
    working.release(unless_rescan=False)
