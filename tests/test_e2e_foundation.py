"""End to end on the real local stack: the seed's curl steps over HTTP, models published and
inspected by the worker, and tenants kept apart."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import stackclient

pytestmark = pytest.mark.e2e
TFBATCH = str(Path(sys.executable).parent / "tfbatch")


@pytest.fixture(scope="module")
def session(local_stack):
    return local_stack["url"], local_stack["instance_id"], stackclient.session(local_stack)


def test_token_with_post_and_wrong_password(local_stack):
    url = local_stack["url"]
    assert "token" in requests.post(f"{url}/v3/identity/token",
                                    auth=(local_stack["username"], local_stack["password"]), timeout=10).json()
    refused = requests.get(f"{url}/v3/identity/token", auth=(local_stack["username"], "nope"), timeout=10)
    assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == "invalid_credentials"


def test_instance_details_over_http(session):
    url, instance_id, http = session
    data = http.get(f"{url}/v3/wml_instances/{instance_id}", timeout=10).json()
    assert data["metadata"]["url"] == f"{url}/v3/wml_instances/{instance_id}"
    assert data["entity"]["published_models"]["url"] == f"{url}/v3/wml_instances/{instance_id}/published_models"


def test_keras_and_tf1_models_are_published_and_inspected(session, local_stack, model_dirs):
    url, instance_id, http = session
    keras = stackclient.publish(http, local_stack, model_dirs["keras"], "keras")
    assert keras["status"] == "ready"
    assert "serving_default" in {s["name"] for s in keras["latest_version"]["signatures"]}
    tf1 = stackclient.publish(http, local_stack, model_dirs["tf1_classify"], "tf1", top=None)
    assert tf1["status"] == "ready"
    assert tf1["latest_version"]["signatures"][0]["method_name"] == "tensorflow/serving/classify"
    listed = http.get(f"{url}/v3/wml_instances/{instance_id}/published_models?limit=1", timeout=10).json()
    assert len(listed["resources"]) == 1 and listed["next"]["url"].startswith(url)
    usage = http.get(f"{url}/v3/wml_instances/{instance_id}", timeout=10).json()["entity"]["usage"]
    assert usage["model_count"]["current"] >= 2


def test_admin_cli_creates_an_isolated_instance(session, local_stack):
    url, instance_id, http = session
    printed = subprocess.run([TFBATCH, "admin", "create-instance", "second", "--api-url", url],
                             env=local_stack["env"], capture_output=True, text=True, check=True).stdout
    other = json.loads(printed)
    token = requests.get(f"{url}/v3/identity/token", auth=(other["username"], other["password"]),
                         timeout=10).json()["token"]
    response = requests.get(f"{url}/v3/wml_instances/{instance_id}/published_models",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 403
    assert "published_models" not in response.text and set(response.json()) == {"trace", "errors"}


def test_bad_archive_is_refused_over_http(session):
    url, instance_id, http = session
    model_url = http.post(f"{url}/v3/wml_instances/{instance_id}/published_models",
                          json={"name": "bad", "model_type": "tensorflow"}, timeout=10).json()["metadata"]["url"]
    response = http.put(f"{model_url}/content", data=b"PK\x03\x04 broken zip",
                        headers={"Content-Type": "application/zip"}, timeout=10)
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "invalid_archive"


def test_no_secret_in_the_stack_logs(local_stack):
    run_dir = Path(local_stack["env"]["TFBATCH_RUN_DIR"])
    logs = "".join(path.read_text(errors="replace") for path in run_dir.glob("*.log"))
    assert local_stack["password"] not in logs


def test_an_unknown_route_is_a_v3_404_that_never_repeats_the_authorization_header(session):
    url, instance_id, http = session
    response = http.get(f"{url}/v3/no/such/route?x=1", timeout=10)
    assert response.status_code == 404
    data = response.json()
    assert set(data) == {"trace", "errors"} and data["errors"][0]["code"] == "unknown_route"
    assert "/v3/no/such/route" in data["errors"][0]["message"]
    token = http.headers["Authorization"].split(" ", 1)[1]
    assert token not in response.text
    wrong_method = http.delete(f"{url}/v3/wml_instances/{instance_id}/published_models", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.json()["errors"][0]["code"] == "method_not_allowed"
