"""The main job, end to end against the running local stack, as a user would do it over HTTP.

1. get a token with the instance's credentials (local-credentials.json, written by `make up`);
2. train the demo digit classifier and publish it as a SavedModel (tar.gz);
3. wait until the service has inspected it, then list the models and show its signature;
4. put the seed's num_3.json and a few more digits into an input bucket (the local store is
   the moto server, which plays S3 at the same address for users' buckets too);
5. create the batch deployment with the seed's request body, follow its status to SUCCESS,
   and print the predictions file;
6. drop one more file into the bucket and print its result as soon as it appears, with the
   time from upload to result (the bucket notifies the service; nobody polls by hand).
"""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import boto3
import requests
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
console = Console()


def credentials() -> dict:
    path = Path(os.environ.get("TFBATCH_CREDENTIALS_FILE", ROOT / "local-credentials.json"))
    if not path.exists():
        sys.exit(f"{path} is missing: start the local stack first (make up).")
    return json.loads(path.read_text())


def export_demo_model() -> bytes:
    import digits_model

    with tempfile.TemporaryDirectory() as scratch:
        digits_model.export(f"{scratch}/digits")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(f"{scratch}/digits", arcname="digits")
    return buffer.getvalue()


def wait_until_inspected(http: requests.Session, model_url: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entity = http.get(model_url, timeout=10).json()["entity"]
        if entity["status"] != "inspecting":
            return entity
        time.sleep(0.5)
    sys.exit(f"The model was not inspected within {timeout:.0f} s; see .run/worker.log.")


def show_signatures(entity: dict) -> None:
    for signature in entity["latest_version"].get("signatures", []):
        table = Table(title=f"signature {signature['name']} ({signature['method_name']})")
        for column in ("", "tensor", "dtype", "shape"):
            table.add_column(column)
        for side in ("inputs", "outputs"):
            for tensor in signature[side]:
                table.add_row(side[:-1], tensor["name"], tensor["dtype"], str(tensor["shape"]))
        console.print(table)


def store_endpoint() -> str:
    return os.environ.get("TFBATCH_AWS_ENDPOINT") or f"http://127.0.0.1:{os.environ.get('TFBATCH_MOTO_PORT', '5000')}"


def fill_input_bucket(bucket: str, samples: int = 5) -> list[str]:
    """The seed's num_3.json plus a few of scikit-learn's digits in the seed's input format."""
    import digits_model

    s3 = boto3.client("s3", endpoint_url=store_endpoint(), aws_access_key_id="demo", aws_secret_access_key="demo",
                      region_name="us-east-1")
    for name in (bucket, f"{bucket}-results"):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=bucket, Key="num_3.json", Body=(HERE / "num_3.json").read_bytes())
    images, labels = digits_model.digits_as_mnist(samples)
    names = ["num_3.json"]
    for image, label in zip(images, labels, strict=True):
        name = f"digit_{len(names)}_is_{label}.json"
        s3.put_object(Bucket=bucket, Key=name, Body=json.dumps({"inputs": [image.tolist()]}).encode())
        names.append(name)
    return names


def follow(http: requests.Session, deployment_url: str, timeout: float = 300) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        entity = http.get(deployment_url, timeout=10).json()["entity"]
        details = entity["status_details"]
        line = (f"{entity['status']:20} total {details['total']}  scored {details['scored']}  "
                f"failed {details['failed']}  pending {details['pending']}")
        if line != last:
            console.print(line)
            last = line
        if entity["status"] in ("SUCCESS", "FAILED"):
            return entity
        time.sleep(0.5)
    sys.exit(f"The deployment did not finish within {timeout:.0f} s; see .run/worker.log.")


def show_predictions(bucket: str, prefix: str) -> None:
    s3 = boto3.client("s3", endpoint_url=store_endpoint(), aws_access_key_id="demo", aws_secret_access_key="demo",
                      region_name="us-east-1")
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        console.print(f"[bold]{bucket}/{item['Key']}[/bold]")
        for element in json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()):
            console.print(json.dumps(element), soft_wrap=True)


