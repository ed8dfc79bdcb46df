"""The main job, end to end against the running local stack, as a user would do it over HTTP.

1. get a token with the instance's credentials (local-credentials.json, written by `make up`);
2. train the demo digit classifier and publish it as a SavedModel (tar.gz);
3. wait until the service has inspected it, then list the models and show its signature.
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

import requests
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
console = Console()


def credentials() -> dict:
    path = Path(os.environ.get("TFBATCH_CREDENTIALS_FILE", ROOT / "local-credentials.json"))
    if not path.exists():
        sys.exit(f"{path} is missing: start the local stack first (make up).")
    return json.loads(path.read_text())


def export_demo_model() -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(HERE))
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
    console.print("The stack keeps running for your own curl calls; `make down` stops it.")


if __name__ == "__main__":
    main()
