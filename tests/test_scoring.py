"""Batch deployments scored for real: the app's routes create them, the runner (TensorFlow,
obstore) scores them against a moto server, and the output files are read back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from boto3.dynamodb.conditions import Key

from apiclient import body, error_of
from chalicelib.core import aws
from chalicelib.core.settings import get_settings
from chalicelib.scoring import runner
from chalicelib.scoring.pipeline import Input
from chalicelib.state import connections, deployments, instances
from chalicelib.state.ledger import Ledger
from flows import tenant

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def user(server_aws):
    return tenant(server_aws)


def _buckets(user, *names):
    s3 = user.s3()
    for name in names:
        s3.create_bucket(Bucket=name)
    return s3


def _records_by_file(outputs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    by_file: dict[str, list[dict]] = {}
    for items in outputs.values():
        for item in items:
            by_file.setdefault(item["filename"], []).append(item)
    return by_file


def test_seed_walkthrough_scores_num_3_in_the_seed_shape(user, model_dirs):
    s3 = _buckets(user, "batchtensorflow-in", "batch")
    s3.put_object(Bucket="batchtensorflow-in", Key="num_3.json", Body=(EXAMPLES / "num_3.json").read_bytes())
    model_id = user.publish(model_dirs["tf1_classify"])
    created = user.deploy(model_id, "batchtensorflow-in", "batch")
    assert created.status_code == 201, created.body
    entity = body(created)["entity"]
    assert entity["status"] == "INITIALIZING" and entity["type"] == "batch"
    assert entity["input"]["connection"]["secret_key"] == "********"
    assert "user-secret-key-do-not-leak" not in created.body.decode()
    deployment_id = body(created)["metadata"]["guid"]

    summary = runner.run_deployment(user.instance_id, deployment_id)
    assert (summary.status, summary.scored, summary.failed) == ("SUCCESS", 1, 0)
    outputs = user.outputs("batch")
    (items,) = outputs.values()
    assert list(items[0]) == ["filename", "classes", "proba"]
    assert items[0]["filename"] == "num_3.json"
    assert isinstance(items[0]["classes"], int) and len(items[0]["proba"]) == 10
    pixels = np.array(json.loads((EXAMPLES / "num_3.json").read_text())["inputs"], np.float32)
    weights = np.linspace(-1, 1, 7840, dtype=np.float32).reshape(784, 10)
    assert items[0]["classes"] == int(np.argmax(pixels @ weights))
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert details == {"status": "SUCCESS", "total": 1, "scored": 1, "failed": 0, "pending": 0, "progress": 1.0}
    usage = instances.get(user.instance_id)
    assert usage["prediction_count"] == 1 and usage["computation_time"] > 0


BAD_FILES = {
    "not-json.json": (b"{oops", "invalid_json", "not valid JSON"),
    "empty.json": (b"", "empty_file", "the file is empty"),
    "list.json": (b"[1, 2]", "wrong_format", "expected a JSON object"),
    "unknown.json": (b'{"a": [[1, 2, 3]], "b": [1], "c": [1]}', "unknown_tensor", "unknown tensor 'c'"),
    "dims.json": (b'{"a": [[1, 2]], "b": [1]}', "wrong_shape", "expects shape [None, 3]"),
    "dtype.json": (b'{"a": [[1, 2, 3]], "b": [0.5]}', "wrong_dtype", "whole numbers (int64); found 0.5"),
    "nan.json": (b'{"a": [[NaN, 2, 3]], "b": [1]}', "invalid_json", "NaN and Infinity are not JSON"),
    "picture.png": (b"\x89PNG\r\n\x1a\n\0\0binary", "invalid_json", "not valid JSON"),
    "huge.json": (b'{"a": [[1, 2, 3]], "b": [1]}' + b" " * 5000, "file_too_large", "the limit is 4096"),
}


def test_bad_files_get_clear_errors_and_never_stop_the_good_ones(user, model_dirs, settings_env, server_aws):
    settings_env(TFBATCH_MAX_INPUT_BYTES=4096, TFBATCH_FILES_PER_OUTPUT=7, TFBATCH_BATCH_SIZE=5,
                 TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT=server_aws)
    s3 = _buckets(user, "mixed")
    good = {}
    for number in range(30):
        key = f"in/good-{number:02d}.json"
        if number % 3 == 0:
            content = {"instances": [{"a": [number, 1, 1], "b": number}]}
        elif number % 3 == 1:
            content = {"inputs": {"a": [[number, 0, 0], [1, 1, 1]], "b": [number, 7]}}
        else:
            content = {"a": [[number, 2, 2]], "b": [number]}
        good[key[3:]] = content
        s3.put_object(Bucket="mixed", Key=key, Body=json.dumps(content).encode())
    s3.put_object(Bucket="mixed", Key="in/lines.jsonl", Body=b'{"a": [1, 1, 1], "b": 1}\n{"a": [2, 2, 2], "b": 2}\n')
    for name, (content, _, _) in BAD_FILES.items():
        s3.put_object(Bucket="mixed", Key=f"in/{name}", Body=content)
    model_id = user.publish(model_dirs["multi_io"])
    created = user.deploy(model_id, "mixed", "mixed", prefix="in/", out_prefix="out/")
    assert created.status_code == 201, created.body
    summary = runner.run_deployment(user.instance_id, body(created)["metadata"]["guid"])
    assert (summary.status, summary.scored, summary.failed) == ("SUCCESS", 31, len(BAD_FILES))

    outputs = user.outputs("mixed", "out/")
    by_file = _records_by_file(outputs)
    assert set(by_file) == set(good) | {"lines.jsonl"} | set(BAD_FILES)
    for name, (_, code, words) in BAD_FILES.items():
        (element,) = by_file[name]
        assert element["error"]["code"] == code and words in element["error"]["message"], element
    for name, content in good.items():
        records = by_file[name]
        if "instances" in content or "b" in content:
            (record,) = records
            assert "index" not in record
            number = int(name[5:7])
            assert record["shifted"] == number + 1
        else:
            assert [r["index"] for r in records] == [0, 1]
            assert records[1]["sum"] == 3.0 and records[1]["shifted"] == 8
    assert [r["sum"] for r in by_file["lines.jsonl"]] == [3.0, 6.0]
    assert all(key.startswith("out/predictions-") or key.startswith("out/errors-") for key in outputs)


def _text_deployment(user, model_dirs, files: int):
    """`files` text inputs t0.json... in bucket src, the strings model deployed from src to dst."""
    s3 = _buckets(user, "src", "dst")
    for number in range(files):
        s3.put_object(Bucket="src", Key=f"t{number}.json", Body=json.dumps({"text": [f"w{number}"]}).encode())
    model_id = user.publish(model_dirs["strings"])
    return s3, model_id, body(user.deploy(model_id, "src", "dst"))["metadata"]["guid"]


def test_rerun_writes_nothing_new_and_a_changed_file_is_scored_again(user, model_dirs):
    s3, model_id, deployment_id = _text_deployment(user, model_dirs, 5)
    assert runner.run_deployment(user.instance_id, deployment_id).scored == 5
    first = user.outputs("dst")
    assert {item["filename"]: item["upper"] for items in first.values() for item in items} == {
        f"t{n}.json": f"W{n}" for n in range(5)}
    again = runner.run_deployment(user.instance_id, deployment_id)
    assert (again.scored, again.failed, again.status) == (0, 0, "SUCCESS")
    assert user.outputs("dst") == first
    old_etag = s3.head_object(Bucket="src", Key="t0.json")["ETag"]
    s3.put_object(Bucket="src", Key="t0.json", Body=json.dumps({"text": ["changed"]}).encode())
    assert runner.run_deployment(user.instance_id, deployment_id).scored == 1
    new = {key: items for key, items in user.outputs("dst").items() if key not in first}
    (items,) = new.values()
    assert items == [{"filename": "t0.json", "length": 7, "upper": "CHANGED"}]
    # A late event for the old version reads the new one, which has its result: nothing more.
    late = runner.score_uploads(user.instance_id, deployment_id, [("t0.json", old_etag, 20)])
    assert (late.scored, late.failed) == (0, 0) and len(user.outputs("dst")) == len(first) + 1
    # The first run kept its results in one range record, the file scored again a key item that
    # answers before it; each file counts once with its latest result.
    ledger = aws.table(get_settings().ledger_table)
    ranges = ledger.query(KeyConditionExpression=Key("deployment_id").eq(f"{deployment_id}#ranges"))["Items"]
    keys = ledger.query(KeyConditionExpression=Key("deployment_id").eq(deployment_id))["Items"]
    assert ([(item["first_key"], item["input_key"]) for item in ranges], [item["input_key"] for item in keys]) == (
        [("t0.json", "t4.json")], ["t0.json"])
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert (details["scored"], details["failed"], details["pending"]) == (5, 0, 0)


def test_a_file_overwritten_during_a_fresh_runs_first_pass_counts_once(user, model_dirs, monkeypatch):
    """The next pass looks the overwritten file up (its first result is in a range record), so
    its commit takes that result's count back."""
    s3, model_id, deployment_id = _text_deployment(user, model_dirs, 5)
    original, passes = runner.DeploymentRun._pass, []

    def pass_then_upload(run):
        original(run)
        passes.append(run.fresh)
        if len(passes) == 1:
            s3.put_object(Bucket="src", Key="t0.json", Body=json.dumps({"text": ["changed"]}).encode())
            assert deployments.ask_for_pass(user.instance_id, deployment_id)

    monkeypatch.setattr(runner.DeploymentRun, "_pass", pass_then_upload)
    summary = runner.run_deployment(user.instance_id, deployment_id)
    assert summary.status == "SUCCESS" and summary.scored == 6 and len(passes) == 2
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert (details["scored"], details["failed"], details["pending"]) == (5, 0, 0)
    assert Ledger(user.instance_id, deployment_id, "").recount() == {"scored": 5}


