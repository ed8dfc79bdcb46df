"""boto3 clients for the control plane, pointed at the moto server on the local stack.

Clients are cached per process: creating one costs milliseconds of CPU, and Lambda reuses the
process between invocations.
"""
from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.core import caches
from chalicelib.core.settings import get_settings

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)


@caches.per_process
def client(service: str) -> Any:
    settings = get_settings()
    return boto3.client(
        service, region_name=settings.region, endpoint_url=settings.aws_endpoint, config=_CONFIG
    )


@caches.per_process
def table(name: str) -> Any:
    settings = get_settings()
    dynamodb = boto3.resource(
        "dynamodb", region_name=settings.region, endpoint_url=settings.aws_endpoint, config=_CONFIG
    )
    return dynamodb.Table(name)


@caches.per_process
def queue_url(name: str) -> str:
    return client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def conditionally(write, **request) -> bool:
    """Run a conditional DynamoDB write; False when its condition did not hold."""
    return conditional_response(write, **request) is not None


def conditional_response(write, **request) -> dict | None:
    """Run a conditional DynamoDB write and return its response (for `ReturnValues`); None
    when its condition did not hold."""
    try:
        return write(**request)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        return None
