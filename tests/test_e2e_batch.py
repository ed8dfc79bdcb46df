"""The seed's batch walk-through, request by request, over HTTP on the real local stack: the
worker scores what is in the bucket, and num_3.json comes out as class 3."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

import stackclient

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_seed_batch_walkthrough(local_stack, digits_archive):
    url, instance_id = local_stack["url"], local_stack["instance_id"]
    store = local_stack["env"]["TFBATCH_AWS_ENDPOINT"]
    http = stackclient.session(local_stack)

    instance = http.get(f"{url}/v3/wml_instances/{instance_id}", timeout=10).json()
    models_url = instance["entity"]["published_models"]["url"]
    model = http.post(models_url, json={"name": "k_tf_mnist", "model_type": "tensorflow-2.21",
                                        "description": "digits"}, timeout=10).json()
    model_url = model["metadata"]["url"]
    http.put(f"{model_url}/content", data=digits_archive, headers={"Content-Type": "application/gzip"},
             timeout=60).raise_for_status()
    assert stackclient.wait(http, model_url, lambda e: e["status"] != "inspecting")["status"] == "ready"

    import digits_model

    s3 = boto3.client("s3", endpoint_url=store, aws_access_key_id="k", aws_secret_access_key="s",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="batchtensorflow-in")
    s3.create_bucket(Bucket="batch")
    s3.put_object(Bucket="batchtensorflow-in", Key="num_3.json", Body=(EXAMPLES / "num_3.json").read_bytes())
    images, labels = digits_model.digits_as_mnist(20)
    expected = {"num_3.json": 3}
    for number, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = f"sample_{number}.json"
        s3.put_object(Bucket="batchtensorflow-in", Key=name, Body=json.dumps({"inputs": [image.tolist()]}).encode())
        expected[name] = int(label)

    keys = {"access_key": "seed-access", "secret_key": "seed-secret-never-shown", "url": store}
    created = http.post(f"{model_url}/deployments", timeout=30, json={
        "name": "MNIST Prediction", "type": "batch", "description": "Batch Deployment",
        "input": {"type": "cloudobjectstorage", "source": {"bucket": "batchtensorflow-in"}, "connection": keys},
        "output": {"type": "cloudobjectstorage", "target": {"bucket": "batch"}, "connection": keys},
    })
    assert created.status_code == 201, created.text
    assert "seed-secret-never-shown" not in created.text
    deployment = created.json()
    assert deployment["entity"]["status"] == "INITIALIZING"
    assert deployment["entity"]["published_model"]["guid"] == model["metadata"]["guid"]
    final = stackclient.wait(http, deployment["metadata"]["url"], lambda e: e["status"] in ("SUCCESS", "FAILED"))
    assert final["status_details"] | {"progress": 1.0} == {
        "status": "SUCCESS", "total": len(expected), "scored": len(expected), "failed": 0, "pending": 0,
        "progress": 1.0}

    predicted = {}
    for item in s3.list_objects_v2(Bucket="batch")["Contents"]:
        for element in json.loads(s3.get_object(Bucket="batch", Key=item["Key"])["Body"].read()):
            assert list(element)[0] == "filename"
            predicted[element["filename"]] = element["classes"]
    assert predicted["num_3.json"] == 3
    right = sum(predicted[name] == label for name, label in expected.items())
    assert right >= len(expected) - 2, (predicted, expected)

    usage = http.get(f"{url}/v3/wml_instances/{instance_id}", timeout=10).json()["entity"]["usage"]
    assert usage["prediction_count"]["current"] >= len(expected)
    assert usage["deployment_count"]["current"] >= 1

    listed = http.get(f"{url}/v3/wml_instances/{instance_id}/deployments", timeout=10).json()
    assert deployment["metadata"]["guid"] in {r["metadata"]["guid"] for r in listed["resources"]}
    deleted = http.delete(deployment["metadata"]["url"], timeout=10)
    assert deleted.status_code == 204
    assert http.get(deployment["metadata"]["url"], timeout=10).status_code == 404
    assert s3.list_objects_v2(Bucket="batch")["KeyCount"] >= 1  # outputs stay
