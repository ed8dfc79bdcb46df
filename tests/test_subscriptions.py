"""Bucket notifications are merged into what the bucket already has, never clobbering it."""

from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from chalicelib.state import subscriptions
from chalicelib.state.connections import Location

UPLOADS = Location("uploads")


def _configuration(s3) -> dict:
    current = s3.get_bucket_notification_configuration(Bucket="uploads")
    current.pop("ResponseMetadata", None)
    return current


def test_subscriptions_merge_with_others_and_leave_them_alone(aws_mock):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="uploads")
    sqs = aws.client("sqs")
    theirs = sqs.get_queue_attributes(QueueUrl=sqs.create_queue(QueueName="someone-else")["QueueUrl"],
                                      AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    others = {"Id": "their-own", "QueueArn": theirs, "Events": ["s3:ObjectRemoved:*"]}
    s3.put_bucket_notification_configuration(Bucket="uploads",
                                             NotificationConfiguration={"QueueConfigurations": [others]})
    keys = {"access_key": "a", "secret_key": "b"}
    assert subscriptions.subscribe("i-1", "d-1", UPLOADS, keys) == subscriptions.NOTIFICATIONS
    assert subscriptions.subscribe("i-1", "d-2", UPLOADS, keys) == subscriptions.NOTIFICATIONS
    ids = [item["Id"] for item in _configuration(s3)["QueueConfigurations"]]
    assert sorted(ids) == ["tfbatch-uploads", "their-own"]
    assert {s["deployment_id"] for s in subscriptions.subscribers(subscriptions.bucket_ref(UPLOADS))} == {
        "d-1", "d-2"}

    subscriptions.unsubscribe("d-1", UPLOADS, subscriptions.NOTIFICATIONS, keys)
    assert sorted(item["Id"] for item in _configuration(s3)["QueueConfigurations"]) == ["tfbatch-uploads",
                                                                                       "their-own"]
    subscriptions.unsubscribe("d-2", UPLOADS, subscriptions.NOTIFICATIONS, keys)
    assert [item["Id"] for item in _configuration(s3)["QueueConfigurations"]] == ["their-own"]


def test_a_store_the_service_cannot_reach_is_polled(aws_mock):
    external = Location("uploads", url="https://s3.eu.cloud-object-storage.example")
    assert subscriptions.subscribe("i-1", "d-3", external, {"access_key": "a", "secret_key": "b"}) == \
        subscriptions.POLLING
    assert not subscriptions.subscribers(subscriptions.bucket_ref(external))


def test_tasks_queue_sends_repeated_failures_to_the_dead_letter_queue(aws_mock):
    settings = get_settings()
    attributes = aws.client("sqs").get_queue_attributes(QueueUrl=aws.queue_url(settings.tasks_queue),
                                                        AttributeNames=["RedrivePolicy"])["Attributes"]
    assert settings.dead_letter_queue in attributes["RedrivePolicy"]
