"""The v3 API through Chalice's own request handling, with AWS played by moto in-process."""
from __future__ import annotations

import json
import time

import pytest
from chalice.test import Client

import savedmodels
from apiclient import basic, bearer, body, error_of
from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from chalicelib.state import instances


@pytest.fixture
def api(aws_mock):
    import app as service

    with Client(service.app, stage_name="test") as client:
        yield client.http


@pytest.fixture
def tenant(api):
    created = instances.create("tenant-a")
    token = body(api.get("/v3/identity/token", headers=basic(created.username, created.password)))["token"]
    return created, bearer(token)


def _create_model(api, tenant, **fields):
    created, headers = tenant
    payload = {"name": "mnist", "model_type": "tensorflow-2.21", **fields}
    return api.post(f"/v3/wml_instances/{created.instance_id}/published_models", headers=headers,
                    body=json.dumps(payload))


def test_token_with_good_and_bad_credentials(api):
    created = instances.create("a")
    for method in (api.get, api.post):
        assert "token" in body(method("/v3/identity/token", headers=basic(created.username, created.password)))
    wrong = api.get("/v3/identity/token", headers=basic(created.username, "wrong"))
    unknown = api.get("/v3/identity/token", headers=basic("nobody", created.password))
    assert wrong.status_code == unknown.status_code == 401
    assert error_of(wrong) == error_of(unknown) == {"code": "invalid_credentials",
                                                    "message": "The username or password is wrong."}
    assert api.get("/v3/identity/token").status_code == 401


def test_token_refresh_needs_a_valid_token(api, tenant):
    _, headers = tenant
    refreshed = api.put("/v3/identity/token", headers=headers)
    assert refreshed.status_code == 200 and body(refreshed)["token"]
    assert api.put("/v3/identity/token", headers=bearer("forged")).status_code == 401


def test_instance_details_have_the_seed_shape_and_absolute_urls(api, tenant):
    created, headers = tenant
    response = api.get(f"/v3/wml_instances/{created.instance_id}", headers=headers)
    data = body(response)
    assert response.status_code == 200
    assert data["metadata"]["url"] == f"http://api.example.test/v3/wml_instances/{created.instance_id}"
    entity = data["entity"]
    assert entity["published_models"]["url"].endswith(f"/v3/wml_instances/{created.instance_id}/published_models")
    assert entity["usage"]["model_count"] == {"limit": 1000, "current": 0}
    assert entity["usage"]["prediction_count"] == {"current": 0}
    assert created.password not in response.body.decode()


def test_every_route_needs_a_bearer_token(api, tenant):
    created, _ = tenant
    response = api.get(f"/v3/wml_instances/{created.instance_id}/published_models")
    assert response.status_code == 401 and error_of(response)["target"] == {"type": "header", "name": "Authorization"}


def test_a_token_never_reaches_another_instance(api, tenant):
    created, headers = tenant
    other = instances.create("tenant-b")
    other_token = body(api.get("/v3/identity/token", headers=basic(other.username, other.password)))["token"]
    model_id = body(_create_model(api, tenant))["metadata"]["guid"]
    for path in (f"/v3/wml_instances/{other.instance_id}", f"/v3/wml_instances/{other.instance_id}/published_models"):
        response = api.get(path, headers=headers)
        assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    # The other tenant, with its own token, cannot see or delete tenant A's model through its own path.
    theirs = api.get(f"/v3/wml_instances/{other.instance_id}/published_models/{model_id}",
                     headers=bearer(other_token))
    assert theirs.status_code == 404
    deleted = api.delete(f"/v3/wml_instances/{other.instance_id}/published_models/{model_id}",
                         headers=bearer(other_token))
    assert deleted.status_code == 404
    assert api.get(f"/v3/wml_instances/{created.instance_id}/published_models/{model_id}",
                   headers=headers).status_code == 200


