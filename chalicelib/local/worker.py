"""The local worker: what Lambda's SQS event source mapping does on AWS, done on one machine.

It long-polls the tasks queue, hands each batch to the very handler that Lambda invokes
(`app.handle_tasks`), and deletes the messages that handler did not report as failed. Failed
messages reappear after their visibility timeout, as on AWS.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from chalicelib.core import aws
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.scoring import worktasks


def _lambda_record(message: dict, queue_arn: str) -> dict:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": get_settings().region,
    }


def _lambda_context() -> SimpleNamespace:
    return SimpleNamespace(function_name="tfbatch-local-worker", memory_limit_in_mb=0,
                           invoked_function_arn="local", aws_request_id=str(uuid.uuid4()))


def _poll_stores(service) -> None:
    try:
        service.poll_stores(_scheduled_event(), _lambda_context())
    except Exception:
        logger.exception("polling stores failed; trying again at the next interval")


def _scheduled_event() -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": get_settings().region, "resources": [], "detail": {}}


def run(stop: threading.Event | None = None, wait_seconds: int = 1, announce: bool = True) -> None:
    """Receive batches while a handler thread is free; delete what each batch did not fail.

    Several batches run at once, as Lambda runs several invocations, so a long backlog run never
    holds up the scoring of new uploads. A batch's messages stay invisible until it is done: if
    the worker dies, they come back after the visibility timeout and are handled again."""
    import app as service  # the Chalice app: the same handler functions Lambda calls (packaged beside chalicelib)

    stop = stop or threading.Event()
    settings = get_settings()
    sqs = aws.client("sqs")
    queue_url = aws.queue_url(settings.tasks_queue)
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    free = threading.Semaphore(settings.worker_concurrency)

    def handle(messages: list[dict]) -> None:
        try:
            event = {"Records": [_lambda_record(message, queue_arn) for message in messages]}
            result = service.handle_tasks(event, _lambda_context())
            failed = {failure["itemIdentifier"] for failure in result.get("batchItemFailures", [])}
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        except Exception:
            logger.exception("a batch failed as a whole; its messages will be delivered again")
        finally:
            free.release()

    if announce:
        print("worker polling", queue_url, flush=True)
    next_poll = 0.0
    with ThreadPoolExecutor(settings.worker_concurrency, thread_name_prefix="handler") as pool:
        while not stop.is_set() and not worktasks.stuck_model_calls():
            if time.monotonic() >= next_poll:  # what the schedule does on AWS, every few seconds here
                _poll_stores(service)
                next_poll = time.monotonic() + settings.poll_seconds
            if not free.acquire(timeout=1):
                continue
            try:
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=wait_seconds, AttributeNames=["All"],
                                               MessageAttributeNames=["All"]).get("Messages", [])
            except Exception:
                logger.exception("receiving from the tasks queue failed; retrying")
                messages = []
                time.sleep(1)
            if messages:
                pool.submit(handle, messages)
            else:
                free.release()
    if worktasks.stuck_model_calls() and not stop.is_set():
        _replace_this_process()


def _replace_this_process() -> None:
    """A model call outlived its limit and spins on in this process: with the batches in hand
    done (the pool above has drained), start afresh in the same process (same pid, so the local
    stack's pid file stays true) instead of serving every later batch beside a busy core."""
    logger.error("a model call outlived its limit and cannot be stopped; restarting the worker")
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.argv])
