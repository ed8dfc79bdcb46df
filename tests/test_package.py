"""The AWS stack that `make package` builds: cfn-lint on the real output, and the facts the
service relies on (image functions, failure reporting, dead letters, least privilege)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chalicelib.core import resources
from chalicelib.core.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
# Actions AWS authorizes on "*" only (no resource-level permissions); each is in deploy/stack.py's docstring.
NO_RESOURCE_LEVEL = {"batch:DescribeJobs"}


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "dist"
    subprocess.run([sys.executable, "-m", "deploy.package", "--stage", "prod", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def template(package) -> dict:
    return json.loads((package / "template.json").read_text())


def _functions(template: dict) -> dict[str, dict]:
    return {body["Properties"].get("ImageConfig", {}).get("Command", [None])[0]
            or body["Properties"]["Handler"]: body["Properties"]
            for body in template["Resources"].values() if body["Type"] == "AWS::Serverless::Function"}


def _role_statements(template: dict, function: dict) -> list[dict]:
    role = template["Resources"][function["Role"]["Fn::GetAtt"][0]]
    return [statement for policy in role["Properties"]["Policies"]
            for statement in policy["PolicyDocument"]["Statement"]]


def _actions(statements: list[dict]) -> set[str]:
    found = set()
    for statement in statements:
        action = statement["Action"]
        found |= {action} if isinstance(action, str) else set(action)
    return found


def test_cfn_lint_passes_on_the_generated_template(package):
    result = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(package / "template.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_loading_functions_run_the_image_and_the_api_stays_a_small_zip(package, template):
    functions = _functions(template)
    assert set(functions) == {"app.app", "app.handle_tasks", "app.poll_stores", "app.score_online_function"}
    for handler in ("app.handle_tasks", "app.score_online_function"):
        scoring = functions[handler]
        assert scoring["PackageType"] == "Image"
        assert scoring["ImageUri"] == {"Ref": "ImageUri"}
        assert not {"CodeUri", "Handler", "Runtime"} & set(scoring)
        assert scoring["ImageConfig"]["EntryPoint"] == ["python", "-m", "awslambdaric"]
    for handler in ("app.app", "app.poll_stores"):
        assert functions[handler]["CodeUri"] == "./deployment.zip"
        assert "PackageType" not in functions[handler]
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
    assert "chalicelib" in top_level and "app.py" in top_level
    assert not {name for name in top_level if name.startswith(("tensorflow", "keras", "numpy"))}


def test_queue_reports_partial_failures_and_dead_letters_outlast_the_function(template):
    scoring = _functions(template)["app.handle_tasks"]
    (event,) = scoring["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["TasksQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = template["Resources"]["TasksQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] == resources.MAX_RECEIVES
    assert queue["VisibilityTimeout"] > scoring["Timeout"]
    statement = template["Resources"]["TasksQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert "aws:SourceAccount" in statement["Condition"]["StringEquals"]


def test_tables_are_the_local_bootstraps_tables_with_recovery_and_encryption(template):
    from deploy.stack import logical_id

    for spec in resources.tables(get_settings()):
        table = template["Resources"][logical_id(spec.setting)]
        assert table["Type"] == "AWS::DynamoDB::Table"
        local = spec.create_args()
        properties = table["Properties"]
        for key in ("KeySchema", "AttributeDefinitions", "BillingMode"):
            assert properties[key] == local[key], (spec.setting, key)
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert properties["SSESpecification"] == {"SSEEnabled": True}


def test_the_models_bucket_is_private_encrypted_and_tls_only(template):
    bucket = template["Resources"]["ModelsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (deny,) = template["Resources"]["ModelsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_iam_is_least_privilege(template):
    roles = {name: body for name, body in template["Resources"].items() if body["Type"] == "AWS::IAM::Role"}
    for name, role in roles.items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow"
                assert not any(action == "*" or action.endswith(":*") for action in _actions([statement])), name
                targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                assert "*" not in targets or _actions([statement]) <= NO_RESOURCE_LEVEL, (name, statement)
    functions = _functions(template)
    api = _actions(_role_statements(template, functions["app.app"]))
    scoring = _actions(_role_statements(template, functions["app.handle_tasks"]))
    poller = _actions(_role_statements(template, functions["app.poll_stores"]))
    assert "batch:SubmitJob" in scoring and "batch:SubmitJob" not in api | poller
    assert "sqs:ReceiveMessage" in scoring and "sqs:ReceiveMessage" not in api | poller
    assert "secretsmanager:CreateSecret" in api and "secretsmanager:CreateSecret" not in scoring | poller
    assert "s3:PutObject" in api and not {a for a in scoring | poller if a.startswith("s3:Put")}
    assert poller == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                      "dynamodb:Scan", "sqs:SendMessage", "sqs:GetQueueUrl"}
    job = [statement for policy in roles["BacklogJobRole"]["Properties"]["Policies"]
           for statement in policy["PolicyDocument"]["Statement"]]
    for statements in (_role_statements(template, functions["app.handle_tasks"]), job):
        for statement in statements:  # the ledger's transactions put and delete intents, nothing else is deleted
            if {"dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem"} & _actions([statement]):
                assert statement["Resource"] in ({"Fn::GetAtt": ["VersionsTable", "Arn"]},
                                                 {"Fn::GetAtt": ["LedgerTable", "Arn"]},
                                                 {"Fn::GetAtt": ["GroupsTable", "Arn"]}), statement
                assert "dynamodb:DeleteItem" not in _actions([statement]) or \
                    statement["Resource"] == {"Fn::GetAtt": ["GroupsTable", "Arn"]}
            assert "CredentialsTable" not in json.dumps(statement)
    # The API lists committed groups (result_files) and may do nothing else with the ledger.
    api_statements = _role_statements(template, functions["app.app"])
    assert "LedgerTable" not in json.dumps(api_statements)
    assert [_actions([s]) for s in api_statements if "GroupsTable" in json.dumps(s)] == [{"dynamodb:Query"}]


def _secret_targets(statements: list[dict]) -> list:
    return [statement["Resource"] for statement in statements
            if any(action.startswith("secretsmanager:") for action in _actions([statement]))]


def test_only_the_api_reads_the_signing_key_and_scoring_reads_only_deployments_keys(template):
    functions = _functions(template)
    deployments_keys = {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:"
                                   "secret:${AWS::StackName}/deployments/*"}
    job = [statement for policy in template["Resources"]["BacklogJobRole"]["Properties"]["Policies"]
           for statement in policy["PolicyDocument"]["Statement"]]
    for statements in (_role_statements(template, functions["app.handle_tasks"]), job):
        assert _secret_targets(statements) == [deployments_keys]
        assert {action for action in _actions(statements) if action.startswith("secretsmanager:")} == {
            "secretsmanager:GetSecretValue"}
        assert "SigningKeySecret" not in json.dumps(statements)
    assert {"Ref": "SigningKeySecret"} in _secret_targets(_role_statements(template, functions["app.app"]))
    # The deployments' prefix is the one the code uses, and the signing key is not under it.
    scoring_env = functions["app.handle_tasks"]["Environment"]["Variables"]
    assert scoring_env["TFBATCH_SECRET_PREFIX"] == {"Ref": "AWS::StackName"}
    assert template["Resources"]["SigningKeySecret"]["Properties"]["Name"] == {
        "Fn::Sub": "${AWS::StackName}/token-signing-key"}
    policy = template["Resources"]["SigningKeySecretPolicy"]["Properties"]
    assert policy["SecretId"] == {"Ref": "SigningKeySecret"}
    (deny,) = policy["ResourcePolicy"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "secretsmanager:GetSecretValue")
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": functions["app.app"]["Role"]}}


def test_image_functions_get_the_ephemeral_storage_the_archive_limits_assume(template):
    settings = get_settings()
    scoring = _functions(template)["app.handle_tasks"]
    assert scoring["EphemeralStorage"] == {"Size": settings.ephemeral_storage_mb}
    assert scoring["EphemeralStorage"]["Size"] > 512  # Lambda's default cannot hold the largest accepted model
    # A version of the largest accepted size, its archive and the cached copies fit in it together.
    room = settings.max_archive_bytes + settings.max_inflated_bytes + settings.model_cache_bytes
    assert 0 < settings.model_cache_bytes and room < settings.ephemeral_storage_mb * 1024 * 1024
    for function in _functions(template).values():  # the API refuses at upload what scoring cannot hold
        variables = function["Environment"]["Variables"]
        assert variables["TFBATCH_EPHEMERAL_STORAGE_MB"] == str(settings.ephemeral_storage_mb)


def test_gpu_instances_require_imdsv2_with_one_hop(template):
    launch = template["Resources"]["GpuLaunchTemplate"]
    assert launch["Type"] == "AWS::EC2::LaunchTemplate"
    assert launch["Properties"]["LaunchTemplateData"]["MetadataOptions"] == {
        "HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    resources = template["Resources"]["GpuComputeEnvironment"]["Properties"]["ComputeResources"]
    assert resources["LaunchTemplate"] == {"LaunchTemplateId": {"Ref": "GpuLaunchTemplate"},
                                           "Version": {"Fn::GetAtt": ["GpuLaunchTemplate", "LatestVersionNumber"]}}


def test_every_variable_the_stack_sets_is_one_the_code_reads(template, monkeypatch):
    variables = {}
    for function in _functions(template).values():
        variables.update(function["Environment"]["Variables"])
    job = template["Resources"]["BacklogJobDefinition"]["Properties"]["ContainerProperties"]
    variables.update({item["Name"]: item["Value"] for item in job["Environment"]})
    names = {name for name in variables if name.startswith("TFBATCH_") and name != "TFBATCH_STAGE"}
    assert {"TFBATCH_LEDGER_TABLE", "TFBATCH_BATCH_JOB_QUEUE", "TFBATCH_SECRET_PREFIX"} <= names
    get_settings.cache_clear()
    before = get_settings()
    for name in names:
        monkeypatch.setenv(name, "17")  # a number, so that numeric settings parse too
    get_settings.cache_clear()
    after = get_settings()
    changed = {field for field in before.__dataclass_fields__ if getattr(before, field) != getattr(after, field)}
    monkeypatch.undo()
    get_settings.cache_clear()
    derived = {"TFBATCH_MAX_INFLATED_BYTES"}  # its default follows TFBATCH_EPHEMERAL_STORAGE_MB
    assert {f"TFBATCH_{field.upper()}" for field in changed} == names | derived


def test_backlog_jobs_run_the_image_on_gpus_that_scale_to_zero(template):
    environment = template["Resources"]["GpuComputeEnvironment"]["Properties"]["ComputeResources"]
    assert environment["MinvCpus"] == 0
    assert environment["Ec2Configuration"] == [{"ImageType": "ECS_AL2_NVIDIA"}]
    job = template["Resources"]["BacklogJobDefinition"]["Properties"]
    container = job["ContainerProperties"]
    assert container["Image"] == {"Ref": "ImageUri"}
    assert container["Command"][:2] == ["job", "run"]
    assert {"Type": "GPU", "Value": "1"} in container["ResourceRequirements"]
    scoring = _functions(template)["app.handle_tasks"]["Environment"]["Variables"]
    assert scoring["TFBATCH_BATCH_JOB_QUEUE"] == {"Ref": "BacklogJobQueue"}
    assert template["Resources"]["BacklogJobQueue"]["Properties"]["ComputeEnvironmentOrder"][0][
        "ComputeEnvironment"] == {"Ref": "GpuComputeEnvironment"}


def test_packaging_refuses_a_template_whose_queue_it_does_not_know():
    from deploy.package import FUNCTION, PackagingError, transform

    sqs = {"Type": "SQS", "Properties": {"Queue": {"Fn::Sub": "arn:aws:sqs:us-east-1:1:someone-elses-queue"}}}
    chalice_output = {"Resources": {"HandleTasks": {"Type": FUNCTION, "Properties": {
        "Handler": "app.handle_tasks", "CodeUri": "./deployment.zip", "Events": {"Queue": sqs}}},
        "ScoreOnline": {"Type": FUNCTION, "Properties": {"Handler": "app.score_online_function",
                                                         "CodeUri": "./deployment.zip"}}}}
    with pytest.raises(PackagingError, match="someone-elses-queue"):
        transform(chalice_output, "prod")


def test_api_gateway_answers_in_the_v3_shape_and_passes_archives_as_bytes(template):
    responses = {body["Properties"]["ResponseType"]: body["Properties"] for body in template["Resources"].values()
                 if body["Type"] == "AWS::ApiGateway::GatewayResponse"}
    assert {"MISSING_AUTHENTICATION_TOKEN", "INCOMPLETE_SIGNATURE", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "404"
    for properties in responses.values():
        assert properties["RestApiId"] == {"Ref": "RestAPI"}
        body = json.loads(properties["ResponseTemplates"]["application/json"])
        assert set(body) == {"trace", "errors"} and body["trace"] == "$context.requestId"
        assert "$context.error" not in properties["ResponseTemplates"]["application/json"]  # may repeat a header
    swagger = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    assert {"application/gzip", "application/x-gzip", "application/x-tar", "application/zip"} <= \
        set(swagger["x-amazon-apigateway-binary-media-types"])


def test_online_scoring_runs_in_the_image_invoked_by_the_api_and_holds_no_key(template):
    """The API function checks the caller and invokes the online scoring function, which has the
    model but neither the signing key nor any user's connection keys."""
    functions = _functions(template)
    online = functions["app.score_online_function"]
    assert functions["app.app"]["Environment"]["Variables"]["TFBATCH_ONLINE_FUNCTION"] == {"Ref": "ScoreOnline"}
    api = _role_statements(template, functions["app.app"])
    assert any(_actions([statement]) == {"lambda:InvokeFunction"}
               and statement["Resource"] == {"Fn::GetAtt": ["ScoreOnline", "Arn"]} for statement in api)
    statements = _role_statements(template, online)
    assert _actions(statements) == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                    "dynamodb:GetItem", "dynamodb:UpdateItem", "s3:GetObject"}
    assert "secretsmanager" not in json.dumps(statements) and "SigningKeySecret" not in json.dumps(statements)
    assert online["Timeout"] <= 29  # API Gateway's own limit: an answer after it would reach nobody


def test_the_dashboard_is_served_as_text_under_the_stage_and_ships_in_the_zip(package, template):
    """API Gateway routes the page and its files to the API function and passes them as text
    (only archives are binary), at /<stage>/dashboard, where its relative links resolve under
    the stage."""
    import zipfile
    from urllib.parse import urljoin

    swagger = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    binary = set(swagger["x-amazon-apigateway-binary-media-types"])
    assert not binary & {"text/html", "text/css", "text/javascript", "image/svg+xml", "*/*"}
    for path in ("/dashboard", "/dashboard/{name}"):
        assert "x-amazon-apigateway-integration" in swagger["paths"][path]["get"], path
    stage = template["Resources"]["RestAPI"]["Properties"]["StageName"]
    page = f"https://example.execute-api.us-east-1.amazonaws.com/{stage}/dashboard"
    assert urljoin(page, "dashboard/app.js").endswith(f"/{stage}/dashboard/app.js")
    with zipfile.ZipFile(package / "deployment.zip") as bundle:
        names = set(bundle.namelist())
    assert {f"chalicelib/api/static/dashboard/{name}" for name in ("index.html", "app.js", "style.css")} <= names
