"""The tasks queue's record handler, shared by the SQS Lambda and the local worker.

Each SQS record is one task; powertools' batch processor reports the records that failed, so
only those come back to the queue (and, after repeated failures, go to its dead-letter queue).
"""
from __future__ import annotations

import orjson
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib import tasks
from chalicelib.log import logger

_processor = BatchProcessor(event_type=EventType.SQS)


def _handle_record(record: SQSRecord) -> None:
    message = orjson.loads(record.body)
    task = message.get("task")
    logger.info("task", extra={"task": task, "message_id": record.message_id})
    if task == tasks.INSPECT_MODEL:
        from chalicelib import inspection  # TensorFlow: imported only where tasks run

        inspection.inspect_version(message["model_id"], message["version_id"])
    elif task == tasks.SCORE_DEPLOYMENT:
        from chalicelib import runner

        runner.run_deployment(message["instance_id"], message["deployment_id"])
    else:
        logger.error("unknown task dropped", extra={"task": task})


def handle_batch(event: dict, context) -> dict:
    return process_partial_response(event=event, record_handler=_handle_record, processor=_processor,
                                    context=context)
