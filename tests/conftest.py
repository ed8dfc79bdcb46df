"""Shared fixtures: moto in-process for unit tests, the real local stack for end-to-end tests,
and real SavedModels built once per session."""
from __future__ import annotations

import logging
import os
import socket

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the in-thread moto server's request lines


def _fake_aws_environment() -> None:
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "TFBATCH_STAGE": "test", "TFBATCH_AWS_ENDPOINT": "",
    })
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)


_fake_aws_environment()


def _reset_caches() -> None:
    """Clients, keys and settings made under one moto must not outlive it (chalicelib.core.caches;
    a module not imported yet has nothing cached)."""
    from chalicelib.core import caches

    caches.reset()


@pytest.fixture
def aws_mock(monkeypatch):
    """moto in-process, with every resource the service defines already created."""
    from moto import mock_aws

    from chalicelib.core import resources

    _reset_caches()
    with mock_aws():
        resources.bootstrap()
        yield
    _reset_caches()


@pytest.fixture
def settings_env(monkeypatch):
    """Set TFBATCH_* variables for one test; settings are re-read."""
    def apply(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        _reset_caches()
    yield apply
    _reset_caches()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """Real SavedModels, written once for the whole session."""
    import savedmodels

    base = tmp_path_factory.mktemp("savedmodels")
    return {
        "keras": savedmodels.keras_export(base / "keras"),
        "multi_io": savedmodels.multi_io(base / "multi_io"),
        "strings": savedmodels.string_io(base / "strings"),
        "tf1_classify": savedmodels.tf1_classify(base / "tf1_classify"),
        "two_signatures": savedmodels.two_signatures(base / "two_signatures"),
    }


@pytest.fixture(scope="session")
def digits_archive(tmp_path_factory) -> bytes:
    """The demo's digit classifier (examples/digits_model.py), trained and packed as a tar.gz."""
    import digits_model

    from chalicelib.core import archives

    directory = digits_model.export(str(tmp_path_factory.mktemp("digits") / "digits"))
    return archives.pack(directory, "digits")


@pytest.fixture
def publish(aws_mock):
    """Create a model, upload content through the API, and run the queued task through the SQS handler."""
    import json

    from chalice.test import Client

    import app as service
    from apiclient import basic, bearer, body
    from chalicelib.core import aws
    from chalicelib.core.settings import get_settings
    from chalicelib.local.worker import _lambda_context
    from chalicelib.state import instances

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


@pytest.fixture(scope="session")
def moto_server_url():
    """A moto server in a thread of the test process: real HTTP, for code that uses obstore."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def server_aws(moto_server_url, settings_env):
    """The service's resources on a fresh moto server; yields its URL (also the users' store)."""
    import requests

    from chalicelib.core import resources

    requests.post(f"{moto_server_url}/moto-api/reset", timeout=10)
    settings_env(TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT=moto_server_url)
    resources.bootstrap()
    yield moto_server_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """The real local stack (moto server, chalice local, worker) on free ports, for HTTP tests.

    Yields the default instance's credentials and the API's URL. The test process's own
    environment is restored right after start-up, so unit tests keep talking to moto in-process.
    """
    from chalicelib.local import localstack

    run_dir = tmp_path_factory.mktemp("stack")
    saved = dict(os.environ)
    ports = {"TFBATCH_MOTO_PORT": str(_free_port()), "TFBATCH_API_PORT": str(_free_port())}
    os.environ.update(ports, TFBATCH_BACKLOG_THRESHOLD="20")  # small bursts already take the backlog path
    localstack.RUN_DIR = run_dir
    localstack.CREDENTIALS_FILE = run_dir / "credentials.json"
    try:
        credentials = localstack.up()
        stack_env = {**localstack.local_environment(), "TFBATCH_RUN_DIR": str(run_dir),
                     "TFBATCH_CREDENTIALS_FILE": str(localstack.CREDENTIALS_FILE)}
        os.environ.clear()
        os.environ.update(saved)
        _reset_caches()
        yield {**credentials, "env": stack_env}
    finally:
        localstack.down()
        os.environ.clear()
        os.environ.update(saved)
        _reset_caches()