def test_a_file_changed_since_it_was_listed_is_recorded_as_the_version_read(user):
    """An input comes back from the GET with the ETag of what was read: content written after the
    listing is recorded under its own ETag, so that version's event (or the next pass) finds it
    done instead of scoring it once more."""
    import obstore
    from obstore.store import S3Store

    from chalicelib.scoring import pipeline

    s3 = _buckets(user, "src")
    s3.put_object(Bucket="src", Key="a.json", Body=b"old")
    store = S3Store("src", endpoint=user.store_url, access_key_id="k", secret_access_key="s", region="us-east-1",
                    virtual_hosted_style_request=False, client_options={"allow_http": True})
    listed = [pipeline.Input(meta["path"], runner.normal_etag(meta["e_tag"]), meta["size"], meta["path"])
              for chunk in obstore.list(store) for meta in chunk]
    assert pipeline.fetch(store, listed, max_bytes=1000, concurrency=2) == [(listed[0], b"old")]
    new_etag = runner.normal_etag(s3.put_object(Bucket="src", Key="a.json", Body=b"new")["ETag"])
    [(read, content)] = pipeline.fetch(store, listed, max_bytes=1000, concurrency=2)
    assert (read.etag, content) == (new_etag, b"new") and new_etag != listed[0].etag


def test_a_deployment_from_before_commits_kept_the_counts_is_recounted_once(user, model_dirs):
    s3, model_id, deployment_id = _text_deployment(user, model_dirs, 3)
    assert runner.run_deployment(user.instance_id, deployment_id).scored == 3
    # As an older version left it: counts a recount would have mended at the end of its pass.
    aws.table(get_settings().deployments_table).update_item(
        Key={"instance_id": user.instance_id, "deployment_id": deployment_id},
        UpdateExpression="SET scored = :wrong REMOVE counted_by_commits", ExpressionAttributeValues={":wrong": 7})
    assert runner.run_deployment(user.instance_id, deployment_id).scored == 0
    item = deployments.load(user.instance_id, deployment_id)
    assert (int(item["scored"]), item[deployments.COUNTED_BY_COMMITS]) == (3, True)


