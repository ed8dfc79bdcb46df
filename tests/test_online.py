"""Online deployments through the app (moto in-process, a real TensorFlow model): created ready on
either path, the IBM client's way too; scored in WML's {"fields", "values"} and TF Serving's
forms with the answers the model itself gives; bad payloads refused naming the tensor."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import tensorflow as tf

import savedmodels
from apiclient import body, error_of
from flows import tenant


@pytest.fixture
def user(server_aws):
    return tenant(server_aws)


@pytest.fixture
def online(user, model_dirs):
    """An online deployment of the two-input model, created as the IBM client creates it."""
    model_id = user.publish(model_dirs["multi_io"])
    asset = f"http://localhost/v3/wml_instances/{user.instance_id}/published_models/{model_id}"
    created = user.client.http.post(f"{user.base}/deployments?sync=false", headers=user.headers, body=json.dumps(
        {"name": "online", "description": "d", "type": "online", "deployable_asset_url": asset}))
    assert created.status_code == 201, created.body
    return model_id, body(created)


def _score(user, scoring_url: str, payload) -> tuple[int, dict]:
    path = scoring_url.split("://", 1)[1].partition("/")[2]
    response = user.client.http.post(f"/{path}", headers=user.headers,
                                     body=payload if isinstance(payload, bytes) else json.dumps(payload))
    return response.status_code, json.loads(response.body)


def test_an_online_deployment_is_ready_at_once_and_lists_as_the_ibm_client_reads_it(user, online):
    model_id, details = online
    entity = details["entity"]
    assert entity["type"] == "online" and entity["status"] == "DEPLOY_SUCCESS"
    assert details["metadata"]["url"].endswith(f"/deployments/{details['metadata']['guid']}")
    assert details["metadata"]["guid"] == details["metadata"]["guid"].lower()
    assert entity["scoring_url"].endswith(f"/v3/wml_instances/{user.instance_id}/deployments/"
                                          f"{details['metadata']['guid']}/online")
    listed = body(user.client.http.get(f"{user.base}/deployments", headers=user.headers))
    (row,) = listed["resources"]
    assert "next" not in listed
    for read in (lambda r: r["metadata"]["guid"], lambda r: r["entity"]["name"], lambda r: r["entity"]["type"],
                 lambda r: r["entity"]["status"], lambda r: r["metadata"]["created_at"],
                 lambda r: r["entity"]["model_type"], lambda r: r["entity"]["deployable_asset"]["url"]):
        assert read(row) is not None
    assert "published_models" in row["entity"]["deployable_asset"]["url"]


def test_scoring_answers_in_the_payloads_own_form_with_the_models_own_values(user, online, model_dirs):
    _, details = online
    url = details["entity"]["scoring_url"]
    a = [[1.5, 2.25, -3.0], [0.1, 0.2, 0.3]]
    b = [7, -2]
    expected = tf.saved_model.load(str(model_dirs["multi_io"])).signatures["serving_default"](
        a=tf.constant(a, tf.float32), b=tf.constant(b, tf.int64))
    sums = [float(value) for value in expected["sum"].numpy().astype(np.float64)]
    shifted = [int(value) for value in expected["shifted"].numpy()]

    status, answer = _score(user, url, {"fields": ["a", "b"], "values": [[a[0], b[0]], [a[1], b[1]]]})
    assert status == 200 and answer == {"fields": ["shifted", "sum"], "values": [[shifted[0], sums[0]],
                                                                                 [shifted[1], sums[1]]]}
    status, answer = _score(user, url, {"instances": [{"a": a[0], "b": b[0]}, {"a": a[1], "b": b[1]}]})
    assert status == 200 and answer == {"predictions": [{"shifted": shifted[0], "sum": sums[0]},
                                                        {"shifted": shifted[1], "sum": sums[1]}]}
    status, answer = _score(user, url, {"inputs": {"a": a, "b": b}})
    assert status == 200 and answer == {"outputs": {"shifted": shifted, "sum": sums}}
    from chalicelib.scoring import online as scoring

    scoring.usage.flush()  # the writer thread's next write, now
    usage = body(user.client.http.get(user.base, headers=user.headers))["entity"]["usage"]
    assert usage["prediction_count"]["current"] == 6 and usage["computation_time"]["current"] > 0


def test_a_single_field_may_give_its_rows_as_values(user, model_dirs):
    model_id = user.publish(model_dirs["keras"])  # one input, "features", of shape [None, 4]
    created = user.client.http.post(f"{user.base}/deployments", headers=user.headers, body=json.dumps(
        {"name": "k", "type": "online", "published_model": {"guid": model_id}}))
    url = body(created)["entity"]["scoring_url"]
    rows = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]
    status, as_rows = _score(user, url, {"fields": ["features"], "values": rows})
    assert status == 200 and len(as_rows["values"]) == 2
    status, as_fields = _score(user, url, {"fields": ["features"], "values": [[row] for row in rows]})
    assert status == 200 and as_fields == as_rows
    assert as_rows["fields"] == ["output_0"] and abs(sum(as_rows["values"][0][0]) - 1.0) < 1e-6  # softmax


@pytest.mark.parametrize("payload, words", [
    ({"fields": ["a", "c"], "values": [[[1, 2, 3], 4]]}, "unknown tensor 'c'"),
    ({"fields": ["a"], "values": [[[1, 2, 3]]]}, "lacks input tensor 'b'"),
    ({"fields": ["a", "b"], "values": [[[1, 2], 4]]}, "'a'"),
    ({"fields": ["a", "b"], "values": [[[1, 2, 3], "x"]]}, "'b'"),
    ({"fields": ["a", "b"], "values": []}, "non-empty list of rows"),
    (b"{not json", "not valid JSON"),
])
def test_a_payload_that_cannot_be_scored_is_a_v3_400_naming_what_is_wrong(user, online, payload, words):
    _, details = online
    status, answer = _score(user, details["entity"]["scoring_url"], payload)
    assert status == 400 and set(answer) == {"trace", "errors"}
    assert words in answer["errors"][0]["message"], answer


def test_a_batch_deployment_does_not_score_requests_and_an_online_one_is_deleted_like_any(user, online):
    model_id, details = online
    guid = details["metadata"]["guid"]
    s3 = user.s3()
    s3.create_bucket(Bucket="online-in")
    s3.create_bucket(Bucket="online-out")
    batch_id = body(user.deploy(model_id, "online-in", "online-out"))["metadata"]["guid"]
    refused = user.client.http.post(f"{user.base}/deployments/{batch_id}/online", headers=user.headers, body=b"{}")
    assert refused.status_code == 409 and "batch deployment" in error_of(refused)["message"]
    user.client.http.delete(f"{user.base}/deployments/{batch_id}", headers=user.headers)
    deleted = user.client.http.delete(f"{user.base}/deployments/{guid}", headers=user.headers)
    assert deleted.status_code == 204
    gone = user.client.http.get(f"{user.base}/deployments/{guid}", headers=user.headers)
    assert gone.status_code == 404 and error_of(gone)["code"] == "not_found"
    model = body(user.client.http.get(f"{user.base}/published_models/{model_id}", headers=user.headers))
    assert model["entity"]["deployments"]["count"] == 0


def _uploaded_not_inspected(user, model_dir) -> tuple[str, str]:
    """A model created and uploaded the IBM client's way (ml_assets), its version not inspected yet."""
    created = user.client.http.post("/v3/ml_assets/models", headers=user.headers, body=json.dumps(
        {"name": model_dir.name, "framework": {"name": "tensorflow", "version": "2.21"}, "author": {}}))
    assert created.status_code == 201, created.body
    entity = body(created)["entity"]
    assert entity["model_type"] == "tensorflow-2.21"
    content_path = "/" + entity["model_version"]["content_url"].split("://", 1)[1].partition("/")[2]
    uploaded = user.client.http.put(content_path, headers={**user.headers, "Content-Type": "application/octet-stream"},
                                    body=savedmodels.tar_gz(model_dir))
    assert uploaded.status_code == 200, uploaded.body
    # A version's content is written once: other bytes are refused and leave the stored archive as it was
    # (its digest is checked before every use).
    other = io.BytesIO()
    with tarfile.open(fileobj=other, mode="w:gz") as archive:
        archive.add(model_dir, arcname=".")
        archive.addfile(tarfile.TarInfo("extra.txt"))
    again = user.client.http.put(content_path, headers={**user.headers, "Content-Type": "application/octet-stream"},
                                 body=other.getvalue())
    assert again.status_code == 409
    return body(created)["metadata"]["guid"], entity["model_version"]["guid"]