def deploy_and_score(http: requests.Session, model_url: str) -> None:
    bucket = f"digits-in-{int(time.time())}"
    console.rule("batch deployment")
    names = fill_input_bucket(bucket)
    console.print(f"put {len(names)} input files into bucket {bucket}")
    keys = {"access_key": "demo-access-key", "secret_key": "demo-secret-key", "url": store_endpoint()}
    created = http.post(f"{model_url}/deployments", timeout=60, json={
        "name": "MNIST Prediction", "type": "batch", "description": "Batch Deployment",
        "input": {"type": "cloudobjectstorage", "source": {"bucket": bucket}, "connection": keys},
        "output": {"type": "cloudobjectstorage", "target": {"bucket": f"{bucket}-results"}, "connection": keys},
    })
    if created.status_code != 201:
        sys.exit(f"Creating the deployment failed: {created.text}")
    deployment = created.json()
    console.print(f"deployment {deployment['metadata']['guid']}: {deployment['entity']['status']}")
    final = follow(http, deployment["metadata"]["url"])
    if final["status"] != "SUCCESS":
        sys.exit(f"The deployment failed: {final['status_details']}")
    show_predictions(f"{bucket}-results", "predictions-")
    score_one_more(bucket)


def score_one_more(bucket: str, timeout: float = 60) -> None:
    """Upload one more digit and wait for its result: the upload-to-result time."""
    import digits_model

    console.rule("one more upload")
    s3 = boto3.client("s3", endpoint_url=store_endpoint(), aws_access_key_id="demo", aws_secret_access_key="demo",
                      region_name="us-east-1")
    results = f"{bucket}-results"
    before = {item["Key"] for item in s3.list_objects_v2(Bucket=results).get("Contents", [])}
    images, labels = digits_model.digits_as_mnist(10)
    started = time.monotonic()
    s3.put_object(Bucket=bucket, Key="late_arrival.json", Body=json.dumps({"inputs": [images[9].tolist()]}).encode())
    while time.monotonic() - started < timeout:
        new = [item["Key"] for item in s3.list_objects_v2(Bucket=results).get("Contents", [])
               if item["Key"] not in before]
        if new:
            elapsed = time.monotonic() - started
            for element in json.loads(s3.get_object(Bucket=results, Key=new[0])["Body"].read()):
                console.print(json.dumps(element), soft_wrap=True)
            console.print(f"late_arrival.json (a {labels[9]}) scored {elapsed:.2f} s after its upload")
            return
        time.sleep(0.05)
    sys.exit(f"late_arrival.json was not scored within {timeout:.0f} s; see .run/worker.log.")


def main() -> None:
    creds = credentials()
    url, instance_id = creds["url"], creds["instance_id"]
    token = requests.get(f"{url}/v3/identity/token", auth=(creds["username"], creds["password"]),
                         timeout=10).json()["token"]
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    instance = http.get(f"{url}/v3/wml_instances/{instance_id}", timeout=10).json()
    models_url = instance["entity"]["published_models"]["url"]
    console.rule("publish the demo model")
    console.print("training the digit classifier on scikit-learn's digits and exporting a SavedModel ...")
    archive = export_demo_model()
    created = http.post(models_url, timeout=10, json={
        "name": "digits", "description": "Digit classifier on MNIST-shaped input (demo)",
        "model_type": "tensorflow-2.21", "runtime_environment": "python-3.11",
    })
    created.raise_for_status()
    model_url = created.json()["metadata"]["url"]
    upload = http.put(f"{model_url}/content", data=archive, headers={"Content-Type": "application/gzip"}, timeout=60)
    upload.raise_for_status()
    console.print(f"uploaded {len(archive)} bytes; version {upload.json()['entity']['latest_version']['guid']}")
    entity = wait_until_inspected(http, model_url)
    console.print(f"model status: [bold]{entity['status']}[/bold]")
    if entity["status"] != "ready":
        sys.exit(f"The model is not ready: {entity['latest_version'].get('status_details')}")
    console.rule("published models")
    for resource in http.get(models_url, timeout=10).json()["resources"]:
        console.print(f"{resource['metadata']['guid']}  {resource['entity']['name']:12} {resource['entity']['status']}")
    show_signatures(entity)
    deploy_and_score(http, model_url)
    console.print("The stack keeps running for your own curl calls; `make down` stops it.")


if __name__ == "__main__":
    main()