def test_a_listing_out_of_order_ends_range_records_for_the_run():
    """Range records must never overlap: the first key listed out of order makes this and every
    later group of the run key items."""
    run = object.__new__(runner.DeploymentRun)
    run.ranges_after = ""
    assert run._in_order([Input("a", "", 1, "a"), Input("c", "", 1, "c")])
    assert run._in_order([Input("d", "", 1, "d")])
    assert not run._in_order([Input("e", "", 1, "e"), Input("b", "", 1, "b")])
    assert not run._in_order([Input("f", "", 1, "f")])  # nor any group after it
    run.ranges_after = ""
    assert not run._in_order([Input("x", "", 1, "x"), Input("x", "", 1, "x")])  # a key twice is out of order too


def test_unreachable_input_bucket_fails_with_the_reason(user, model_dirs):
    s3 = _buckets(user, "gone", "out")
    model_id = user.publish(model_dirs["multi_io"])
    deployment_id = body(user.deploy(model_id, "gone", "out"))["metadata"]["guid"]
    s3.delete_bucket(Bucket="gone")
    assert runner.run_deployment(user.instance_id, deployment_id).status == "FAILED"
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert details["status"] == "FAILED" and "The input bucket 'gone' could not be listed" in details["failures"][0]


def test_unloadable_model_fails_the_deployment(user, model_dirs):
    from chalicelib.core.settings import get_settings
    from chalicelib.scoring import engine

    _buckets(user, "in2", "out2")
    model_id = user.publish(model_dirs["multi_io"])
    created = body(user.deploy(model_id, "in2", "out2"))
    version = created["entity"]["deployed_version"]["guid"]
    archive_key = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=get_settings().models_bucket)["Contents"]
                   if version in o["Key"]][0]
    aws.client("s3").put_object(Bucket=get_settings().models_bucket, Key=archive_key, Body=b"garbage")
    engine.forget(version)
    summary = runner.run_deployment(user.instance_id, created["metadata"]["guid"])
    assert summary.status == "FAILED"
    entity = user.deployment(model_id, created["metadata"]["guid"])["entity"]
    assert entity["status_details"]["failures"][0].startswith("The model could not be loaded")


