"""Model inspection with TensorFlow: real SavedModels in, signatures (or a clear reason) out."""
from __future__ import annotations

import io
import json
import tarfile

import pytest
from chalice.test import Client

import savedmodels
from apiclient import basic, bearer, body
from chalicelib import instances, models
from chalicelib.worker import _lambda_context


@pytest.fixture
def publish(aws_mock):
    """Create a model, upload content through the API, and run the queued task through the SQS handler."""
    import app as service
    from chalicelib import aws
    from chalicelib.settings import get_settings

    created = instances.create("t")
    with Client(service.app, stage_name="test") as client:
        token = body(client.http.get("/v3/identity/token", headers=basic(created.username, created.password)))["token"]
        headers = bearer(token)
        base = f"/v3/wml_instances/{created.instance_id}/published_models"

        def run(archive: bytes) -> dict:
            model_id = body(client.http.post(base, headers=headers, body=json.dumps(
                {"name": "m", "model_type": "tensorflow-2.21"})))["metadata"]["guid"]
            client.http.put(f"{base}/{model_id}/content", headers={**headers, "Content-Type": "application/gzip"},
                            body=archive)
            queue = aws.queue_url(get_settings().tasks_queue)
            messages = aws.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
            event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                                  "body": m["Body"], "attributes": {}, "messageAttributes": {},
                                  "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"}
                                 for m in messages]}
            assert service.handle_tasks(event, _lambda_context()) == {"batchItemFailures": []}
            return body(client.http.get(f"{base}/{model_id}", headers=headers))["entity"]

        yield run


def test_keras_export_is_ready_with_its_signatures(publish, model_dirs):
    entity = publish(savedmodels.tar_gz(model_dirs["keras"]))
    assert entity["status"] == models.READY
    signatures = {s["name"]: s for s in entity["latest_version"]["signatures"]}
    assert signatures["serving_default"]["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 4]}]
    assert signatures["serving_default"]["outputs"] == [{"name": "output_0", "dtype": "float32", "shape": [None, 3]}]


def test_tf1_savedmodelbuilder_classify_signature(publish, model_dirs):
    entity = publish(savedmodels.tar_gz(model_dirs["tf1_classify"], top=None))
    assert entity["status"] == models.READY
    (signature,) = entity["latest_version"]["signatures"]
    assert signature["method_name"] == "tensorflow/serving/classify"
    assert signature["inputs"] == [{"name": "inputs", "dtype": "float32", "shape": [None, 784]}]
    assert {o["name"]: o["dtype"] for o in signature["outputs"]} == {"classes": "int64", "proba": "float32"}


def test_several_inputs_and_string_tensors(publish, model_dirs):
    multi = publish(savedmodels.tar_gz(model_dirs["multi_io"]))["latest_version"]["signatures"][0]
    assert [(i["name"], i["dtype"]) for i in multi["inputs"]] == [("a", "float32"), ("b", "int64")]
    strings = publish(savedmodels.tar_gz(model_dirs["strings"]))["latest_version"]["signatures"][0]
    assert strings["inputs"] == [{"name": "text", "dtype": "string", "shape": [None]}]


def test_zip_upload_inspects_the_same(publish, model_dirs):
    assert publish(savedmodels.zipped(model_dirs["multi_io"]))["status"] == models.READY


def test_a_model_that_does_not_load_is_invalid_with_the_reason(publish):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model/saved_model.pb")
        junk = b"this is not a protocol buffer"
        info.size = len(junk)
        archive.addfile(info, io.BytesIO(junk))
    entity = publish(buffer.getvalue())
    assert entity["status"] == models.INVALID
    assert entity["latest_version"]["status_details"]["message"].startswith("The model cannot be served:")
