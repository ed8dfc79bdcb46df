"""Chaos soak: exactly once while the network between the service and its stores misbehaves.

A fault-injecting proxy (tests/faultproxy.py) sits between every scoring process and the moto
server: it is the service's AWS endpoint (DynamoDB, SQS, Secrets Manager, EventBridge) and the
users' store (the deployments' connection URL, so the data path goes through it too). While
the soak runs it throttles, fails with 500s, resets connections before and after forwarding
(the request took effect, the client never hears it) and slows responses, at random.

Two deployments: A on a bucket holding a backlog, scored by the backlog job (`tfbatch job run`
subprocesses, SIGKILLed on progress: after a random number of new result objects), while
uploads land in its bucket too; B on a bucket that only gets uploads. Uploads are announced by
the bucket's notifications to the tasks queue and handled in this process by the queue's
handler (`app.handle_tasks`), as the local worker would. In the end, after the poller and the
runs it queues: every input has exactly one result record (empty `[]` files are names claimed
by fencing), the ledger has one item per input, `status_details` are exact, both deployments
are SUCCESS and no intent is left.

Size and mix (environment):
- TFBATCH_CHAOS_FILES: files in A's backlog (default 1000; the whole test takes 2-3 minutes
  on 2 busy cores, most of it the job's restarts);
- TFBATCH_CHAOS_UPLOADS: uploads, spread over A and B (default 200);
- TFBATCH_CHAOS_KILLS: SIGKILLs of the backlog job (default 3);
- TFBATCH_CHAOS_RATE: share of S3 reads that fail (default 0.03, split over throttling,
  500s, resets before and after forwarding), twice that of writes, and as many again slowed;
- TFBATCH_CHAOS_SEED: the seed (printed; default: the clock). Threads draw from one seeded
  RNG, so a seed reproduces the mix, not the exact order.
A larger soak: `TFBATCH_CHAOS_FILES=5000 TFBATCH_CHAOS_UPLOADS=800 TFBATCH_CHAOS_KILLS=8
.venv/bin/python -m pytest tests/test_chaos.py -s`.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

import faultproxy
from apiclient import body
from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from chalicelib.scoring import worktasks
from chalicelib.state import deployments, leases
from chalicelib.state.ledger import Ledger
from flows import records_by_file, tenant

FILES = int(os.environ.get("TFBATCH_CHAOS_FILES", 1000))
UPLOADS = int(os.environ.get("TFBATCH_CHAOS_UPLOADS", 200))
KILLS = int(os.environ.get("TFBATCH_CHAOS_KILLS", 3))
RATE = float(os.environ.get("TFBATCH_CHAOS_RATE", 0.03))
LEASE_SECONDS = 3
FILES_PER_OUTPUT = 40
BAD_EVERY = 23
TFBATCH = str(Path(sys.executable).parent / "tfbatch")
SETTLE_SECONDS = 120  # after the soak, for the poller and its runs to settle everything


def _content(number: int, bad: bool) -> bytes:
    return b"{broken" if bad else json.dumps({"a": [[number, 1, 2]], "b": [number]}).encode()


def _direct_s3(url: str):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id="k", aws_secret_access_key="s",
                        region_name="us-east-1")


def _result_objects(s3, bucket: str) -> int:
    return s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)


class Uploads(threading.Thread):
    """Uploads in bursts to A's and B's buckets, and the queue's handler for what they announce
    (in this process, as the local worker calls it); goes on handling the queue until stopped."""

    def __init__(self, s3, sqs, queue: str, rng: random.Random, buckets: tuple[str, str]):
        super().__init__(name="uploads", daemon=True)
        self.s3, self.sqs, self.queue, self.rng, self.buckets = s3, sqs, queue, rng, buckets
        self.inputs: dict[str, dict[str, bool]] = {bucket: {} for bucket in buckets}
        self.uploaded = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.batches = self.failed_batches = 0

    def run(self) -> None:
        try:
            number = 0
            while number < UPLOADS:
                burst = min(self.rng.randint(1, 20), UPLOADS - number)
                bucket = self.rng.choice(self.buckets)
                for _ in range(burst):
                    key, bad = f"u{number:05d}.json", number % 17 == 0
                    self.s3.put_object(Bucket=bucket, Key=key, Body=_content(number, bad))
                    self.inputs[bucket][key] = bad
                    number += 1
                self.drain()
                time.sleep(self.rng.uniform(0, 0.5))
            self.uploaded.set()
            while not self.stop.is_set():
                self.drain()
                time.sleep(0.2)
        except BaseException as error:  # raised in the test
            self.error = error
            self.uploaded.set()

    def drain(self) -> None:
        """Hand every waiting message to the queue's handler; the failed come back at once."""
        import app as service
        from chalicelib.local.worker import _lambda_context

        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10,
                                                VisibilityTimeout=60).get("Messages", [])
            if not messages:
                return
            event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                                  "body": m["Body"], "attributes": {}, "messageAttributes": {},
                                  "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"}
                                 for m in messages]}
            try:
                failed = {f["itemIdentifier"] for f in service.handle_tasks(event, _lambda_context())
                          ["batchItemFailures"]}
            except Exception as error:  # every record failed: all of them come back
                print(f"queue batch failed: {type(error).__name__}: {str(error)[:200]}", flush=True)
                failed = {m["MessageId"] for m in messages}
            self.batches += 1
            self.failed_batches += bool(failed)
            for message in messages:
                if message["MessageId"] in failed:
                    self.sqs.change_message_visibility(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"],
                                                       VisibilityTimeout=0)
                else:
                    self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])


