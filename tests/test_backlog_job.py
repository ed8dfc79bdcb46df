"""The backlog job at scale-out: shards as local processes and as AWS Batch array children, a
failed shard rerun alone, and the hand-off of large backlogs to AWS Batch (moto's Batch, without
containers). Every input ends with exactly one result record."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests

from apiclient import body
from chalicelib.core.settings import get_settings
from chalicelib.scoring import backlog, pipeline
from chalicelib.state import deployments
from flows import tenant

FILES = 90


def _put_inputs(s3, bucket: str) -> set[str]:
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=f"{bucket}-out")

    def put(number: int) -> str:
        key = f"f{number:04d}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"a": [[number, 1, 2]], "b": [number]}).encode())
        return key

    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(put, range(FILES)))


def _job(server: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TFBATCH_STAGE": "test", "TFBATCH_AWS_ENDPOINT": server,
                   "TFBATCH_FILES_PER_OUTPUT": "16", **env}
    return subprocess.run([sys.executable, "-m", "chalicelib.local.cli", "job", "run", *args], env=environment,
                          capture_output=True, text=True, timeout=300)


def _records(user, bucket: str) -> Counter:
    return Counter(item["filename"] for items in user.outputs(bucket).values() for item in items)


def _deployed(server_aws, model_dirs, bucket: str):
    user = tenant(server_aws)
    inputs = _put_inputs(user.s3(), bucket)
    model_id = user.publish(model_dirs["multi_io"])
    created = user.deploy(model_id, bucket, f"{bucket}-out")
    assert created.status_code == 201, created.body
    return user, inputs, model_id, body(created)["metadata"]["guid"]


def test_shards_split_the_keys_without_overlap():
    keys = [f"in/{n}.json" for n in range(1000)]
    shares = [{key for key in keys if pipeline.Shard(index, 4).owns(key)} for index in range(4)]
    assert sum(len(share) for share in shares) == len(keys)
    assert set().union(*shares) == set(keys)
    assert all(150 < len(share) < 350 for share in shares)  # crc32 spreads keys evenly enough
    with pytest.raises(ValueError, match="shard 4 does not exist"):
        pipeline.Shard(4, 4)


def test_local_shard_processes_score_every_file_once(server_aws, model_dirs):
    user, inputs, model_id, deployment_id = _deployed(server_aws, model_dirs, "shards-local")
    done = _job(server_aws, "--instance", user.instance_id, "--deployment", deployment_id, "--shards", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sum("(shard" in line for line in done.stdout.splitlines()) == 3
    records = _records(user, "shards-local-out")
    assert set(records) == inputs and set(records.values()) == {1}
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert (details["status"], details["scored"], details["pending"]) == ("SUCCESS", FILES, 0)


def test_a_failed_shard_is_rerun_alone_and_the_last_one_settles(server_aws, model_dirs):
    user, inputs, model_id, deployment_id = _deployed(server_aws, model_dirs, "shards-rerun")
    ids = ("--instance", user.instance_id, "--deployment", deployment_id, "--shards", "3")
    for index in (0, 2):  # array children as AWS Batch starts them; child 1 "fails" (never runs)
        child = _job(server_aws, *ids, AWS_BATCH_JOB_ARRAY_INDEX=str(index))
        assert child.returncode == 0, child.stdout + child.stderr
    scored = set(_records(user, "shards-rerun-out"))
    assert scored == {key for key in inputs if not pipeline.Shard(1, 3).owns(key)}
    assert user.deployment(model_id, deployment_id)["entity"]["status_details"]["status"] != "SUCCESS"

    rerun = _job(server_aws, *ids, "--shard", "1")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    records = _records(user, "shards-rerun-out")
    assert set(records) == inputs and set(records.values()) == {1}
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert (details["status"], details["scored"], details["pending"]) == ("SUCCESS", FILES, 0)


@pytest.fixture
def batch_queue(server_aws, settings_env):
    """An AWS Batch job queue and definition on the moto server (jobs are recorded, not run)."""
    requests.post(f"{server_aws}/moto-api/config", json={"batch": {"use_docker": False}}, timeout=10)
    client = lambda service: boto3.client(service, endpoint_url=server_aws, region_name="us-east-1")  # noqa: E731
    role = client("iam").create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = client("batch")
    environment = batch.create_compute_environment(computeEnvironmentName="gpu", type="UNMANAGED",
                                                   state="ENABLED", serviceRole=role)["computeEnvironmentArn"]
    queue = batch.create_job_queue(jobQueueName="backlog", state="ENABLED", priority=1, computeEnvironmentOrder=[
        {"order": 1, "computeEnvironment": environment}])["jobQueueArn"]
    definition = batch.register_job_definition(
        jobDefinitionName="tfbatch-backlog", type="container",
        containerProperties={"image": "tfbatch", "vcpus": 1, "memory": 512, "command": ["job", "run"]},
    )["jobDefinitionArn"]
    settings_env(TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT=server_aws, TFBATCH_BATCH_JOB_QUEUE=queue,
                 TFBATCH_BATCH_JOB_DEFINITION=definition, TFBATCH_BACKLOG_SHARDS=3)
    return batch


def test_a_large_backlog_goes_to_aws_batch_as_an_array_job(server_aws, model_dirs, batch_queue, settings_env):
    user, inputs, model_id, deployment_id = _deployed(server_aws, model_dirs, "to-batch")
    settings_env(TFBATCH_BACKLOG_THRESHOLD=FILES - 1)
    assert backlog.dispatch(user.instance_id, deployment_id) == "submitted"
    item = deployments.load(user.instance_id, deployment_id)
    (job,) = batch_queue.describe_jobs(jobs=[item["batch_job_id"]])["jobs"]
    assert job["parameters"] == {"instance_id": user.instance_id, "deployment_id": deployment_id, "shards": "3"}
    assert job["arrayProperties"]["size"] == 3
    assert job["jobQueue"] == get_settings().batch_job_queue
    assert (item["status"], item["path"], int(item["shards"])) == (deployments.IN_PROGRESS, deployments.BACKLOG, 3)
    assert not _records(user, "to-batch-out")  # nothing scored here: the job will


def test_a_small_backlog_is_scored_in_place_even_with_aws_batch(server_aws, model_dirs, batch_queue, settings_env):
    user, inputs, model_id, deployment_id = _deployed(server_aws, model_dirs, "in-place")
    settings_env(TFBATCH_BACKLOG_THRESHOLD=FILES)
    assert backlog.dispatch(user.instance_id, deployment_id) == "scored"
    assert set(_records(user, "in-place-out")) == inputs
    assert not batch_queue.list_jobs(jobQueue=get_settings().batch_job_queue, jobStatus="SUBMITTED")["jobSummaryList"]