def test_signature_choice_is_never_a_guess(user, model_dirs):
    _buckets(user, "sin", "sout")
    model_id = user.publish(model_dirs["two_signatures"])
    refused = user.deploy(model_id, "sin", "sout")
    assert refused.status_code == 400
    assert error_of(refused)["target"]["name"] == "signature_name"
    assert "double, negate" in error_of(refused)["message"]
    unknown = user.deploy(model_id, "sin", "sout", signature_name="triple")
    assert unknown.status_code == 400 and "no signature 'triple'" in error_of(unknown)["message"]
    chosen = user.deploy(model_id, "sin", "sout", signature_name="negate")
    assert chosen.status_code == 201 and body(chosen)["entity"]["signature_name"] == "negate"


@pytest.mark.parametrize("source, target, options, status, side", [
    ("missing-in", "out3", {}, 400, "input"),
    ("in3", "missing-out", {}, 400, "output"),
    ("in3", "in3", {}, 400, "output.target.prefix"),
])
def test_connection_checks_name_the_side_that_failed(user, model_dirs, source, target, options, status, side):
    _buckets(user, "in3", "out3")
    model_id = user.publish(model_dirs["multi_io"])
    response = user.deploy(model_id, source, target, **options)
    assert response.status_code == status
    error = error_of(response)
    assert error["target"]["name"] == side
    assert "user-secret-key-do-not-leak" not in response.body.decode()