def _job(env: dict, instance_id: str, deployment_id: str, log: Path) -> subprocess.Popen:
    """The backlog job, its output in a file (a pipe nobody reads could fill and stall it)."""
    with log.open("wb") as out:
        return subprocess.Popen([TFBATCH, "job", "run", "--instance", instance_id, "--deployment", deployment_id],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


NOTABLE = ("run stopped", "adopted a stopped scorer's results", "an earlier try of a commit landed",
           "an earlier try of a create-only write landed", "a create-only write failed", "deployment failed",
           "Traceback")


def _tally(logs: list[Path]) -> str:
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    return ", ".join(f"{what!r} {text.count(what)}" for what in NOTABLE if what in text) or "nothing notable"


def _intents(deployment_id: str) -> int:
    found = aws.client("dynamodb").query(
        TableName=get_settings().groups_table, KeyConditionExpression="deployment_id = :id",
        ExpressionAttributeValues={":id": {"S": f"{deployment_id}#intents"}}, Select="COUNT", ConsistentRead=True)
    return found["Count"]


def _ledger(deployment_id: str) -> Counter:
    """Each key's latest status, from key items and range records (ledger.Ledger.recount)."""
    return Ledger("", deployment_id, "").recount()


def _settled(instance_id: str, deployment_id: str) -> bool:
    item = deployments.load(instance_id, deployment_id)
    return (item["status"] == deployments.SUCCESS and not leases.live_leases(item) and item.get("rescan") is not True
            and _intents(deployment_id) == 0)


def test_chaos_soak_loses_nothing_duplicates_nothing_and_settles(server_aws, model_dirs, settings_env, tmp_path):
    seed = int(os.environ.get("TFBATCH_CHAOS_SEED", time.time()))
    print(f"chaos seed {seed} (TFBATCH_CHAOS_SEED), {FILES} files, {UPLOADS} uploads, {KILLS} kills, "
          f"fault rate {RATE}", flush=True)
    rng = random.Random(seed)
    share = RATE / 4
    rates = {faultproxy.THROTTLE: share, faultproxy.ERROR: share, faultproxy.RESET_BEFORE: share,
             faultproxy.RESET_AFTER: share, faultproxy.SLOW: RATE}
    started = time.monotonic()
    with faultproxy.FaultProxy(server_aws, seed, rates) as proxy:
        settings = {"TFBATCH_STAGE": "test", "TFBATCH_AWS_ENDPOINT": proxy.url,
                    "TFBATCH_LEASE_SECONDS": str(LEASE_SECONDS), "TFBATCH_FILES_PER_OUTPUT": str(FILES_PER_OUTPUT),
                    "TFBATCH_BATCH_SIZE": "16"}
        settings_env(**settings)
        user = tenant(proxy.url)
        s3 = _direct_s3(server_aws)
        for bucket in ("chaos-a", "chaos-a-out", "chaos-b", "chaos-b-out"):
            s3.create_bucket(Bucket=bucket)

        def put(number: int) -> tuple[str, bool]:
            key, bad = f"f{number:05d}.json", number % BAD_EVERY == 0
            s3.put_object(Bucket="chaos-a", Key=key, Body=_content(number, bad))
            return key, bad

        with ThreadPoolExecutor(8) as pool:
            backlog = dict(pool.map(put, range(FILES)))
        model_id = user.publish(model_dirs["multi_io"])
        ids = {}
        for name in ("a", "b"):
            created = user.deploy(model_id, f"chaos-{name}", f"chaos-{name}-out")
            assert created.status_code == 201, created.body
            ids[name] = body(created)["metadata"]["guid"]
            assert deployments.load(user.instance_id, ids[name])["trigger"] == "notifications"
        sqs = boto3.client("sqs", endpoint_url=server_aws, region_name="us-east-1")
        queue = aws.queue_url(get_settings().tasks_queue).replace(proxy.url, server_aws)
        sqs.purge_queue(QueueUrl=queue)  # the creations' own runs: the backlog job does A's here
        print(f"set up in {time.monotonic() - started:.0f}s", flush=True)

        proxy.enabled = True
        uploads = Uploads(s3, sqs, queue, random.Random(rng.random()), ("chaos-a", "chaos-b"))
        uploads.start()
        env = {**os.environ, **settings}
        max_step = max(1, 2 * (FILES // FILES_PER_OUTPUT) // (KILLS + 1))  # result and error objects
        kills = ends = 0
        finished = False
        deadline = time.monotonic() + 600
        logs: list[Path] = []
        while not finished and time.monotonic() < deadline:
            logs.append(tmp_path / f"job-{len(logs)}.log")
            job = _job(env, user.instance_id, ids["a"], logs[-1])
            target = _result_objects(s3, "chaos-a-out") + rng.randint(1, max_step)
            while kills < KILLS and job.poll() is None and _result_objects(s3, "chaos-a-out") < target:
                time.sleep(0.05)
            if kills < KILLS and job.poll() is None:
                time.sleep(rng.uniform(0, 0.3))
                job.send_signal(signal.SIGKILL)
                job.wait()
                kills += 1
                print(f"kill {kills} at {_result_objects(s3, 'chaos-a-out')} result objects, "
                      f"{time.monotonic() - started:.0f}s", flush=True)
                continue
            job.wait(timeout=600)
            output = logs[-1].read_text(errors="replace")
            ends += 1
            last = output.strip().splitlines()[-2:] if output.strip() else [""]
            print(f"job ended (rc {job.returncode}): {' | '.join(last)[-300:]}", flush=True)
            finished = job.returncode == 0 and any(line.startswith("SUCCESS") for line in output.splitlines())
        uploads.uploaded.wait(300)
        uploads.stop.set()
        uploads.join(300)
        assert uploads.error is None, f"seed {seed}: {uploads.error!r}"
        print(f"soak done in {time.monotonic() - started:.0f}s: {kills} kills, {ends} job ends, "
              f"{uploads.batches} queue batches ({uploads.failed_batches} with failures); {proxy.summary()}; "
              f"job logs: {_tally(logs)}", flush=True)

        # The poller notices what is orphaned or owed a pass, and the runs it queues settle it.
        settle_deadline = time.monotonic() + SETTLE_SECONDS
        while not all(_settled(user.instance_id, ids[name]) for name in ids):
            assert time.monotonic() < settle_deadline, f"seed {seed}: not settled: " + "; ".join(
                repr({k: v for k, v in deployments.load(user.instance_id, ids[name]).items()
                      if k in ("status", "pending", "scored", "failed", "rescan") or k.startswith("lease_")})
                for name in ids)
            time.sleep(LEASE_SECONDS / 2)
            try:
                worktasks.poll_stores()
            except Exception as error:
                print(f"poll failed: {type(error).__name__}", flush=True)
            uploads.drain()
        print(f"settled in {time.monotonic() - started:.0f}s; {proxy.summary()}", flush=True)
        proxy.enabled = False

        expected = {"a": {**backlog, **uploads.inputs["chaos-a"]}, "b": uploads.inputs["chaos-b"]}
        for name, inputs in expected.items():
            records, errors = records_by_file(user.outputs(f"chaos-{name}-out"))
            duplicated = {key: count for key, count in records.items() if count != 1}
            assert not duplicated, f"seed {seed}: {name}: more than one record: {sorted(duplicated.items())[:10]}"
            assert set(records) == set(inputs), \
                f"seed {seed}: {name}: lost {sorted(set(inputs) - set(records))[:10]}, " \
                f"unexpected {sorted(set(records) - set(inputs))[:10]}"
            assert errors == {key for key, bad in inputs.items() if bad}, f"seed {seed}: {name}"
            bad = sum(inputs.values())
            details = user.deployment(model_id, ids[name])["entity"]["status_details"]
            assert details == {"status": "SUCCESS", "total": len(inputs), "scored": len(inputs) - bad, "failed": bad,
                               "pending": 0, "progress": 1.0}, f"seed {seed}: {name}: {details}"
            assert _ledger(ids[name]) == {"scored": len(inputs) - bad, "failed": bad}, f"seed {seed}: {name}"
            assert _intents(ids[name]) == 0, f"seed {seed}: {name}"
    print(f"chaos soak passed in {time.monotonic() - started:.0f}s (seed {seed})", flush=True)
