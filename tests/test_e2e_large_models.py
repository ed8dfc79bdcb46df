"""Large models on the local stack: the two-step upload sends an archive over 50 MB straight to
the models bucket (API Gateway passes at most 10 MB), and the model is inspected and served
like any other; the form is refused for more than TFBATCH_MAX_ARCHIVE_BYTES."""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tensorflow as tf

import stackclient
from chalicelib.core import archives

pytestmark = pytest.mark.e2e
WEIGHTS = 15_000_000  # float32s: 60 MB, random: gzip takes them to about 56 MB


class _Wide(tf.Module):
    def __init__(self):
        super().__init__()
        self.weights = tf.Variable(np.random.default_rng(5).standard_normal(WEIGHTS).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.reduce_sum(x, axis=1) + self.weights[0]}


@pytest.fixture(scope="module")
def large_archive(tmp_path_factory) -> tuple[bytes, float]:
    directory = tmp_path_factory.mktemp("large") / "wide"
    module = _Wide()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    data = archives.pack(directory, "wide")
    assert len(data) > 50 * 1024 * 1024
    return data, float(module.weights[0].numpy())


def test_an_archive_over_50_mb_goes_straight_to_the_bucket_and_is_served(local_stack, large_archive):
    data, first_weight = large_archive
    http = stackclient.session(local_stack)
    base = f"{local_stack['url']}/v3/wml_instances/{local_stack['instance_id']}"
    model_url = http.post(f"{base}/published_models", json={"name": "wide", "model_type": "tensorflow-2.21"},
                          timeout=10).json()["metadata"]["url"]
    started = http.post(f"{model_url}/uploads", timeout=10)
    assert started.status_code == 201, started.text
    upload, version = started.json()["upload"], started.json()["version"]
    assert version["status"] == "awaiting_upload" and upload["max_bytes"] >= len(data)
    posted = requests.post(upload["url"], data=upload["fields"], files={upload["file_field"]: ("model.tar.gz", data)},
                           timeout=120)
    assert posted.status_code in (200, 201, 204), posted.text
    entity = stackclient.wait(http, model_url, lambda e: e["status"] not in ("awaiting_content", "inspecting"))
    assert entity["status"] == "ready", entity
    assert entity["latest_version"]["guid"] == version["guid"]

    deployed = http.post(f"{base}/deployments", timeout=30, json={
        "name": "wide", "type": "online", "published_model": {"guid": model_url.rsplit("/", 1)[1]}})
    assert deployed.status_code == 201, deployed.text
    scored = http.post(deployed.json()["entity"]["scoring_url"], data=json.dumps({"instances": [[1.0, 2.0]]}),
                       timeout=60)
    assert scored.status_code == 200, scored.text
    assert scored.json()["predictions"] == [pytest.approx(3.0 + first_weight, rel=1e-6)]


def test_the_upload_form_admits_one_key_and_at_most_the_archive_limit(local_stack):
    """What S3 enforces on the form (moto does not check POST policies): its policy names this
    version's key alone and a size range up to TFBATCH_MAX_ARCHIVE_BYTES, and it expires."""
    import base64

    http = stackclient.session(local_stack)
    base = f"{local_stack['url']}/v3/wml_instances/{local_stack['instance_id']}"
    model_url = http.post(f"{base}/published_models", json={"name": "limited", "model_type": "tensorflow-2.21"},
                          timeout=10).json()["metadata"]["url"]
    started = http.post(f"{model_url}/uploads", timeout=10).json()
    upload = started["upload"]
    policy = json.loads(base64.b64decode(upload["fields"]["policy"]))
    assert ["content-length-range", 1, upload["max_bytes"]] in policy["conditions"]
    assert {"key": upload["fields"]["key"]} in policy["conditions"]
    assert started["version"]["guid"] in upload["fields"]["key"] and "expiration" in policy
    assert http.get(model_url, timeout=10).json()["entity"]["status"] == "awaiting_content"  # nothing landed yet
