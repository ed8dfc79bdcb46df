"""Benchmark: upload-to-result latency on the local stack, cold start, and a burst.

    make up && .venv/bin/python bench/uploads.py [--singles 50] [--burst 2000]

Reports, against limits measured in the same run:
- p50/p99 latency from a single upload to its result file, with the model warm;
- cold start: what the first scoring of a new model version costs over the first scoring of a
  deployment whose model is loaded, against a plain `tf.saved_model.load` plus one call in a
  fresh process, here. Measured where it is
  worst, in a scorer that has never seen the version (bench/cold_scorer.py: a process that
  already serves another version, the goal, and one doing its very first work, like a new
  Lambda container); end to end on the stack, whose worker loaded the version when it
  inspected it; and, for reference, from a deployment's create request to its first result;
- a burst of uploads: time until all are scored, files/s, and that each has exactly one record.
Writes bench/results/uploads-<time>.json. Not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Stack:
    def __init__(self):
        creds = json.loads((ROOT / "local-credentials.json").read_text())
        self.url, self.instance_id = creds["url"], creds["instance_id"]
        token = requests.get(f"{self.url}/v3/identity/token", auth=(creds["username"], creds["password"]),
                             timeout=10).json()["token"]
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        self.store = f"http://127.0.0.1:{os.environ.get('TFBATCH_MOTO_PORT', '5000')}"
        self.s3 = boto3.client("s3", endpoint_url=self.store, aws_access_key_id="bench",
                               aws_secret_access_key="bench", region_name="us-east-1")

    def publish(self, archive: bytes) -> str:
        model = self.http.post(f"{self.url}/v3/wml_instances/{self.instance_id}/published_models", timeout=10,
                               json={"name": "bench-digits", "model_type": "tensorflow-2.21"}).json()
        return self.upload(model["metadata"]["url"], archive)

    def upload(self, model_url: str, archive: bytes) -> str:
        self.http.put(f"{model_url}/content", data=archive, headers={"Content-Type": "application/gzip"},
                      timeout=60).raise_for_status()
        while self.http.get(model_url, timeout=10).json()["entity"]["status"] == "inspecting":
            time.sleep(0.2)
        return model_url

    def deploy(self, model_url: str, bucket: str) -> dict:
        keys = {"access_key": "bench", "secret_key": "bench", "url": self.store}
        response = self.http.post(f"{model_url}/deployments", timeout=60, json={
            "name": "bench", "type": "batch",
            "input": {"type": "s3", "source": {"bucket": bucket}, "connection": keys},
            "output": {"type": "s3", "target": {"bucket": f"{bucket}-out"}, "connection": keys}})
        response.raise_for_status()
        return response.json()

    def buckets(self, name: str) -> None:
        for bucket in (name, f"{name}-out"):
            self.s3.create_bucket(Bucket=bucket)

    def outputs(self, bucket: str) -> list[str]:
        keys, token = [], None
        while True:
            page = self.s3.list_objects_v2(Bucket=bucket, **({"ContinuationToken": token} if token else {}))
            keys += [item["Key"] for item in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return keys

    def wait_for_new_output(self, bucket: str, known: int, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.s3.list_objects_v2(Bucket=bucket)["KeyCount"] > known:
                return time.monotonic()
            time.sleep(0.01)
        raise TimeoutError(f"no new output in {bucket} within {timeout} s")

    def status(self, deployment: dict) -> dict:
        return self.http.get(deployment["metadata"]["url"], timeout=10).json()["entity"]["status_details"]


def digits_archive(directory: str) -> bytes:
    from chalicelib.core import archives
    from examples import digits_model

    digits_model.export(directory)
    return archives.pack(directory, "digits")


def sample(number: int) -> bytes:
    from examples import digits_model

    images, _ = digits_model.digits_as_mnist(50)
    return json.dumps({"inputs": [images[number % 50].tolist()]}).encode()


PLAIN = """
import sys, time
import numpy as np, tensorflow as tf
tf.constant(1.0)  # TensorFlow imported and initialised before timing, as in the worker
started = time.perf_counter()
model = tf.saved_model.load(sys.argv[1])
model.signatures["serving_default"](inputs=tf.constant(np.zeros((1, 784), np.float32)))
print(time.perf_counter() - started)
"""


def plain_load_and_call(directory: str) -> float:
    """A plain load plus one call, in a fresh process as a user's script would do it."""
    done = subprocess.run([sys.executable, "-c", PLAIN, directory], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def new_deployment(stack: Stack, model_url: str, archive: bytes | None, bucket: str) -> dict:
    """A deployment of the model on an empty bucket, done with its first run: of a new version
    when `archive` is given, else of the model's current one."""
    if archive is not None:
        stack.upload(model_url, archive)  # new content: a new version, inspected by the stack's worker
    stack.buckets(bucket)
    deployment = stack.deploy(model_url, bucket)
    while stack.status(deployment)["status"] != "SUCCESS":
        time.sleep(0.05)
    return deployment


def cold_in_new_scorer(stack: Stack, model_url: str, archive: bytes, bucket: str) -> dict:
    """Uploads scored by bench/cold_scorer.py, a fresh process with an empty temporary folder:
    two of deployment A (a new version), then the first of deployment C (A's version, loaded by
    then), then the first of deployment B (another new version). C and B differ only in whether
    the model is loaded, so B's extra time is the new version's cold start; A's first upload
    less C's is the cold start of a process doing its very first work. The buckets'
    notifications are taken off first, so the stack's worker leaves these files to it."""
    uploads = []
    for part, version, files in (("a", archive, 2), ("c", None, 1), ("b", archive, 1)):
        deployment = new_deployment(stack, model_url, version, f"{bucket}{part}")
        stack.s3.put_bucket_notification_configuration(Bucket=f"{bucket}{part}", NotificationConfiguration={})
        for number in range(files):
            body, key = sample(number), f"upload-{number}.json"
            etag = stack.s3.put_object(Bucket=f"{bucket}{part}", Key=key, Body=body)["ETag"].strip('"')
            uploads.append(f"{deployment['metadata']['guid']}:{key}:{etag}:{len(body)}")
    with tempfile.TemporaryDirectory() as empty_tmp:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "cold_scorer.py"), stack.instance_id, *uploads],
                              capture_output=True, text=True, env={**os.environ, "TMPDIR": empty_tmp})
    if done.returncode:
        raise SystemExit(f"cold_scorer.py failed:\n{done.stderr[-2000:]}")
    first, second, loaded, new_version = json.loads(done.stdout.strip().splitlines()[-1])
    return {"new_version": new_version - loaded, "fresh_process": first - loaded,
            "seconds": {"a_first": round(first, 4), "a_second": round(second, 4),
                        "c_first_model_loaded": round(loaded, 4), "b_first_new_version": round(new_version, 4)}}


