"""Each upload is scored within seconds: S3 notifications to the queue on the service's own
store, polling on a store that cannot notify; two deployments on one bucket both get it."""
from __future__ import annotations

import json
import time

import pytest

import stackclient

pytestmark = pytest.mark.e2e


def _deploy(http, model_url: str, source: dict, target: dict, url: str) -> dict:
    created = http.post(f"{model_url}/deployments", timeout=30, json={
        "name": "uploads", "type": "batch",
        "input": {"type": "s3", "source": source, "connection": stackclient.connection(url)},
        "output": {"type": "s3", "target": target, "connection": stackclient.connection(url)},
    })
    assert created.status_code == 201, created.text
    return created.json()


def _tenant_with_buckets(local_stack, model_dirs, name: str):
    """The API session, the multi-io model published as `name`, and buckets name-in, name-out."""
    http = stackclient.session(local_stack)
    model = stackclient.publish(http, local_stack, model_dirs["multi_io"], name)
    s3 = stackclient.store(local_stack)
    s3.create_bucket(Bucket=f"{name}-in")
    s3.create_bucket(Bucket=f"{name}-out")
    return http, model, s3


def _records(s3, bucket: str, prefix: str) -> list[dict]:
    found = []
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        found += json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    return found


def _until(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("not within the time allowed")


def test_uploads_reach_every_deployment_on_the_bucket(local_stack, model_dirs):
    http, model, s3 = _tenant_with_buckets(local_stack, model_dirs, "drop")
    store = local_stack["env"]["TFBATCH_AWS_ENDPOINT"]
    first = _deploy(http, model["url"], {"bucket": "drop-in"}, {"bucket": "drop-out", "prefix": "first/"}, store)
    second = _deploy(http, model["url"], {"bucket": "drop-in"}, {"bucket": "drop-out", "prefix": "second/"}, store)
    for deployment in (first, second):
        stackclient.wait(http, deployment["metadata"]["url"], lambda e: e["status"] == "SUCCESS")

    started = time.monotonic()
    s3.put_object(Bucket="drop-in", Key="new file+1.json", Body=b'{"a": [[1, 2, 3]], "b": [41]}')
    for prefix in ("first/", "second/"):
        (record,) = _until(lambda prefix=prefix: _records(s3, "drop-out", prefix))
        assert record == {"filename": "new file+1.json", "shifted": 42, "sum": 6.0}
    print(f"upload to result in both deployments: {time.monotonic() - started:.2f} s")
    for deployment in (first, second):
        entity = stackclient.wait(http, deployment["metadata"]["url"],
                                  lambda e: e["status"] == "SUCCESS" and e["status_details"]["scored"] == 1)
        assert entity["status_details"]["pending"] == 0

    assert http.delete(first["metadata"]["url"], timeout=10).status_code == 204
    ids = [c["Id"] for c in s3.get_bucket_notification_configuration(Bucket="drop-in")["QueueConfigurations"]]
    assert ids == ["tfbatch-uploads"]  # the second deployment still needs it
    s3.put_object(Bucket="drop-in", Key="after.json", Body=b'{"a": [[0, 0, 1]], "b": [0]}')
    _until(lambda: len(_records(s3, "drop-out", "second/")) == 2)
    time.sleep(1)
    assert [r["filename"] for r in _records(s3, "drop-out", "first/")] == ["new file+1.json"]


def test_a_store_without_notifications_is_polled(local_stack, model_dirs):
    http, model, s3 = _tenant_with_buckets(local_stack, model_dirs, "poll")
    # The same moto server under another name: to the service it is someone else's store.
    elsewhere = local_stack["env"]["TFBATCH_AWS_ENDPOINT"].replace("127.0.0.1", "localhost")
    deployment = _deploy(http, model["url"], {"bucket": "poll-in"}, {"bucket": "poll-out"}, elsewhere)
    stackclient.wait(http, deployment["metadata"]["url"], lambda e: e["status"] == "SUCCESS")
    s3.put_object(Bucket="poll-in", Key="late.json", Body=b'{"a": [[1, 1, 1]], "b": [1]}')
    (record,) = _until(lambda: _records(s3, "poll-out", ""), timeout=90)
    assert record["filename"] == "late.json" and record["sum"] == 3.0
    assert not s3.get_bucket_notification_configuration(Bucket="poll-in").get("QueueConfigurations")


def test_a_burst_of_uploads_goes_to_the_backlog_job_and_is_scored_once(local_stack, model_dirs):
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    http, model, s3 = _tenant_with_buckets(local_stack, model_dirs, "burst")
    store = local_stack["env"]["TFBATCH_AWS_ENDPOINT"]
    deployment = _deploy(http, model["url"], {"bucket": "burst-in"}, {"bucket": "burst-out"}, store)
    stackclient.wait(http, deployment["metadata"]["url"], lambda e: e["status"] == "SUCCESS")

    files = 400
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: s3.put_object(Bucket="burst-in", Key=f"b{n:04d}.json",
                                              Body=b'{"a": [[1, 1, 1]], "b": [%d]}' % n), range(files)))
    paths = set()

    def done():
        details = http.get(deployment["metadata"]["url"], timeout=10).json()["entity"]["status_details"]
        paths.add(details.get("path"))
        return details["status"] == "SUCCESS" and details["scored"] == files and details

    details = _until(done, timeout=240)
    assert details["failed"] == 0 and details["pending"] == 0
    assert "backlog job" in paths, paths
    counts = Counter(record["filename"] for record in _records(s3, "burst-out", ""))
    assert len(counts) == files and set(counts.values()) == {1}
