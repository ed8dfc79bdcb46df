"""Fencing: a scorer frozen past its lease (SIGSTOP, as a GC pause or a frozen container would
leave it) while another takes over and finishes, then resumed (SIGCONT), lands nothing: every
input still has exactly one result record, the counters are exact, and the late scorer says
why it stopped.

Driven by progress, not timers: the first scorer is frozen once it has recorded an intent, or
once its first result file is there, so it is caught between intent, write and commit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apiclient import body
from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from flows import records_by_file, tenant

FILES, BAD_EVERY = 240, 17
TFBATCH = str(Path(sys.executable).parent / "tfbatch")


def _job(env: dict, instance_id: str, deployment_id: str) -> subprocess.Popen:
    return subprocess.Popen([TFBATCH, "job", "run", "--instance", instance_id, "--deployment", deployment_id],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _intents(deployment_id: str) -> int:
    found = aws.client("dynamodb").query(
        TableName=get_settings().groups_table, KeyConditionExpression="deployment_id = :id",
        ExpressionAttributeValues={":id": {"S": f"{deployment_id}#intents"}}, Select="COUNT", ConsistentRead=True)
    return found["Count"]


def _wait_for(condition, job: subprocess.Popen) -> None:
    while not condition():
        assert job.poll() is None, f"the scorer ended before it could be frozen: {job.stdout.read()[-2000:]}"
        time.sleep(0.01)


@pytest.mark.parametrize("frozen_after", ["intent", "first result file"])
def test_a_scorer_frozen_past_its_lease_lands_nothing_when_it_resumes(server_aws, model_dirs, frozen_after):
    user = tenant(server_aws)
    s3 = user.s3()
    s3.create_bucket(Bucket="fence-in")
    s3.create_bucket(Bucket="fence-out")
    bad = set()
    for number in range(FILES):
        key = f"f{number:04d}.json"
        if number % BAD_EVERY == 0:
            bad.add(key)
        s3.put_object(Bucket="fence-in", Key=key,
                      Body=b"{oops" if key in bad else json.dumps({"a": [[number, 1, 2]], "b": [number]}).encode())
    model_id = user.publish(model_dirs["multi_io"])
    deployment_id = body(user.deploy(model_id, "fence-in", "fence-out"))["metadata"]["guid"]
    env = {**os.environ, "TFBATCH_STAGE": "test", "TFBATCH_AWS_ENDPOINT": server_aws, "TFBATCH_LEASE_SECONDS": "2",
           "TFBATCH_FILES_PER_OUTPUT": "20", "TFBATCH_BATCH_SIZE": "8"}

    late = _job(env, user.instance_id, deployment_id)
    if frozen_after == "intent":
        _wait_for(lambda: _intents(deployment_id) > 0, late)
    else:
        _wait_for(lambda: s3.list_objects_v2(Bucket="fence-out").get("KeyCount", 0) > 0, late)
    late.send_signal(signal.SIGSTOP)
    try:
        taker = _job(env, user.instance_id, deployment_id)  # waits the frozen lease out, recovers, finishes
        output = taker.communicate(timeout=300)[0].decode()
        assert taker.returncode == 0 and "SUCCESS: " in output, output
    finally:
        late.send_signal(signal.SIGCONT)
    late_output = late.communicate(timeout=120)[0].decode()
    assert "run stopped" in late_output and ("lost" in late_output or "stops without writing more" in late_output), \
        late_output[-3000:]

    records, errors = records_by_file(user.outputs("fence-out"))
    assert {name: count for name, count in records.items() if count != 1} == {}
    assert set(records) == {f"f{number:04d}.json" for number in range(FILES)}
    assert errors == bad
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert details == {"status": "SUCCESS", "total": FILES, "scored": FILES - len(bad), "failed": len(bad),
                       "pending": 0, "progress": 1.0}
    assert _intents(deployment_id) == 0


def test_a_result_write_stalled_past_the_lease_is_refused_when_it_lands(server_aws, model_dirs, settings_env):
    """The network, not the process, stalls: the scorer's first result write hangs in a proxy.
    The scorer's work stops beating, so its lease lapses; another scorer takes over, claims the
    stalled file's name and finishes; released, the stalled write reaches the store and is
    refused (create-only), and the late scorer stops."""
    from faultproxy import FaultProxy

    with FaultProxy(server_aws, seed=0, rates={}) as proxy:  # no random faults: only the stall
        settings_env(TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT=proxy.url)  # the store users connect to, too
        user = tenant(proxy.url)
        s3 = user.s3()
        s3.create_bucket(Bucket="stall-in")
        s3.create_bucket(Bucket="stall-out")
        for number in range(FILES):
            s3.put_object(Bucket="stall-in", Key=f"f{number:04d}.json",
                          Body=json.dumps({"a": [[number, 1, 2]], "b": [number]}).encode())
        model_id = user.publish(model_dirs["multi_io"])
        deployment_id = body(user.deploy(model_id, "stall-in", "stall-out"))["metadata"]["guid"]
        env = {**os.environ, "TFBATCH_STAGE": "test", "TFBATCH_AWS_ENDPOINT": proxy.url,
               "TFBATCH_LEASE_SECONDS": "2", "TFBATCH_MODEL_CALL_SECONDS": "2",  # quiet for 4 s: the lease lapses
               "TFBATCH_FILES_PER_OUTPUT": "20", "TFBATCH_BATCH_SIZE": "8"}
        proxy.enabled = True
        held, release = proxy.stall(lambda method, path: method == "PUT" and path.startswith("/stall-out/predictions-"))
        late = _job(env, user.instance_id, deployment_id)
        _wait_for(lambda: held.wait(0.05), late)
        try:
            taker = _job(env, user.instance_id, deployment_id)  # waits the lapsed lease out, claims, finishes
            output = taker.communicate(timeout=300)[0].decode()
            assert taker.returncode == 0 and "SUCCESS: " in output, output
        finally:
            release.set()
        late_output = late.communicate(timeout=120)[0].decode()
        # It stops on whichever it meets first: its lease known lost, or its write refused.
        assert "run stopped" in late_output and ("lost" in late_output or "claimed" in late_output), \
            late_output[-3000:]

        records, _ = records_by_file(user.outputs("stall-out"))
        assert {name: count for name, count in records.items() if count != 1} == {}
        assert set(records) == {f"f{number:04d}.json" for number in range(FILES)}
        details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
        assert details == {"status": "SUCCESS", "total": FILES, "scored": FILES, "failed": 0, "pending": 0,
                           "progress": 1.0}
        assert _intents(deployment_id) == 0
