"""The tasks queue's handler, shared by the SQS Lambda and the local worker.

The queue carries two kinds of message: the service's own tasks (`{"task": ...}`: inspect a
model, score a deployment's backlog) and S3 upload notifications. Uploads in one batch are
grouped by deployment and scored together. In a burst (more than TFBATCH_BACKLOG_THRESHOLD
messages waiting) a deployment's uploads go to the backlog job instead, which lists the bucket
and scores in large batches: the burst queues one run, and later messages only ask it (or the
scorer already holding the lease) for another pass over the bucket. Whoever scores holds the
deployment's lease; uploads that find it taken hand themselves over to the holder, which passes
over the bucket once more (chalicelib.state.leases). Powertools' batch processor reports the
messages that failed, so only those come back to the queue, and after repeated failures go to
its dead-letter queue.
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from urllib.parse import unquote_plus

import orjson
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.core import aws, tasks
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.scoring import backlog
from chalicelib.state import deployments, leases, subscriptions
from chalicelib.state.connections import Location


class UploadsNotScored(Exception):
    """Scoring the uploads this message announced failed; the message is retried."""


def _uploads(body: dict) -> list[tuple[str, str, str, int]]:
    """(bucket, key, etag, size) of each ObjectCreated record in an S3 notification."""
    found = []
    for record in body.get("Records", []):
        if record.get("eventSource") != "aws:s3" or not record.get("eventName", "").startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        found.append((s3["bucket"]["name"], unquote_plus(s3["object"]["key"]), s3["object"].get("eTag", ""),
                      int(s3["object"].get("size", 0))))
    return found


def _score_uploads(bodies: dict[str, dict]) -> set[str]:
    """Score every upload announced in the batch; the ids of messages whose uploads failed."""
    store = get_settings().aws_endpoint  # notifications come only from the service's own store
    groups: dict[tuple[str, str], list[tuple[str, str, int]]] = defaultdict(list)
    senders: dict[tuple[str, str], set[str]] = defaultdict(set)
    subscribers: dict[str, list[dict]] = {}  # a burst names the same bucket in every message
    for message_id, body in bodies.items():
        for bucket, key, etag, size in _uploads(body):
            if bucket not in subscribers:
                subscribers[bucket] = subscriptions.subscribers(subscriptions.bucket_ref(Location(bucket, url=store)))
            for subscriber in subscribers[bucket]:
                deployment = (subscriber["instance_id"], subscriber["deployment_id"])
                groups[deployment].append((key, etag, size))
                senders[deployment].add(message_id)
    if not groups:
        return set()
    from chalicelib.scoring import runner  # TensorFlow: imported only where uploads are scored

    failed: set[str] = set()
    settings = get_settings()
    burst = _waiting_messages() > settings.backlog_threshold
    for (instance_id, deployment_id), uploads in groups.items():
        try:
            if burst:
                if deployments.owe_pass(instance_id, deployment_id):
                    tasks.send(tasks.SCORE_DEPLOYMENT, instance_id=instance_id, deployment_id=deployment_id)
                continue
            runner.score_uploads(instance_id, deployment_id, uploads)
        except Exception:
            logger.exception("scoring uploads failed", extra={"deployment_id": deployment_id, "files": len(uploads)})
            failed |= senders[(instance_id, deployment_id)]
    return failed


def _waiting_messages() -> int:
    queue = aws.queue_url(get_settings().tasks_queue)
    attributes = aws.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def handle_batch(event: dict, context) -> dict:
    bodies = {record["messageId"]: orjson.loads(record["body"]) for record in event.get("Records", [])}
    failed_uploads = _score_uploads(bodies)

    def handle(record: SQSRecord) -> None:
        if record.message_id in failed_uploads:
            raise UploadsNotScored(record.message_id)
        message = bodies[record.message_id]
        task = message.get("task")
        if task is None:
            return  # an S3 notification (scored above) or S3's s3:TestEvent
        logger.info("task", extra={"task": task, "message_id": record.message_id})
        if task == tasks.INSPECT_MODEL:
            from chalicelib.scoring import inspection

            inspection.inspect_version(message["model_id"], message["version_id"])
        elif task == tasks.SCORE_DEPLOYMENT:
            backlog.dispatch(message["instance_id"], message["deployment_id"])
        else:
            logger.error("unknown task dropped", extra={"task": task})

    # A processor per batch: it holds the batch's outcomes, and the local worker runs batches at once.
    processor = BatchProcessor(event_type=EventType.SQS)
    response = process_partial_response(event=event, record_handler=handle, processor=processor, context=context)
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and stuck_model_calls():
        # Lambda keeps the environment for the next invocation, spinning thread and all. Ending
        # the process ends it; the batch's report is lost with it, so its messages come back and
        # the ledger skips what was done. (The local worker drains and restarts instead.)
        logger.error("a model call outlived its limit and cannot be stopped; ending this environment",
                     extra={"still_running": stuck_model_calls()})
        os._exit(70)
    return response


def stuck_model_calls() -> int:
    """Model calls given up at their time limit that still run in this process (none where no
    model was ever loaded: the engine, and TensorFlow, are then not even imported)."""
    engine = sys.modules.get("chalicelib.scoring.engine")
    # Another thread may be importing it right now (TensorFlow takes seconds): not yet defined,
    # it has run no call.
    calls_still_running = getattr(engine, "calls_still_running", None)
    return calls_still_running() if calls_still_running is not None else 0


def poll_stores() -> int:
    """Queue a backlog run for each deployment whose store cannot notify (new files are found
    by listing; the ledger skips the rest), and for each whose scorer died: a lease that expired
    while a run was in progress, work handed over to a holder that is gone, or a run in progress
    that nobody holds. The run finishes what the dead scorer left (exactly_once.recover),
    lists the bucket and scores what has no result, so a death on the upload path is mended within a lease and a
    poll, not when its message comes back. Runs still going are left alone."""
    from chalicelib.core.clock import now_iso

    lease = get_settings().lease_seconds
    queued = 0
    for item in deployments.polled():
        if leases.live_leases(item):
            continue  # a scorer is on it; it passes over the bucket again if asked to
        in_progress = item["status"] == deployments.IN_PROGRESS
        orphaned = in_progress and (bool(leases.expired_leases(item))
                                    or _age_seconds(item["modified_at"], now_iso()) >= lease)
        polling = item.get("trigger") == subscriptions.POLLING and not in_progress
        if not (orphaned or polling or item.get("rescan") is True):
            continue
        tasks.send(tasks.SCORE_DEPLOYMENT, instance_id=item["instance_id"], deployment_id=item["deployment_id"])
        queued += 1
    return queued


def _age_seconds(then: str, now: str) -> float:
    from datetime import datetime

    parse = lambda stamp: datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # noqa: E731
    return (parse(now) - parse(then)).total_seconds()
