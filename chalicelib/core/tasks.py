"""Work handed from the API to the TensorFlow side through the tasks queue.

A task is a small JSON message; the SQS handler (a Lambda image function on AWS, the local
worker on the local stack) dispatches it by its `task` field.
"""
from __future__ import annotations

import orjson

from chalicelib.core import aws
from chalicelib.core.settings import get_settings

INSPECT_MODEL = "inspect_model"
SCORE_DEPLOYMENT = "score_deployment"


def send(task: str, **fields: str) -> None:
    queue = aws.queue_url(get_settings().tasks_queue)
    aws.client("sqs").send_message(QueueUrl=queue, MessageBody=orjson.dumps({"task": task, **fields}).decode())