def test_deployment_lists_paths_and_delete(user, model_dirs):
    _buckets(user, "lin", "lout")
    model_id = user.publish(model_dirs["multi_io"])
    first = body(user.deploy(model_id, "lin", "lout"))["metadata"]["guid"]
    instance_path = f"{user.base}/deployments"
    second_body = user.deployment_body("lin", "lout", published_model={"guid": model_id})
    second = user.client.http.post(instance_path, headers=user.headers, body=json.dumps(second_body))
    assert second.status_code == 201
    listed = body(user.client.http.get(instance_path, headers=user.headers))
    assert {r["metadata"]["guid"] for r in listed["resources"]} == {first, body(second)["metadata"]["guid"]}
    by_model = body(user.client.http.get(f"{user.base}/published_models/{model_id}/deployments", headers=user.headers))
    assert len(by_model["resources"]) == 2
    assert instances.get(user.instance_id)["deployment_count"] == 2
    in_use = user.client.http.delete(f"{user.base}/published_models/{model_id}", headers=user.headers)
    assert in_use.status_code == 409
    gone = user.client.http.delete(f"{instance_path}/{first}", headers=user.headers)
    assert gone.status_code == 204
    assert user.client.http.get(f"{instance_path}/{first}", headers=user.headers).status_code == 404
    secrets = aws.client("secretsmanager")
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):  # the keys are gone from Secrets Manager
        secrets.get_secret_value(SecretId=connections.secret_id(first))
    assert runner.run_deployment(user.instance_id, first).status == "DELETED"
    assert instances.get(user.instance_id)["deployment_count"] == 1


def test_model_without_ready_content_cannot_be_deployed(user):
    created = user.client.http.post(f"{user.base}/published_models", headers=user.headers,
                                    body=json.dumps({"name": "empty", "model_type": "tensorflow"}))
    model_id = body(created)["metadata"]["guid"]
    _buckets(user, "ein", "eout")
    response = user.deploy(model_id, "ein", "eout")
    assert response.status_code == 409 and "without content" in error_of(response)["message"]


def test_events_announce_result_files_and_finished_backlogs(user, model_dirs):
    from chalicelib.core import aws

    sqs, rules = aws.client("sqs"), aws.client("events")
    queue = sqs.create_queue(QueueName="automation")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rules.put_rule(Name="tfbatch-events", EventPattern=json.dumps({"source": ["tfbatch"]}))
    rules.put_targets(Rule="tfbatch-events", Targets=[{"Id": "automation", "Arn": arn}])
    s3 = _buckets(user, "ev-in", "ev-out")
    for number in range(3):
        s3.put_object(Bucket="ev-in", Key=f"e{number}.json", Body=json.dumps({"text": ["x"]}).encode())
    model_id = user.publish(model_dirs["strings"])
    deployment_id = body(user.deploy(model_id, "ev-in", "ev-out"))["metadata"]["guid"]
    runner.run_deployment(user.instance_id, deployment_id)
    received = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                                                      WaitTimeSeconds=2).get("Messages", [])]
    kinds = {event["detail-type"]: event["detail"] for event in received}
    written = kinds["Result files written"]
    assert written["deployment_id"] == deployment_id and written["scored"] == 3
    assert written["output_keys"] == sorted(user.outputs("ev-out"))
    assert kinds["Deployment backlog done"] == {"instance_id": user.instance_id, "deployment_id": deployment_id,
                                                    "status": "SUCCESS", "scored": 3, "failed": 0, "pending": 0}


@pytest.mark.parametrize("url", ["http://169.254.169.254", "http://127.0.0.1:9000", "http://10.0.0.8"])
def test_endpoints_inside_the_service_network_are_refused(user, model_dirs, url):
    """Outside the local stack, a connection url may not point at the service's own network."""
    model_id = user.publish(model_dirs["multi_io"])
    user.store_url = url
    response = user.deploy(model_id, "any-in", "any-out")
    assert response.status_code == 400
    assert "private network" in error_of(response)["message"] and error_of(response)["target"]["name"] == "input"