@pytest.mark.parametrize("verdict", ["ready", "invalid"])
def test_deployed_while_its_version_is_inspected_it_follows_the_inspection(user, model_dirs, verdict, tmp_path):
    import hostile_models
    from chalicelib.scoring import inspection

    model_dir = model_dirs["multi_io"] if verdict == "ready" else hostile_models.reads_environment(tmp_path / "env")
    model_id, version_id = _uploaded_not_inspected(user, model_dir)
    created = user.client.http.post(f"{user.base}/deployments", headers=user.headers, body=json.dumps(
        {"name": "early", "type": "online", "published_model": {"guid": model_id}}))
    assert created.status_code == 202 and body(created)["entity"]["status"] == "DEPLOY_IN_PROGRESS"
    guid = body(created)["metadata"]["guid"]
    url = body(created)["entity"]["scoring_url"]
    status, answer = _score(user, url, {"fields": ["a", "b"], "values": [[[1, 2, 3], 4]]})
    assert status == 409 and "not ready" in answer["errors"][0]["message"]
    assert user.deployment(model_id, guid)["entity"]["status"] == "DEPLOY_IN_PROGRESS"
    assert inspection.inspect_version(model_id, version_id) == verdict
    entity = user.deployment(model_id, guid)["entity"]
    if verdict == "ready":
        assert entity["status"] == "DEPLOY_SUCCESS" and entity["signature_name"] == "serving_default"
        assert _score(user, url, {"fields": ["a", "b"], "values": [[[1, 2, 3], 4]]}) == (
            200, {"fields": ["shifted", "sum"], "values": [[5, 6.0]]})
    else:
        assert entity["status"] == "FAILED" and "ReadFile" in entity["status_details"]["failures"][0]


