"""Generated requests (hypothesis) against the v3 API: whatever a client sends, the answer is a
2xx or a 4xx with the error shape (a trace and a message), never a server error."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from chalice.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiclient import basic, bearer, body
from chalicelib.state import instances

# The fixtures' state (moto, one tenant) is shared by the examples on purpose: each example is
# one more request to the same service.
EXAMPLES = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                              st.text(max_size=8)),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)
FIELDS = ["name", "model_type", "description", "type", "input", "output", "connection", "source", "target",
          "bucket", "prefix", "signature_name", "url", "access_key", "secret_key"]
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
    st.fixed_dictionaries({"name": st.text(max_size=20), "type": st.just("batch"),
                           "input": st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4),
                           "output": st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4)}),
    JSON,
)


@pytest.fixture
def service(aws_mock):
    import app

    created = instances.create("fuzzed")
    with Client(app.app, stage_name="test") as client:
        token = body(client.http.get("/v3/identity/token", headers=basic(created.username, created.password)))["token"]
        base = f"/v3/wml_instances/{created.instance_id}"
        model = body(client.http.post(f"{base}/published_models", headers=bearer(token),
                                      body=json.dumps({"name": "m", "model_type": "tensorflow-2.21"})))
        yield client.http, bearer(token), base, model["metadata"]["guid"]


def _answered_well(response) -> None:
    assert response.status_code < 500, response.body[:500]
    if response.status_code >= 400:
        data = body(response)
        assert set(data) == {"trace", "errors"} and data["errors"][0]["message"], data


@EXAMPLES
@given(payload=BODIES)
def test_any_json_body_is_answered_without_a_server_error(service, payload):
    http, headers, base, model_id = service
    for path in (f"{base}/published_models", f"{base}/published_models/{model_id}/deployments",
                 f"{base}/deployments"):
        _answered_well(http.post(path, headers=headers, body=json.dumps(payload)))


@EXAMPLES
@given(raw=st.binary(max_size=64))
def test_any_bytes_as_a_body_are_answered_without_a_server_error(service, raw):
    http, headers, base, model_id = service
    _answered_well(http.post(f"{base}/published_models/{model_id}/deployments", headers=headers, body=raw))
    _answered_well(http.post(f"{base}/published_models", headers=headers, body=raw))


@EXAMPLES
@given(segment=st.text(min_size=1, max_size=40), limit=st.text(max_size=6), start=st.text(max_size=12))
def test_any_ids_and_paging_values_are_answered_without_a_server_error(service, segment, limit, start):
    http, headers, base, model_id = service
    ident = quote(segment, safe="")
    paging = f"?limit={quote(limit, safe='')}&start={quote(start, safe='')}"
    for path in (f"/v3/wml_instances/{ident}", f"{base}/published_models/{ident}",
                 f"{base}/published_models/{model_id}/deployments/{ident}", f"{base}/deployments/{ident}",
                 f"{base}/published_models{paging}", f"{base}/deployments{paging}"):
        _answered_well(http.get(path, headers=headers))
    _answered_well(http.delete(f"{base}/deployments/{ident}", headers=headers))


@EXAMPLES
@given(authorization=st.text(max_size=60))
def test_any_authorization_header_is_refused_cleanly(service, authorization):
    http, _, base, _ = service
    try:
        headers = {"Authorization": authorization.encode("latin-1").decode("latin-1")}
    except UnicodeEncodeError:
        return  # not sendable in an HTTP header
    response = http.get(f"{base}/published_models", headers=headers)
    _answered_well(response)
    assert response.status_code == 401