def test_a_huge_result_and_a_stalled_model_call_fail_their_files_and_the_rest_is_scored(
        user, settings_env, server_aws, tmp_path):
    """Both models compute only (they pass the op check); the limits are what stops them."""
    import time

    import hostile_models
    from chalicelib.scoring import engine
    from chalicelib.state import deployments

    settings_env(TFBATCH_MAX_OUTPUT_BYTES=1024 * 1024, TFBATCH_MODEL_CALL_SECONDS=3, TFBATCH_BATCH_SIZE=1,
                 TFBATCH_STAGE="test", TFBATCH_AWS_ENDPOINT=server_aws)
    s3 = _buckets(user, "abuse")
    s3.put_object(Bucket="abuse", Key="in/small.json", Body=b'{"x": [[3]]}')
    s3.put_object(Bucket="abuse", Key="in/huge.json", Body=b'{"x": [[5e6]]}')  # 20 MB of floats from 14 bytes
    created = user.deploy(user.publish(hostile_models.huge_output(tmp_path / "huge")), "abuse", "abuse",
                          prefix="in/", out_prefix="huge-out/")
    summary = runner.run_deployment(user.instance_id, body(created)["metadata"]["guid"])
    assert (summary.scored, summary.failed) == (1, 1)
    by_file = _records_by_file(user.outputs("abuse", "huge-out/"))
    assert by_file["small.json"][0]["big"] == [0.5, 0.5, 0.5]
    error = by_file["huge.json"][0]["error"]
    assert error["code"] == "output_too_large" and "20000000 bytes, more than the 1048576" in error["message"]

    s3.put_object(Bucket="abuse", Key="calm/zero.json", Body=b'{"x": [[0]]}')
    s3.put_object(Bucket="abuse", Key="calm/spin.json", Body=b'{"x": [[1]]}')
    created = user.deploy(user.publish(hostile_models.stalls_until_released(tmp_path / "stalls")), "abuse", "abuse",
                          prefix="calm/", out_prefix="stall-out/")
    deployment_id = body(created)["metadata"]["guid"]
    item = deployments.load(user.instance_id, deployment_id)
    model = engine.model(engine.StoredArchive.of(item), "serving_default").result()
    try:
        summary = runner.run_deployment(user.instance_id, deployment_id)
        assert engine.calls_still_running() == 1  # given up, and still spinning
    finally:
        model._loaded.release.assign(1)  # the abandoned call ends now
    while engine.calls_still_running():
        time.sleep(0.01)
    assert (summary.status, summary.scored, summary.failed) == ("SUCCESS", 1, 1)
    by_file = _records_by_file(user.outputs("abuse", "stall-out/"))
    assert by_file["zero.json"][0]["y"] == [0.0]
    error = by_file["spin.json"][0]["error"]
    assert error["code"] == "model_timeout" and "longer than 3 s" in error["message"]


def test_a_store_that_now_resolves_into_a_private_network_fails_the_deployment(user, model_dirs, monkeypatch):
    """Checked at creation, an endpoint is checked again whenever a run opens its store: DNS
    that turned private fails the deployment with the reason; one that does not resolve is
    retried (the message comes back)."""
    _buckets(user, "rebind-in", "rebind-out")
    created = body(user.deploy(user.publish(model_dirs["multi_io"]), "rebind-in", "rebind-out"))
    deployment_id = created["metadata"]["guid"]
    monkeypatch.setattr(connections, "_exempt", lambda url: False)  # as if the store were a user's
    monkeypatch.setattr(connections, "_verdict", lambda host: connections._UNRESOLVED)
    with pytest.raises(connections.EndpointRefused):
        runner.run_deployment(user.instance_id, deployment_id)
    monkeypatch.setattr(connections, "_verdict", lambda host: "resolves to 10.0.0.5, which is not a public address")
    assert runner.run_deployment(user.instance_id, deployment_id).status == "FAILED"
    details = user.deployment(created["entity"]["published_model"]["guid"], deployment_id)["entity"]["status_details"]
    assert details["status"] == "FAILED" and "resolves to 10.0.0.5" in details["failures"][0]