def test_model_create_get_list_delete_and_counters(api, tenant):
    created, headers = tenant
    response = _create_model(api, tenant, description="digits", author={"name": "Ada"})
    assert response.status_code == 201
    model = body(response)
    model_id = model["metadata"]["guid"]
    assert model["entity"]["status"] == "awaiting_content"
    assert model["entity"]["author"]["name"] == "Ada"
    assert body(api.get(f"/v3/wml_instances/{created.instance_id}/published_models/{model_id}",
                        headers=headers))["entity"]["name"] == "mnist"
    assert instances.get(created.instance_id)["model_count"] == 1
    listed = body(api.get(f"/v3/wml_instances/{created.instance_id}/published_models", headers=headers))
    assert [r["metadata"]["guid"] for r in listed["resources"]] == [model_id]
    gone = api.delete(f"/v3/wml_instances/{created.instance_id}/published_models/{model_id}", headers=headers)
    assert gone.status_code == 204 and gone.body in (b"", "")
    assert instances.get(created.instance_id)["model_count"] == 0
    missing = api.get(f"/v3/wml_instances/{created.instance_id}/published_models/{model_id}", headers=headers)
    assert missing.status_code == 404 and model_id in error_of(missing)["message"]


def test_listing_pages_with_limit_and_next(api, tenant):
    created, headers = tenant
    made = {body(_create_model(api, tenant, name=f"m{i}"))["metadata"]["guid"] for i in range(5)}
    seen, url = [], f"/v3/wml_instances/{created.instance_id}/published_models?limit=2"
    while url:
        page = body(api.get(url, headers=headers))
        assert page["limit"] == 2 and len(page["resources"]) <= 2
        seen += [r["metadata"]["guid"] for r in page["resources"]]
        url = page.get("next", {}).get("url", "").replace("http://api.example.test", "") or None
    assert sorted(seen) == sorted(made)
    bad = api.get(f"/v3/wml_instances/{created.instance_id}/published_models?limit=0", headers=headers)
    assert bad.status_code == 400 and error_of(bad)["target"] == {"type": "field", "name": "limit"}
    bad = api.get(f"/v3/wml_instances/{created.instance_id}/published_models?start=zzz", headers=headers)
    assert bad.status_code == 400 and error_of(bad)["target"]["name"] == "start"


@pytest.mark.parametrize("payload, field, words", [
    ("{not json", "body", "not valid JSON"),
    ("[1, 2]", "body", "must be a JSON object"),
    ('{"model_type": "tensorflow-2.21"}', "name", "is required"),
    ('{"name": "m", "model_type": "pytorch-2"}', "model_type", "tensorflow-<version>"),
    ('{"name": "", "model_type": "tensorflow"}', "name", "is invalid"),
])
def test_bad_model_bodies_say_which_field(api, tenant, payload, field, words):
    created, headers = tenant
    response = api.post(f"/v3/wml_instances/{created.instance_id}/published_models", headers=headers, body=payload)
    assert response.status_code == 400
    error = error_of(response)
    assert words in error["message"]
    assert error.get("target", {}).get("name", error.get("target", {}).get("type")) == field


def test_model_in_use_cannot_be_deleted(api, tenant):
    created, headers = tenant
    model_id = body(_create_model(api, tenant))["metadata"]["guid"]
    aws.table(get_settings().models_table).update_item(
        Key={"instance_id": created.instance_id, "model_id": model_id},
        UpdateExpression="SET deployment_count = :one", ExpressionAttributeValues={":one": 1})
    response = api.delete(f"/v3/wml_instances/{created.instance_id}/published_models/{model_id}", headers=headers)
    assert response.status_code == 409 and "delete them first" in error_of(response)["message"]


def test_model_limit_is_enforced_atomically(api, tenant, settings_env):
    settings_env(TFBATCH_MODEL_LIMIT=2, TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT="")
    assert _create_model(api, tenant).status_code == 201
    assert _create_model(api, tenant).status_code == 201
    third = _create_model(api, tenant)
    assert third.status_code == 429 and "limit of 2" in error_of(third)["message"]


def _upload(api, tenant, model_id, data, content_type="application/gzip"):
    created, headers = tenant
    return api.put(f"/v3/wml_instances/{created.instance_id}/published_models/{model_id}/content",
                   headers={**headers, "Content-Type": content_type}, body=data)


def test_upload_stores_a_version_and_queues_its_inspection(api, tenant, model_dirs):
    created, headers = tenant
    model_id = body(_create_model(api, tenant))["metadata"]["guid"]
    response = _upload(api, tenant, model_id, savedmodels.tar_gz(model_dirs["keras"]))
    assert response.status_code == 202
    latest = body(response)["entity"]["latest_version"]
    assert latest["status"] == "inspecting" and latest["url"].endswith(f"/versions/{latest['guid']}")
    version = body(api.get(f"/v3/ml_assets/models/{model_id}/versions/{latest['guid']}", headers=headers))
    assert version["guid"] == latest["guid"]
    queue = aws.queue_url(get_settings().tasks_queue)
    message = aws.client("sqs").receive_message(QueueUrl=queue)["Messages"][0]
    assert json.loads(message["Body"]) == {"task": "inspect_model", "instance_id": created.instance_id,
                                           "model_id": model_id, "version_id": latest["guid"]}


