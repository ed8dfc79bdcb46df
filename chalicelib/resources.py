"""The one description of the service's tables, buckets, queues and secrets.

The local bootstrap creates exactly these, and the AWS packaging turns the same definitions into
CloudFormation resources, so the local stack and AWS cannot drift apart.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.settings import Settings, get_settings


@dataclass(frozen=True)
class TableSpec:
    name: str
    hash_key: str
    range_key: str | None = None

    def create_args(self) -> dict:
        keys = [{"AttributeName": self.hash_key, "KeyType": "HASH"}]
        attributes = [{"AttributeName": self.hash_key, "AttributeType": "S"}]
        if self.range_key:
            keys.append({"AttributeName": self.range_key, "KeyType": "RANGE"})
            attributes.append({"AttributeName": self.range_key, "AttributeType": "S"})
        return {
            "TableName": self.name,
            "KeySchema": keys,
            "AttributeDefinitions": attributes,
            "BillingMode": "PAY_PER_REQUEST",
        }


def tables(settings: Settings) -> list[TableSpec]:
    return [
        TableSpec(settings.instances_table, "instance_id"),
        TableSpec(settings.credentials_table, "username"),
        TableSpec(settings.models_table, "instance_id", "model_id"),
        TableSpec(settings.versions_table, "model_id", "version_id"),
        TableSpec(settings.deployments_table, "instance_id", "deployment_id"),
        TableSpec(settings.ledger_table, "deployment_id", "input_key"),
        TableSpec(settings.subscriptions_table, "bucket_ref", "deployment_id"),
    ]


def buckets(settings: Settings) -> list[str]:
    return [settings.models_bucket]


MAX_RECEIVES = 5  # a task that fails this often goes to the dead-letter queue


def queues(settings: Settings) -> dict[str, dict[str, str]]:
    """Queue name -> attributes, dead-letter queue first. The visibility timeout outlasts the
    scoring function's 15-minute timeout, so a running task is never handed out twice."""
    return {
        settings.dead_letter_queue: {"MessageRetentionPeriod": "1209600"},
        settings.tasks_queue: {"VisibilityTimeout": "960"},
    }


def bootstrap(settings: Settings | None = None) -> None:
    """Create every resource that is missing. Safe to run any number of times."""
    settings = settings or get_settings()
    dynamodb = aws.client("dynamodb")
    existing = set(dynamodb.list_tables()["TableNames"])
    for spec in tables(settings):
        if spec.name not in existing:
            dynamodb.create_table(**spec.create_args())
    s3 = aws.client("s3")
    for bucket in buckets(settings):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            s3.create_bucket(Bucket=bucket)
    sqs = aws.client("sqs")
    for name, attributes in queues(settings).items():
        sqs.create_queue(QueueName=name, Attributes=attributes)
    dead_letters = sqs.get_queue_attributes(QueueUrl=aws.queue_url(settings.dead_letter_queue),
                                            AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dead_letters, "maxReceiveCount": str(MAX_RECEIVES)})
    sqs.set_queue_attributes(QueueUrl=aws.queue_url(settings.tasks_queue), Attributes={"RedrivePolicy": redrive})
    _ensure_signing_key(settings.signing_key_secret)


def _ensure_signing_key(secret_id: str) -> None:
    sm = aws.client("secretsmanager")
    try:
        sm.describe_secret(SecretId=secret_id)
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(Name=secret_id, SecretString=secrets.token_urlsafe(48))