def first_upload_latency(stack: Stack, model_url: str, archive: bytes, bucket: str) -> float:
    """Upload to result for the first file of a new version's deployment, on the stack."""
    new_deployment(stack, model_url, archive, bucket)
    started = time.monotonic()
    stack.s3.put_object(Bucket=bucket, Key="first.json", Body=sample(0))
    return stack.wait_for_new_output(f"{bucket}-out", 0) - started


def first_result_after_create(stack: Stack, model_url: str, archive: bytes, bucket: str) -> tuple[float, float]:
    """From the create request of a new version's deployment on a bucket holding one file to
    its result, and how long the create request itself took."""
    stack.upload(model_url, archive)
    stack.buckets(bucket)
    stack.s3.put_object(Bucket=bucket, Key="first.json", Body=sample(0))
    started = time.monotonic()
    stack.deploy(model_url, bucket)
    created = time.monotonic() - started
    return stack.wait_for_new_output(f"{bucket}-out", 0) - started, created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=50)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=3, help="new versions measured for the cold start")
    args = parser.parse_args()
    stack = Stack()
    run = f"b{int(time.time())}"
    with tempfile.TemporaryDirectory() as scratch:
        directory = f"{scratch}/digits"
        archive = digits_archive(directory)
        plain = statistics.median(plain_load_and_call(directory) for _ in range(args.trials))
    report: dict = {"run": run, "plain_load_and_call_s": round(plain, 4)}
    model_url = stack.publish(archive)

    # Cold start in a scorer that never saw the version: what its first upload costs over a
    # first upload with the model loaded, once the process already serves (the goal), and as
    # the process's first work.
    scorers = [cold_in_new_scorer(stack, model_url, archive, f"{run}-fresh{n}") for n in range(args.trials)]
    cold = statistics.median(trial["new_version"] for trial in scorers)
    fresh = statistics.median(trial["fresh_process"] for trial in scorers)
    report["cold_start_s"] = round(cold, 4)
    report["cold_start_vs_plain_load"] = round(cold / plain, 2)
    report["cold_start_in_fresh_process_s"] = round(fresh, 4)
    report["cold_start_in_fresh_process_vs_plain_load"] = round(fresh / plain, 2)
    report["cold_scorer_runs_s"] = [trial["seconds"] for trial in scorers]
    # End to end on the stack, whose worker loaded the version when it inspected it.
    firsts = [first_upload_latency(stack, model_url, archive, f"{run}-first{n}") for n in range(args.trials)]
    report["first_upload_of_new_version_s"] = round(statistics.median(firsts), 4)
    after_create, create_request = first_result_after_create(stack, model_url, archive, f"{run}-create")
    report["first_result_after_create_s"] = round(after_create, 4)
    report["first_result_after_create_of_which_request_s"] = round(create_request, 4)

    # Single uploads, one at a time, with the model warm.
    stack.buckets(f"{run}-single")
    deployment = stack.deploy(model_url, f"{run}-single")
    while stack.status(deployment)["status"] != "SUCCESS":
        time.sleep(0.1)
    latencies = []
    for number in range(args.singles):
        known = len(stack.outputs(f"{run}-single-out"))
        started = time.monotonic()
        stack.s3.put_object(Bucket=f"{run}-single", Key=f"one-{number}.json", Body=sample(number))
        latencies.append(stack.wait_for_new_output(f"{run}-single-out", known) - started)
    report["single_upload_p50_s"] = round(percentile(latencies, 50), 4)
    report["single_upload_p99_s"] = round(percentile(latencies, 99), 4)
    report["single_upload_mean_s"] = round(statistics.mean(latencies), 4)
    report["first_upload_of_new_version_vs_warm_p50"] = round(
        report["first_upload_of_new_version_s"] / report["single_upload_p50_s"], 2)

    if args.burst:
        report.update(burst(stack, run, args.burst, model_url))
    out = ROOT / "bench" / "results" / f"uploads-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"report: {out.relative_to(ROOT)}")


