"""The steps a user takes, through the app's own routes (Chalice's test client), for tests that
then drive the scoring side directly."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import boto3
from chalice.test import Client

import savedmodels
from apiclient import basic, bearer, body
from chalicelib.scoring import inspection
from chalicelib.state import instances


@dataclass
class Tenant:
    client: object
    instance_id: str
    headers: dict
    store_url: str

    @property
    def base(self) -> str:
        return f"/v3/wml_instances/{self.instance_id}"

    def s3(self):
        return boto3.client("s3", endpoint_url=self.store_url, aws_access_key_id="k", aws_secret_access_key="s",
                            region_name="us-east-1")

    def publish(self, model_dir: Path) -> str:
        """Create, upload and inspect a model; its id."""
        created = self.client.http.post(f"{self.base}/published_models", headers=self.headers,
                                        body=json.dumps({"name": model_dir.name, "model_type": "tensorflow-2.21"}))
        model_id = body(created)["metadata"]["guid"]
        uploaded = self.client.http.put(f"{self.base}/published_models/{model_id}/content",
                                        headers={**self.headers, "Content-Type": "application/gzip"},
                                        body=savedmodels.tar_gz(model_dir))
        version_id = body(uploaded)["entity"]["latest_version"]["guid"]
        assert inspection.inspect_version(model_id, version_id) == "ready"
        return model_id

    def deployment_body(self, source: str, target: str, *, prefix: str = "", out_prefix: str = "", **extra) -> dict:
        keys = {"access_key": "user-access-key", "secret_key": "user-secret-key-do-not-leak", "url": self.store_url}
        return {"name": "batch", "type": "batch",
                "input": {"type": "cloudobjectstorage", "source": {"bucket": source, "prefix": prefix},
                          "connection": keys},
                "output": {"type": "s3", "target": {"bucket": target, "prefix": out_prefix}, "connection": keys},
                **extra}

    def deploy(self, model_id: str, source: str, target: str, **options):
        return self.client.http.post(f"{self.base}/published_models/{model_id}/deployments", headers=self.headers,
                                     body=json.dumps(self.deployment_body(source, target, **options)))

    def deployment(self, model_id: str, deployment_id: str) -> dict:
        return body(self.client.http.get(f"{self.base}/published_models/{model_id}/deployments/{deployment_id}",
                                         headers=self.headers))

    def outputs(self, bucket: str, prefix: str = "") -> dict[str, list[dict]]:
        s3 = self.s3()
        found = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        return found


def records_by_file(outputs: dict[str, list[dict]]) -> tuple[Counter, set[str]]:
    """How many result records each input file has across the output files, and which files
    have an error element (an empty `[]` file is a name claimed by fencing: it adds nothing)."""
    records: Counter = Counter()
    errors: set[str] = set()
    for items in outputs.values():
        for item in items:
            records[item["filename"]] += 1
            if "error" in item:
                errors.add(item["filename"])
    return records, errors


def tenant(store_url: str):
    """A new instance with a token, and the app's test client (a context manager)."""
    import app as service

    created = instances.create("tenant")
    client = Client(service.app, stage_name="test")
    token = body(client.http.get("/v3/identity/token", headers=basic(created.username, created.password)))["token"]
    return Tenant(client, created.instance_id, bearer(token), store_url)
