"""Where a deployment's backlog is scored: here, or on AWS Batch when it is large.

A small backlog (a new deployment on a bucket of a few files, a poll that found a few uploads) is
scored by the process that got the task: starting a container would take longer than the work.
A large one (more than TFBATCH_BACKLOG_THRESHOLD inputs), when an AWS Batch job queue is
configured, goes to the GPU backlog job: `tfbatch job run` from the same image, as an array job
of TFBATCH_BACKLOG_SHARDS children that each score their share of the keys. The local stack has
no job queue, so there the worker scores every backlog itself (`tfbatch job run --shards N`
runs the shards as local processes).
"""
from __future__ import annotations

from chalicelib.core import aws
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.state import deployments

# A job in these states will still score what is in the bucket; a second one is not needed.
_LIVE_JOB_STATES = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"}


def dispatch(instance_id: str, deployment_id: str) -> str:
    """Score the deployment's backlog here or submit it; says which ("scored", "submitted",
    "running": a job is already on it, "deleted", "failed": a store may no longer be called)."""
    from chalicelib.scoring import runner  # TensorFlow: only where scoring happens

    settings = get_settings()
    run = runner.open_run(instance_id, deployment_id)
    if isinstance(run, runner.Summary):
        return run.status.lower()
    if settings.batch_job_queue and run.has_more_inputs_than(settings.backlog_threshold):
        return submit(instance_id, deployment_id, settings.backlog_shards)
    run.run()
    return "scored"


def submit(instance_id: str, deployment_id: str, shards: int) -> str:
    settings = get_settings()
    batch = aws.client("batch")
    item = deployments.load(instance_id, deployment_id)
    if item.get("batch_job_id"):
        jobs = batch.describe_jobs(jobs=[item["batch_job_id"]])["jobs"]
        if jobs and jobs[0]["status"] in _LIVE_JOB_STATES:
            deployments.ask_for_pass(instance_id, deployment_id)
            return "running"
    request = {
        "jobName": f"tfbatch-backlog-{deployment_id}"[:128],
        "jobQueue": settings.batch_job_queue,
        "jobDefinition": settings.batch_job_definition,
        "parameters": {"instance_id": instance_id, "deployment_id": deployment_id, "shards": str(shards)},
    }
    if shards > 1:  # AWS Batch array jobs have at least two children
        request["arrayProperties"] = {"size": shards}
    deployments.start_shards(instance_id, deployment_id, shards)  # before any child runs
    job_id = batch.submit_job(**request)["jobId"]
    deployments.record_batch_job(instance_id, deployment_id, job_id)
    logger.info("backlog submitted to AWS Batch", extra={"deployment_id": deployment_id, "job_id": job_id,
                                                          "shards": shards})
    return "submitted"