def burst(stack: Stack, run: str, files: int, model_url: str) -> dict:
    """All uploads at once, until every one is scored; each must have exactly one record."""
    stack.buckets(f"{run}-burst")
    deployment = stack.deploy(model_url, f"{run}-burst")
    while stack.status(deployment)["status"] != "SUCCESS":
        time.sleep(0.1)
    bodies = [sample(number) for number in range(50)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: stack.s3.put_object(Bucket=f"{run}-burst", Key=f"burst-{n:05d}.json",
                                                    Body=bodies[n % 50]), range(files)))
    uploaded = time.monotonic() - started
    paths = Counter()
    while True:
        details = stack.status(deployment)
        paths[details.get("path", "-")] += 1
        if details["status"] == "SUCCESS" and details["scored"] + details["failed"] >= files:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    records = Counter()
    for key in stack.outputs(f"{run}-burst-out"):
        body = stack.s3.get_object(Bucket=f"{run}-burst-out", Key=key)["Body"].read()
        records.update(item["filename"] for item in json.loads(body))
    return {
        "burst_files": files, "burst_upload_s": round(uploaded, 2), "burst_all_scored_s": round(elapsed, 2),
        "burst_files_per_s": round(files / elapsed, 1), "burst_paths_seen": dict(paths),
        "burst_exactly_once": len(records) == files and set(records.values()) == {1},
    }


if __name__ == "__main__":
    main()