def test_the_api_and_the_scoring_function_speak_one_invoke_protocol(user, online):
    """What crosses the Lambda invoke on AWS, both ways: the answer, and a refusal re-raised as
    the very v3 error the scoring function raised."""
    from chalicelib.api import online as online_requests
    from chalicelib.core.errors import ApiError
    from chalicelib.scoring import online as scoring

    guid = online[1]["metadata"]["guid"]
    payload = json.dumps({"instances": [{"a": [1, 2, 3], "b": 4}]}).encode()
    invoked = scoring.handle_invoke(json.loads(json.dumps(online_requests.request(user.instance_id, guid, payload))))
    assert online_requests.answer(json.loads(json.dumps(invoked))) == {
        "predictions": [{"shifted": 5, "sum": 6.0}]}
    refused = scoring.handle_invoke(online_requests.request(user.instance_id, guid, b'{"instances": [{"a": 1}]}'))
    with pytest.raises(ApiError) as raised:
        online_requests.answer(refused)
    assert raised.value.status == 400 and raised.value.code == "missing_tensor" and "'b'" in raised.value.message


def test_an_archive_uploaded_in_two_steps_is_served_by_a_deployment_made_while_it_was_inspected(user, model_dirs):
    """The digest the inspection records reaches the deployment, and a score settles it itself."""
    import requests

    from chalicelib.scoring import inspection

    created = user.client.http.post(f"{user.base}/published_models", headers=user.headers,
                                    body=json.dumps({"name": "two-step", "model_type": "tensorflow-2.21"}))
    model_id = body(created)["metadata"]["guid"]
    started = body(user.client.http.post(f"{user.base}/published_models/{model_id}/uploads", headers=user.headers))
    again = user.client.http.post(f"{user.base}/published_models/{model_id}/uploads", headers=user.headers)
    assert again.status_code == 409  # one upload under way per model
    form = started["upload"]
    posted = requests.post(form["url"], data=form["fields"], timeout=60,
                           files={form["file_field"]: ("m.tar.gz", savedmodels.tar_gz(model_dirs["multi_io"]))})
    assert posted.status_code in (200, 201, 204), posted.text
    model = body(user.client.http.get(f"{user.base}/published_models/{model_id}", headers=user.headers))
    assert model["entity"]["status"] == "inspecting"  # noticed: its inspection is queued
    deployed = user.client.http.post(f"{user.base}/deployments", headers=user.headers, body=json.dumps(
        {"name": "early", "type": "online", "published_model": {"guid": model_id}}))
    assert deployed.status_code == 202
    assert inspection.inspect_version(model_id, started["version"]["guid"]) == "ready"
    assert _score(user, body(deployed)["entity"]["scoring_url"], {"instances": [{"a": [1, 2, 3], "b": 4}]}) == (
        200, {"predictions": [{"shifted": 5, "sum": 6.0}]})


def test_oversized_payloads_and_other_tenants_models_are_refused(user, online, server_aws):
    _, details = online
    status, answer = _score(user, details["entity"]["scoring_url"], b'{"instances": [' + b"0," * 2_200_000 + b"0]}")
    assert status == 413 and answer["errors"][0]["code"] == "payload_too_large"
    other = tenant(server_aws)
    model_id = online[0]
    foreign = other.client.http.put(f"/v3/ml_assets/models/{model_id}/versions/{'1' * 8}-2222-4333-8444-{'5' * 12}"
                                    "/content", headers={**other.headers, "Content-Type": "application/octet-stream"},
                                    body=b"\x1f\x8b")
    assert foreign.status_code == 404  # another instance's model: as if absent, whatever its versions


def test_an_answer_without_one_row_per_instance_is_refused_not_crashed():
    from chalicelib.scoring import payloads
    from chalicelib.scoring.formats import InputError

    with pytest.raises(InputError, match="output 'y' does not hold one row per instance"):
        payloads.write({"x": np.zeros((2, 3)), "y": np.zeros(3)}, payloads.Form.WML, rows=2)
