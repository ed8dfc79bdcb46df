"""HTTP helpers for end-to-end tests on the real local stack (requests, as a user's script)."""
from __future__ import annotations

import time
from pathlib import Path

import boto3
import requests

import savedmodels


def session(stack: dict) -> requests.Session:
    token = requests.get(f"{stack['url']}/v3/identity/token", auth=(stack["username"], stack["password"]),
                         timeout=10).json()["token"]
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                         "Accept": "application/json", "X-Spark-Service-Instance": "ignored"})
    return http


def wait(http: requests.Session, url: str, done, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    entity = None
    while time.monotonic() < deadline:
        entity = http.get(url, timeout=10).json()["entity"]
        if done(entity):
            return entity
        time.sleep(0.2)
    raise AssertionError(f"{url} did not get there within {timeout} s: {entity}")


def publish(http: requests.Session, stack: dict, directory: Path, name: str, **tar_args) -> dict:
    """Create a model, upload its archive, wait for inspection; the model's entity and URL."""
    models_url = f"{stack['url']}/v3/wml_instances/{stack['instance_id']}/published_models"
    created = http.post(models_url, json={"name": name, "model_type": "tensorflow-2.21"}, timeout=10)
    assert created.status_code == 201, created.text
    model_url = created.json()["metadata"]["url"]
    upload = http.put(f"{model_url}/content", data=savedmodels.tar_gz(directory, **tar_args),
                      headers={"Content-Type": "application/gzip"}, timeout=30)
    assert upload.status_code == 202, upload.text
    entity = wait(http, model_url, lambda e: e["status"] != "inspecting")
    return {**entity, "url": model_url}


def store(stack: dict):
    """boto3 on the stack's moto server, which also plays the users' S3."""
    return boto3.client("s3", endpoint_url=stack["env"]["TFBATCH_AWS_ENDPOINT"], aws_access_key_id="k",
                        aws_secret_access_key="s", region_name="us-east-1")


def connection(url: str) -> dict:
    return {"access_key": "user-key", "secret_key": "user-secret", "url": url}
