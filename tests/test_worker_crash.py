"""Recovery in seconds on the upload path: the local worker (the very handler Lambda runs) is
SIGKILLed while it scores uploads announced by bucket notifications, and no file is uploaded
after. A new worker notices the dead scorer's lease once it expires, at its next poll, and
reruns the work: SUCCESS with exact counts and one record per input, long before the queue
would show the killed batch's messages again (the visibility timeout, about 16 minutes).

Driven by progress: the kill comes once the first result file of the uploads is there."""
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
from chalicelib.core.resources import FUNCTION_TIMEOUT_SECONDS
from chalicelib.core.settings import get_settings
from flows import records_by_file, tenant

FILES, BAD_EVERY = 150, 13
TFBATCH = str(Path(sys.executable).parent / "tfbatch")
RECOVERY_LIMIT = 240  # seconds; the killed batch's messages would come back after FUNCTION_TIMEOUT_SECONDS + 60


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen([TFBATCH, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _item(instance_id: str, deployment_id: str) -> dict:
    return aws.table(get_settings().deployments_table).get_item(
        Key={"instance_id": instance_id, "deployment_id": deployment_id}, ConsistentRead=True)["Item"]


def _until(check, worker: subprocess.Popen, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker ended: {worker.stdout.read().decode()[-3000:]}"
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


def _stop(worker: subprocess.Popen, sig: int) -> str:
    if worker.poll() is None:
        os.killpg(worker.pid, sig)
    return worker.communicate(timeout=60)[0].decode()


def test_a_worker_killed_on_the_upload_path_is_recovered_at_the_next_poll(server_aws, model_dirs):
    assert RECOVERY_LIMIT < FUNCTION_TIMEOUT_SECONDS + 60  # recovery must not be the messages coming back
    user = tenant(server_aws)
    s3 = user.s3()
    s3.create_bucket(Bucket="upl-in")
    s3.create_bucket(Bucket="upl-out")
    model_id = user.publish(model_dirs["multi_io"])
    deployment_id = body(user.deploy(model_id, "upl-in", "upl-out"))["metadata"]["guid"]
    ids = (user.instance_id, deployment_id)
    assert _item(*ids)["trigger"] == "notifications"  # uploads announce themselves: the upload path
    env = {**os.environ, "TFBATCH_STAGE": "test", "TFBATCH_AWS_ENDPOINT": server_aws, "TFBATCH_LEASE_SECONDS": "3",
           "TFBATCH_POLL_SECONDS": "1", "TFBATCH_FILES_PER_OUTPUT": "5", "TFBATCH_BATCH_SIZE": "4",
           "TFBATCH_BACKLOG_THRESHOLD": "100000"}  # never hand the uploads to a backlog run

    first = _worker(env)
    try:
        _until(lambda: _item(*ids)["status"] == "SUCCESS", first, 120, "the first run over the empty bucket")
        bad = set()
        for number in range(FILES):
            key = f"u{number:04d}.json"
            if number % BAD_EVERY == 0:
                bad.add(key)
            s3.put_object(Bucket="upl-in", Key=key,
                          Body=b"{oops" if key in bad else json.dumps({"a": [[number, 1, 2]], "b": [number]}).encode())
        _until(lambda: s3.list_objects_v2(Bucket="upl-out").get("KeyCount", 0) > 0, first, 120,
               "the first result file of the uploads")
    finally:
        killed_output = _stop(first, signal.SIGKILL)
    item = _item(*ids)
    assert int(item["scored"]) + int(item["failed"]) < FILES, "the uploads were all scored before the kill"
    assert "upload" in killed_output or item["path"] == "uploads", killed_output[-3000:]

    killed_at = time.monotonic()
    second = _worker(env)  # a fresh process, as Lambda starts one; nothing is uploaded any more
    try:
        done = lambda: (item := _item(*ids))["status"] == "SUCCESS" and int(item["scored"]) + int(item["failed"]) \
            == FILES
        _until(done, second, RECOVERY_LIMIT, "SUCCESS with every upload counted")
    finally:
        recovered_output = _stop(second, signal.SIGTERM)
    assert time.monotonic() - killed_at < RECOVERY_LIMIT, recovered_output[-3000:]

    item = _item(*ids)
    assert (int(item["scored"]), int(item["failed"]), int(item["pending"])) == (FILES - len(bad), len(bad), 0)
    records, errors = records_by_file(user.outputs("upl-out"))
    assert errors == bad
    assert set(records) == {f"u{number:04d}.json" for number in range(FILES)}  # an error element is a record too
    assert set(records.values()) == {1}, {name: count for name, count in records.items() if count != 1}