def test_results_are_never_scored_again_however_the_locations_are_written(user, model_dirs, server_aws):
    """One bucket written another way is refused as an output over its own input; two
    deployments that feed each other do not loop: result objects carry a mark and are skipped."""
    model_id = user.publish(model_dirs["multi_io"])
    _buckets(user, "ping", "pong")
    same = user.deployment_body("ping", "ping")
    same["output"]["connection"]["url"] = server_aws + "/"  # other spellings: test_connections
    refused = user.client.http.post(f"{user.base}/published_models/{model_id}/deployments",
                                    headers=user.headers, body=json.dumps(same))
    assert refused.status_code == 400
    message = error_of(refused)["message"]
    assert f"input (bucket 'ping', prefix '' at {server_aws})" in message
    assert f"output (bucket 'ping', prefix '' at {server_aws})" in message and "are the same bucket" in message

    s3 = user.s3()
    s3.put_object(Bucket="ping", Key="first.json", Body=b'{"a": [[1, 2, 3]], "b": [4]}')
    forth = body(user.deploy(model_id, "ping", "pong"))["metadata"]["guid"]
    back = body(user.deploy(model_id, "pong", "ping"))["metadata"]["guid"]
    assert runner.run_deployment(user.instance_id, forth).scored == 1   # first.json -> pong
    assert runner.run_deployment(user.instance_id, back).scored == 0    # pong holds only a result
    assert runner.run_deployment(user.instance_id, forth).scored == 0   # nothing new in ping
    (result_key,) = [item["Key"] for item in s3.list_objects_v2(Bucket="pong")["Contents"]]
    assert s3.head_object(Bucket="pong", Key=result_key)["Metadata"] == {"tfbatch-result": "1"}


def test_a_scorer_that_died_on_the_upload_path_is_mended_by_the_next_poll(user, model_dirs):
    """No later upload, no message back yet: the poller sees the expired lease of a run in
    progress, queues a run, and that run scores what is left and the counters come out exact."""
    import time as clock
    from decimal import Decimal

    import app as service
    from chalicelib.core import tasks
    from chalicelib.core.settings import get_settings
    from chalicelib.local.worker import _lambda_context
    from chalicelib.scoring import worktasks
    from chalicelib.state import deployments

    s3 = _buckets(user, "died-in", "died-out")
    for number in range(3):
        s3.put_object(Bucket="died-in", Key=f"f{number}.json", Body=b'{"a": [[1, 2, 3]], "b": [4]}')
    model_id = user.publish(model_dirs["multi_io"])
    deployment_id = body(user.deploy(model_id, "died-in", "died-out"))["metadata"]["guid"]
    queue = aws.queue_url(get_settings().tasks_queue)
    aws.client("sqs").purge_queue(QueueUrl=queue)  # the creation's own run never happens
    # What a worker killed mid-upload leaves: a run in progress, files pending, a lease nobody renews.
    aws.table(get_settings().deployments_table).update_item(
        Key={"instance_id": user.instance_id, "deployment_id": deployment_id},
        UpdateExpression="SET #status = :progress, pending = :three, lease_all = :dead ADD lease_version :one",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":progress": deployments.IN_PROGRESS, ":three": 3, ":one": 1,
                                   ":dead": {"holder": "killed", "expires": Decimal(str(clock.time() - 1))}})
    assert worktasks.poll_stores() == 1
    messages = aws.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["task"] for m in messages] == [tasks.SCORE_DEPLOYMENT]
    event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                          "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                          "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"} for m in messages]}
    assert service.handle_tasks(event, _lambda_context()) == {"batchItemFailures": []}
    details = user.deployment(model_id, deployment_id)["entity"]["status_details"]
    assert details == {"status": "SUCCESS", "total": 3, "scored": 3, "failed": 0, "pending": 0, "progress": 1.0}
    assert worktasks.poll_stores() == 0  # settled: nothing more to mend


def test_a_lambda_environment_with_a_model_call_it_cannot_stop_ends_after_its_batch(aws_mock, monkeypatch):
    """Lambda would keep the environment, spinning thread and all, for the next invocation."""
    from chalicelib.local.worker import _lambda_context
    from chalicelib.scoring import engine, worktasks

    exits = []
    monkeypatch.setattr(worktasks.os, "_exit", exits.append)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "tfbatch-scoring")
    event = {"Records": [{"messageId": "m-1", "receiptHandle": "r", "body": json.dumps({"task": "none-such"}),
                          "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                          "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"}]}
    assert worktasks.handle_batch(event, _lambda_context()) == {"batchItemFailures": []}
    assert exits == []  # nothing stuck: the environment lives on
    monkeypatch.setattr(engine._abandoned, "count", 1)
    worktasks.handle_batch(event, _lambda_context())
    assert exits == [70]
