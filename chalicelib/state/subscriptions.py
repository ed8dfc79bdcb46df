"""Upload notifications: the input bucket tells the service's queue about each new object.

When a deployment's input bucket can be configured (the service's own S3, or the local moto
server), the service adds one notification configuration of its own ("tfbatch-uploads":
every ObjectCreated event to the tasks queue), merged into whatever the bucket already has:
other configurations are never touched. Which deployments a bucket feeds is kept in the
subscriptions table (bucket -> deployments), so two deployments on one bucket both get each
file, and S3's rule against overlapping configurations never bites. Deleting a deployment
removes its subscription, and the configuration with the last one.

A store that cannot send notifications (an external S3-compatible store, or keys without
that right) is polled instead; `subscribe` says which mode a deployment got.
"""
from __future__ import annotations

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.core import aws
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings
from chalicelib.state import connections
from chalicelib.state.connections import Location

CONFIGURATION_ID = "tfbatch-uploads"
NOTIFICATIONS, POLLING = "notifications", "polling"


def _table():
    return aws.table(get_settings().subscriptions_table)


def bucket_ref(location: Location) -> str:
    """Buckets are named per store: the same name at two endpoints is two buckets."""
    return f"{location.url or 's3'}|{location.bucket}"


def _service_store(location: Location) -> bool:
    """Only buckets in the service's own S3 can notify the service's queue."""
    return (location.url or None) == get_settings().aws_endpoint


def _queue_arn() -> str:
    url = aws.queue_url(get_settings().tasks_queue)
    return aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _configuration(s3, bucket: str) -> dict:
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    return current


def subscribe(instance_id: str, deployment_id: str, location: Location, keys: dict) -> str:
    """Route the input bucket's uploads to the queue; returns the mode the deployment runs in."""
    if not _service_store(location):
        return POLLING
    s3 = connections.s3_client(location, keys)
    try:
        current = _configuration(s3, location.bucket)
        queues = current.get("QueueConfigurations", [])
        if not any(item.get("Id") == CONFIGURATION_ID for item in queues):
            current["QueueConfigurations"] = queues + [
                {"Id": CONFIGURATION_ID, "QueueArn": _queue_arn(), "Events": ["s3:ObjectCreated:*"]}]
            s3.put_bucket_notification_configuration(Bucket=location.bucket, NotificationConfiguration=current)
    except (ClientError, BotoCoreError) as error:
        logger.warning("bucket notifications unavailable; polling instead",
                       extra={"bucket": location.bucket, "reason": type(error).__name__})
        return POLLING
    _table().put_item(Item={"bucket_ref": bucket_ref(location), "deployment_id": deployment_id,
                            "instance_id": instance_id})
    return NOTIFICATIONS


def unsubscribe(deployment_id: str, location: Location, trigger: str, keys: dict) -> None:
    ref = bucket_ref(location)
    _table().delete_item(Key={"bucket_ref": ref, "deployment_id": deployment_id})
    if trigger != NOTIFICATIONS or subscribers(ref):
        return
    s3 = connections.s3_client(location, keys)
    try:
        current = _configuration(s3, location.bucket)
        current["QueueConfigurations"] = [item for item in current.get("QueueConfigurations", [])
                                          if item.get("Id") != CONFIGURATION_ID]
        s3.put_bucket_notification_configuration(Bucket=location.bucket, NotificationConfiguration=current)
    except (ClientError, BotoCoreError) as error:  # the bucket may be gone already
        logger.warning("could not remove the bucket notification",
                       extra={"bucket": location.bucket, "reason": type(error).__name__})


def subscribers(ref: str) -> list[dict]:
    return _table().query(KeyConditionExpression=Key("bucket_ref").eq(ref), ConsistentRead=True)["Items"]