@pytest.mark.parametrize("data, words", [
    (b"not an archive at all", "not a tar, tar.gz or zip"),
    (savedmodels.tar_gz.__doc__.encode(), "not a tar, tar.gz or zip"),
])
def test_upload_refuses_what_is_not_an_archive(api, tenant, data, words):
    model_id = body(_create_model(api, tenant))["metadata"]["guid"]
    response = _upload(api, tenant, model_id, data, "application/octet-stream")
    assert response.status_code == 400 and words in error_of(response)["message"]
    assert error_of(response)["code"] == "invalid_archive"


def test_upload_refuses_unsafe_and_oversized_archives(api, tenant, settings_env, tmp_path):
    import io
    import tarfile

    model_id = body(_create_model(api, tenant))["metadata"]["guid"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("../../saved_model.pb")
        archive.addfile(info, io.BytesIO(b""))
    response = _upload(api, tenant, model_id, buffer.getvalue())
    assert response.status_code == 400 and "contains '..'" in error_of(response)["message"]

    settings_env(TFBATCH_MAX_ARCHIVE_BYTES=100, TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT="")
    response = _upload(api, tenant, model_id, b"\x1f\x8b" + b"\0" * 200)
    assert response.status_code == 413 and "limit is 100" in error_of(response)["message"]
    assert not aws.client("s3").list_objects_v2(Bucket=get_settings().models_bucket).get("Contents")


def test_upload_refuses_a_decompression_bomb_quickly(api, tenant):
    from test_archives import gzip_bomb

    model_id = body(_create_model(api, tenant))["metadata"]["guid"]
    started = time.monotonic()
    response = _upload(api, tenant, model_id, gzip_bomb(600))  # 600 KB that inflates to 600 MiB
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_archive"
    assert "ratio of 100" in error_of(response)["message"]
    assert time.monotonic() - started < 5  # it was accepted after 24 s
    assert not aws.client("s3").list_objects_v2(Bucket=get_settings().models_bucket).get("Contents")


def test_unknown_model_and_version_are_404(api, tenant):
    created, headers = tenant
    response = _upload(api, tenant, "00000000-0000-0000-0000-000000000000", b"x")
    assert response.status_code == 404
    missing = "11111111-2222-4333-8444-555555555555"
    response = api.get(f"/v3/ml_assets/models/{missing}/versions/{missing}", headers=headers)
    assert response.status_code == 404 and error_of(response)["target"]["type"] == "model_version"
    response = api.get("/v3/ml_assets/models/nope/versions/" + "x" * 2000, headers=headers)  # not ids at all
    assert response.status_code == 404 and error_of(response)["target"] == {"type": "model", "id": "nope"}


def test_malformed_host_header_is_refused(api, tenant):
    created, headers = tenant
    response = api.get(f"/v3/wml_instances/{created.instance_id}", headers={**headers, "Host": "evil/<x>"})
    assert response.status_code == 400 and error_of(response)["target"] == {"type": "header", "name": "Host"}


def test_a_method_a_path_lacks_is_a_v3_405_that_names_the_allowed_ones(api, tenant):
    created, headers = tenant
    response = api.delete("/v3/identity/token", headers=headers)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, POST, PUT"
    error = error_of(response)
    assert error["code"] == "method_not_allowed" and "GET, POST, PUT" in error["message"]
    response = api.patch(f"/v3/wml_instances/{created.instance_id}/published_models", headers=headers)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, POST"


def test_a_content_type_a_route_does_not_take_is_a_v3_415(api, tenant):
    created, headers = tenant
    response = api.post(f"/v3/wml_instances/{created.instance_id}/published_models",
                        headers={**headers, "Content-Type": "application/xml"}, body=b"<model/>")
    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_media_type" and error["target"] == {"type": "header", "name": "Content-Type"}
    assert "application/json" in error["message"]
    assert headers["Authorization"] not in response.body.decode()


def test_model_archives_are_binary_to_api_gateway():
    import app as service

    assert {"application/gzip", "application/x-gzip", "application/x-tar", "application/zip",
            "application/octet-stream"} <= set(service.app.api.binary_types)
