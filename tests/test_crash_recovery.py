"""Exactly once, whatever happens: the scoring job is SIGKILLed at random points during a run of
a few thousand files and restarted; in the end every input has exactly one result record
across all output files, and the deployment's counters agree."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apiclient import body
from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from chalicelib.state.ledger import Ledger
from flows import records_by_file, tenant

FILES = int(os.environ.get("TFBATCH_CRASH_FILES", 2500))
BAD_EVERY = 23  # every 23rd file is not JSON
LEASE_SECONDS = 2
TFBATCH = str(Path(sys.executable).parent / "tfbatch")
KILLS = 6
MAX_STEP = max(1, FILES // 40 // KILLS)  # a run writes 1 or 2 result objects per 40 files: all kills fit


def _result_objects(s3) -> int:
    return s3.list_objects_v2(Bucket="crash-out").get("KeyCount", 0)


def _put_inputs(s3) -> dict[str, bool]:
    s3.create_bucket(Bucket="crash-in")
    s3.create_bucket(Bucket="crash-out")

    def put(number: int) -> tuple[str, bool]:
        key = f"f{number:05d}.json"
        bad = number % BAD_EVERY == 0
        content = b"{broken" if bad else json.dumps({"a": [[number, 1, 2]], "b": [number]}).encode()
        s3.put_object(Bucket="crash-in", Key=key, Body=content)
        return key, bad

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(put, range(FILES)))


def _job(env: dict, instance_id: str, deployment_id: str) -> subprocess.Popen:
    return subprocess.Popen([TFBATCH, "job", "run", "--instance", instance_id, "--deployment", deployment_id],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_at_random_points_loses_nothing_and_duplicates_nothing(server_aws, model_dirs):
    user = tenant(server_aws)
    inputs = _put_inputs(user.s3())
    model_id = user.publish(model_dirs["multi_io"])
    created = user.deploy(model_id, "crash-in", "crash-out")
    assert created.status_code == 201
    deployment_id = body(created)["metadata"]["guid"]
    env = {**os.environ, "TFBATCH_STAGE": "test", "TFBATCH_AWS_ENDPOINT": server_aws,
           "TFBATCH_LEASE_SECONDS": str(LEASE_SECONDS), "TFBATCH_FILES_PER_OUTPUT": "40",
           "TFBATCH_BATCH_SIZE": "16"}

    seed = int(os.environ.get("TFBATCH_CRASH_SEED", time.time()))
    rng = random.Random(seed)
    s3 = user.s3()
    for kill in range(KILLS):
        job = _job(env, user.instance_id, deployment_id)
        # Killed on progress, not on a timer: once a few more result objects have landed (each
        # kill waits for at most MAX_STEP, and a full run writes far more than KILLS * MAX_STEP),
        # then a moment later, so kills fall anywhere between a write and its commit.
        target = _result_objects(s3) + rng.randint(1, MAX_STEP)
        while _result_objects(s3) < target:
            assert job.poll() is None, f"seed {seed}: the job ended before kill {kill}: {job.stdout.read()[-2000:]}"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        print(f"kill {kill} at {_result_objects(s3)} result objects", flush=True)
        job.send_signal(signal.SIGKILL)
        job.wait()

    time.sleep(LEASE_SECONDS + 0.5)  # the dead jobs' claims expire
    final = _job(env, user.instance_id, deployment_id)
    output = final.communicate(timeout=600)[0].decode()
    assert final.returncode == 0, output

    records, errors = records_by_file(user.outputs("crash-out"))
    duplicated = {name: count for name, count in records.items() if count != 1}
    assert not duplicated, f"seed {seed}: files with more than one result: {sorted(duplicated)[:10]}"
    assert set(records) == set(inputs), f"seed {seed}: missing results for {sorted(set(inputs) - set(records))[:10]}"
    assert errors == {key for key, bad in inputs.items() if bad}

    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    bad_count = sum(inputs.values())
    assert details | {"progress": 1.0} == {"status": "SUCCESS", "total": FILES, "scored": FILES - bad_count,
                                           "failed": bad_count, "pending": 0, "progress": 1.0}
    statuses = Ledger(user.instance_id, deployment_id, "").recount()  # key items and range records
    assert statuses == {"scored": FILES - bad_count, "failed": bad_count}, f"seed {seed}: {statuses}"
    listed = [item for page in aws.client("dynamodb").get_paginator("query").paginate(
        TableName=get_settings().groups_table, KeyConditionExpression="deployment_id = :id",
        ExpressionAttributeValues={":id": {"S": f"{deployment_id}#files"}}) for item in page["Items"]]
    assert (sum(int(item["scored"]["N"]) for item in listed), sum(int(item["failed"]["N"]) for item in listed)) == (
        FILES - bad_count, bad_count), f"seed {seed}: each committed group is listed once"
