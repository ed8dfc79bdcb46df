"""The `tfbatch` command as a user of the API runs it, against the local stack: sign in once
(a profile with a token, never the password, readable by its owner only), then publish, list,
show and delete models, each with `--json` printing the API's own answer."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
TFBATCH = str(Path(sys.executable).parent / "tfbatch")


def _tfbatch(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TFBATCH, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def signed_in(local_stack, tmp_path) -> dict:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "TFBATCH_PASSWORD": local_stack["password"],
           "COLUMNS": "200"}
    done = _tfbatch(env, "login", "--url", local_stack["url"], "--instance", local_stack["instance_id"],
                    "--username", local_stack["username"])
    assert done.returncode == 0, done.stdout + done.stderr
    return env


def test_the_command_says_its_version():
    done = subprocess.run([TFBATCH, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("tfbatch 0.")


def test_login_keeps_a_token_never_the_password_and_only_for_its_owner(signed_in, local_stack, tmp_path):
    profiles = tmp_path / "config" / "tfbatch" / "profiles.json"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    saved = json.loads(profiles.read_text())["default"]
    assert saved["instance_id"] == local_stack["instance_id"] and saved["token"]
    assert local_stack["password"] not in profiles.read_text()
    wrong = _tfbatch({**signed_in, "TFBATCH_PASSWORD": "not-it"}, "login", "--url", local_stack["url"], "--instance",
                     local_stack["instance_id"], "--username", local_stack["username"], "--profile", "other")
    assert wrong.returncode == 1 and "invalid_credentials" in wrong.stdout


def test_models_are_published_listed_shown_and_deleted_with_the_command(signed_in, model_dirs, tmp_path):
    published = _tfbatch(signed_in, "models", "publish", str(model_dirs["multi_io"]), "--name", "cli-model", "--json")
    assert published.returncode == 0, published.stdout + published.stderr
    model = json.loads(published.stdout)
    model_id = model["metadata"]["guid"]
    assert model["entity"]["status"] == "ready"
    assert [s["name"] for s in model["entity"]["latest_version"]["signatures"]] == ["serving_default"]
    listed = json.loads(_tfbatch(signed_in, "models", "list", "--json").stdout)
    assert model_id in [item["metadata"]["guid"] for item in listed["resources"]]
    shown = _tfbatch(signed_in, "models", "show", model_id)
    assert shown.returncode == 0 and "serving_default" in shown.stdout and "a float32" in shown.stdout
    assert _tfbatch(signed_in, "models", "delete", model_id).returncode == 0
    gone = _tfbatch(signed_in, "models", "show", model_id)
    assert gone.returncode == 1 and "does not exist" in gone.stdout


def test_a_model_goes_straight_to_the_bucket_with_the_two_step_upload(signed_in, model_dirs):
    published = _tfbatch(signed_in, "models", "publish", str(model_dirs["strings"]), "--name", "two-step",
                         "--two-step", "--json")
    assert published.returncode == 0, published.stdout + published.stderr
    model = json.loads(published.stdout)
    assert model["entity"]["status"] == "ready" and model["entity"]["latest_version"]["signatures"]


@pytest.mark.parametrize("upload", ["--direct", "--two-step"])
def test_a_model_that_reads_files_or_the_environment_is_published_as_invalid_with_why(signed_in, tmp_path, upload):
    """A hostile graph is refused whichever way its archive arrives (through the API, or straight
    to the bucket, where the inspection takes its digest first)."""
    import hostile_models

    for build, op in ((hostile_models.reads_environment, "ReadFile"), (hostile_models.lists_the_model_cache,
                                                                       "MatchingFiles")):
        refused = _tfbatch(signed_in, "models", "publish", str(build(tmp_path / f"{op}{upload}")), "--name", op,
                           upload)
        assert refused.returncode == 1 and "invalid" in refused.stdout and op in refused.stdout, refused.stdout


def test_a_batch_deployment_is_created_watched_inspected_and_deleted_with_the_command(signed_in, local_stack,
                                                                                      model_dirs, tmp_path):
    import stackclient

    s3 = stackclient.store(local_stack)
    s3.create_bucket(Bucket="cli-in")
    s3.create_bucket(Bucket="cli-out")
    for number in range(5):
        s3.put_object(Bucket="cli-in", Key=f"f{number}.json", Body=json.dumps({"a": [[number, 1, 2]], "b": [number]}))
    s3.put_object(Bucket="cli-in", Key="bad.json", Body=b"{not json")
    model = json.loads(_tfbatch(signed_in, "models", "publish", str(model_dirs["multi_io"]), "--name", "cli-batch",
                                "--json").stdout)
    store_env = {**signed_in, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    store_url = local_stack["env"]["TFBATCH_AWS_ENDPOINT"]
    created = _tfbatch(store_env, "deployments", "create", "--model", model["metadata"]["guid"], "--input",
                       "s3://cli-in", "--output", "s3://cli-out/results/", "--endpoint", store_url, "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    deployment_id = json.loads(created.stdout)["metadata"]["guid"]
    watched = _tfbatch(signed_in, "deployments", "watch", deployment_id, "--every", "0.2")
    assert watched.returncode == 0 and "SUCCESS: 5 scored, 1 failed" in watched.stdout, watched.stdout
    failures = json.loads(_tfbatch(store_env, "deployments", "failures", deployment_id, "--json").stdout)
    assert [(item["filename"], item["error"]["code"]) for item in failures] == [("bad.json", "invalid_json")]
    downloaded = _tfbatch(store_env, "deployments", "results", deployment_id, "--to", str(tmp_path / "out"))
    assert downloaded.returncode == 0
    records = [element for path in (tmp_path / "out").glob("predictions-*.json")
               for element in json.loads(path.read_text())]
    assert sorted(element["filename"] for element in records) == [f"f{n}.json" for n in range(5)]
    listed = _tfbatch(signed_in, "deployments", "list")
    assert deployment_id in listed.stdout and "SUCCESS" in listed.stdout
    assert _tfbatch(signed_in, "deployments", "delete", deployment_id).returncode == 0
    assert _tfbatch(signed_in, "deployments", "show", deployment_id).returncode == 1


def test_pip_install_of_the_project_gives_a_working_client_without_the_service_stack(local_stack, tmp_path):
    """`pip install tfbatch` is the client: the command signs in and lists models with the base
    dependencies alone; TensorFlow and Chalice are extras it does not pull in."""
    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "client-venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(root)],
                               capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "TFBATCH_PASSWORD": local_stack["password"]}
    client = str(venv / "bin" / "tfbatch")
    signed_in = subprocess.run([client, "login", "--url", local_stack["url"], "--instance", local_stack["instance_id"],
                                "--username", local_stack["username"]], env=env, capture_output=True, text=True,
                               timeout=120)
    assert signed_in.returncode == 0, signed_in.stdout + signed_in.stderr
    listed = subprocess.run([client, "models", "list", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "resources" in json.loads(listed.stdout)
    bare = subprocess.run([str(venv / "bin" / "python"), "-c", "import tensorflow"], capture_output=True)
    assert bare.returncode != 0  # the client alone: no TensorFlow
