"""The one description of the service's tables, buckets, queues and secrets.

The local bootstrap creates exactly these, and the AWS packaging turns the same definitions into
CloudFormation resources, so the local stack and AWS cannot drift apart.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from botocore.exceptions import ClientError

from chalicelib.core import aws
from chalicelib.core.settings import Settings, get_settings


@dataclass(frozen=True)
class TableSpec:
    setting: str  # the Settings field (and TFBATCH_* variable) that names the table
    name: str
    hash_key: str
    range_key: str | None = None
    ttl_attribute: str | None = None  # epoch seconds after which DynamoDB deletes the item

    def ttl_specification(self) -> dict | None:
        """DynamoDB's TimeToLiveSpecification (the same shape in the API and in CloudFormation)."""
        return {"AttributeName": self.ttl_attribute, "Enabled": True} if self.ttl_attribute else None

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


# Tables whose items are only worth keeping for a while: DynamoDB deletes them once this
# attribute's epoch second has passed (lazily, so readers still check it).
TTL_ATTRIBUTES = {"signin_attempts_table": "expires_at"}


def tables(settings: Settings) -> list[TableSpec]:
    keys = {
        "instances_table": ("instance_id", None),
        "credentials_table": ("username", None),
        "models_table": ("instance_id", "model_id"),
        "versions_table": ("model_id", "version_id"),
        "deployments_table": ("instance_id", "deployment_id"),
        "ledger_table": ("deployment_id", "input_key"),
        "groups_table": ("deployment_id", "group_key"),
        "subscriptions_table": ("bucket_ref", "deployment_id"),
        "signin_attempts_table": ("username_hash", None),
    }
    return [TableSpec(setting, getattr(settings, setting), *key, ttl_attribute=TTL_ATTRIBUTES.get(setting))
            for setting, key in keys.items()]


BUCKET_SETTINGS = ("models_bucket",)


def buckets(settings: Settings) -> list[str]:
    return [getattr(settings, setting) for setting in BUCKET_SETTINGS]


MAX_RECEIVES = 5  # a task that fails this often goes to the dead-letter queue
FUNCTION_TIMEOUT_SECONDS = 900  # the scoring function's timeout: Lambda's maximum
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: time to look at what failed


@dataclass(frozen=True)
class QueueSpec:
    setting: str
    name: str
    attributes: dict[str, str]  # SQS API attributes (strings)
    dead_letters: str | None = None  # the setting naming its dead-letter queue


def queues(settings: Settings) -> list[QueueSpec]:
    """The dead-letter queue first. The tasks queue's visibility timeout outlasts the scoring
    function's timeout, so a task still running is never handed out twice."""
    return [
        QueueSpec("dead_letter_queue", settings.dead_letter_queue,
                  {"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_SECONDS)}),
        QueueSpec("tasks_queue", settings.tasks_queue,
                  {"VisibilityTimeout": str(FUNCTION_TIMEOUT_SECONDS + 60)}, dead_letters="dead_letter_queue"),
    ]


def bootstrap(settings: Settings | None = None) -> None:
    """Create every resource that is missing. Safe to run any number of times."""
    settings = settings or get_settings()
    dynamodb = aws.client("dynamodb")
    existing = set(dynamodb.list_tables()["TableNames"])
    for spec in tables(settings):
        if spec.name not in existing:
            dynamodb.create_table(**spec.create_args())
            if ttl := spec.ttl_specification():
                dynamodb.update_time_to_live(TableName=spec.name, TimeToLiveSpecification=ttl)
    s3 = aws.client("s3")
    for bucket in buckets(settings):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            s3.create_bucket(Bucket=bucket)
    sqs = aws.client("sqs")
    for queue in queues(settings):
        sqs.create_queue(QueueName=queue.name, Attributes=queue.attributes)
        if queue.dead_letters:
            target = sqs.get_queue_attributes(QueueUrl=aws.queue_url(getattr(settings, queue.dead_letters)),
                                              AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            redrive = json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": str(MAX_RECEIVES)})
            sqs.set_queue_attributes(QueueUrl=aws.queue_url(queue.name), Attributes={"RedrivePolicy": redrive})
    _ensure_signing_key(settings.signing_key_secret)


def _ensure_signing_key(secret_id: str) -> None:
    sm = aws.client("secretsmanager")
    try:
        sm.describe_secret(SecretId=secret_id)
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(Name=secret_id, SecretString=secrets.token_urlsafe(48))
