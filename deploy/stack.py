"""The AWS resources around the functions, as CloudFormation, built from chalicelib.core.resources.

Tables, buckets and queues come from the same specs the local bootstrap creates, so the local
stack and AWS cannot drift apart; this module only adds what AWS needs on top (encryption,
point-in-time recovery, TLS-only access, the queue policy that lets S3 notify, the signing key,
the event bus, and AWS Batch for backlog jobs). Logical ids are the Settings field in CamelCase
(`ledger_table` -> `LedgerTable`), and each function gets the field's `TFBATCH_*` variable, so
the code finds on AWS exactly the resources the template made.

What each role can still reach (the policies are the files in .chalice/, one per function, each
naming only the actions its code calls, on the stack's own resources; `*` only where AWS has no
resource-level permission for the action), and why:
- API (ApiHandlerRole, zip, never loads a model): its tables, and a query of the ledger's groups
  (the committed groups a deployment's result_files lists; nothing of the ledger itself); model archives put, delete and
  read (it checks an archive that a two-step upload put straight into the bucket, never loads
  it); the token signing key, which it alone may read (the secret's resource
  policy denies every other principal, so a policy attached later cannot widen that by mistake);
  create, read and delete of connection keys under `<stack>/deployments/*` (it checks
  connections before storing their keys); sending tasks.
- Scoring and inspection (the image function, which runs users' graphs): model archives
  read-only; connection keys read-only and only under `<stack>/deployments/*`, never the signing
  key. Every tenant's keys are under that prefix, since one function scores all tenants and a
  Lambda role cannot be narrowed per invocation: that is why graphs are checked against the op
  allow-list before anything loads them. Tables: get, query and update on those scoring touches,
  put only on versions (inspection results), batch reads and writes only on the ledger, put,
  delete and query only on the ledger's groups (intents and committed groups), and nothing on
  credentials (password hashes) or sign-in attempts. Tasks consumed and
  sent, events put, backlog jobs submitted to this stack's queue and job definition;
  `batch:DescribeJobs` (is a deployment's job still live?) has no resource-level permission, so
  it is granted on `*`: it reads the account's Batch job descriptions, which hold no secrets.
- Poller: scans deployments and sends tasks.
- Backlog job (BacklogJobRole, the GPU containers' task role): as scoring, less the queue,
  subscriptions, inspection results and Batch.
- GPU instances (BatchInstanceRole): AWS's ECS instance policy (pull the image, join the
  cluster, write logs). The launch template requires IMDSv2 with a hop limit of 1, so a job's
  container, one network hop beyond the instance (Docker's bridge), cannot get a metadata token
  and so cannot take the instance role's credentials; it gets only the job role, from ECS.
What a graph that slipped past the allow-list could still do in the scoring function: read any
tenant's connection keys and update any scoring table's items. Closing that needs a role per
tenant (or a session policy per run), which this stack does not build.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chalicelib.core import resources
from chalicelib.core.settings import Settings

POLICIES = Path(__file__).resolve().parent.parent / ".chalice"
BACKLOG_JOB_POLICY = POLICIES / "policy-backlog-job.json"


def logical_id(setting: str) -> str:
    return "".join(part.capitalize() for part in setting.split("_"))


def env_name(setting: str) -> str:
    """The variable chalicelib.core.settings reads for a field."""
    return f"TFBATCH_{setting.upper()}"


def _get(resource: str, attribute: str) -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


def _ref(name: str) -> dict:
    return {"Ref": name}


PARAMETERS: dict[str, dict[str, Any]] = {
    "ImageUri": {"Type": "String", "Description": "ECR image built from container/ (`make image`): the scoring "
                 "function and the backlog job run it."},
    "SubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>",
                  "Description": "Subnets for the backlog job's GPU instances (with a route to S3 and DynamoDB)."},
    "SecurityGroupIds": {"Type": "List<AWS::EC2::SecurityGroup::Id>",
                         "Description": "Security groups for the backlog job's GPU instances (outbound HTTPS)."},
    "GpuInstanceTypes": {"Type": "CommaDelimitedList", "Default": "g5.xlarge,g4dn.xlarge",
                         "Description": "EC2 instance types the GPU compute environment may start."},
    "MaxGpuVcpus": {"Type": "Number", "Default": 16, "MinValue": 4,
                    "Description": "Upper bound on the compute environment's vCPUs (and so its cost)."},
    "BacklogShards": {"Type": "Number", "Default": 1, "MinValue": 1, "MaxValue": 10000,
                      "Description": "Array children per backlog job, each scoring its share of the keys."},
}


def _tables(settings: Settings) -> dict[str, dict]:
    out = {}
    for spec in resources.tables(settings):
        properties = {key: value for key, value in spec.create_args().items() if key != "TableName"}
        properties.update({
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        })
        if ttl := spec.ttl_specification():
            properties["TimeToLiveSpecification"] = ttl
        out[logical_id(spec.setting)] = {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain",
                                         "UpdateReplacePolicy": "Retain", "Properties": properties}
    return out


def _buckets() -> dict[str, dict]:
    out = {}
    for setting in resources.BUCKET_SETTINGS:
        name = logical_id(setting)
        out[name] = {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                     "Properties": {
                         "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                            "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
                         "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                             {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                         "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                         "VersioningConfiguration": {"Status": "Enabled"}}}
        out[f"{name}Policy"] = {"Type": "AWS::S3::BucketPolicy", "Properties": {
            "Bucket": _ref(name),
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [_get(name, "Arn"), {"Fn::Sub": f"${{{name}.Arn}}/*"}],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}}}
    return out


def _queues(settings: Settings) -> dict[str, dict]:
    out = {}
    for spec in resources.queues(settings):
        properties: dict[str, Any] = {key: int(value) for key, value in spec.attributes.items()}
        properties["SqsManagedSseEnabled"] = True
        if spec.dead_letters:
            properties["RedrivePolicy"] = {"deadLetterTargetArn": _get(logical_id(spec.dead_letters), "Arn"),
                                           "maxReceiveCount": resources.MAX_RECEIVES}
        out[logical_id(spec.setting)] = {"Type": "AWS::SQS::Queue", "Properties": properties}
    # Input buckets in this account notify the tasks queue about uploads (chalicelib.state.subscriptions).
    out["TasksQueuePolicy"] = {"Type": "AWS::SQS::QueuePolicy", "Properties": {
        "Queues": [_ref("TasksQueue")],
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Sid": "UploadNotifications", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": _get("TasksQueue", "Arn"),
            "Condition": {"StringEquals": {"aws:SourceAccount": _ref("AWS::AccountId")}}}]}}}
    return out


def _secrets_and_events() -> dict[str, dict]:
    return {
        "SigningKeySecret": {"Type": "AWS::SecretsManager::Secret", "Properties": {
            "Name": {"Fn::Sub": "${AWS::StackName}/token-signing-key"},
            "Description": "HS256 key that signs tfbatch's bearer tokens",
            "GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True}}},
        "EventBus": {"Type": "AWS::Events::EventBus", "Properties": {"Name": {"Fn::Sub": "${AWS::StackName}"}}},
    }


# What API Gateway answers by itself, in the v3 error shape. The messages are fixed: API
# Gateway's own (`$context.error.message`) may repeat a hash of the caller's Authorization header
# for a route it does not have. A method a path lacks never gets here (app.py answers it: 405).
GATEWAY_ERRORS = {
    "MISSING_AUTHENTICATION_TOKEN": ("404", "unknown_route", "There is no such route in this API; see the v3 API "
                                     "reference for its routes."),
    "INCOMPLETE_SIGNATURE": ("404", "unknown_route", "There is no such route in this API; see the v3 API "
                             "reference for its routes."),
    "REQUEST_TOO_LARGE": ("413", "payload_too_large", "The request is larger than API Gateway passes (10 MB); "
                          "upload large model archives with the two-step upload."),
    "THROTTLED": ("429", "too_many_requests", "Too many requests; try again shortly."),
    "DEFAULT_4XX": (None, "bad_request", "The gateway refused the request."),
    "DEFAULT_5XX": (None, "internal_error", "The gateway could not reach the service; try again shortly."),
}


def gateway_responses(api: str) -> dict[str, dict]:
    """API Gateway's own answers (GATEWAY_ERRORS) on the REST API `api`, as v3 errors."""
    out = {}
    for kind, (status, code, message) in GATEWAY_ERRORS.items():
        body = json.dumps({"trace": "$context.requestId", "errors": [{"code": code, "message": message}]})
        out[f"GatewayResponse{kind.title().replace('_', '')}"] = {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {"RestApiId": _ref(api), "ResponseType": kind,
                           "ResponseTemplates": {"application/json": body},
                           **({"StatusCode": status} if status else {})}}
    return out


def _batch(environment: dict[str, Any]) -> dict[str, dict]:
    """A GPU compute environment that scales to zero, its queue, and the job definition that runs
    `tfbatch job run` from the image. AWS Batch's service-linked role manages the instances."""
    policy = json.loads(BACKLOG_JOB_POLICY.read_text())
    return {
        "BatchInstanceRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": _assume("ec2.amazonaws.com"),
            "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                                              "AmazonEC2ContainerServiceforEC2Role"}]}},
        "BatchInstanceProfile": {"Type": "AWS::IAM::InstanceProfile",
                                 "Properties": {"Roles": [_ref("BatchInstanceRole")]}},
        # IMDSv2 only, one hop: the instance's own agents reach the metadata service, containers do not.
        "GpuLaunchTemplate": {"Type": "AWS::EC2::LaunchTemplate", "Properties": {"LaunchTemplateData": {
            "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 1}}}},
        "GpuComputeEnvironment": {"Type": "AWS::Batch::ComputeEnvironment", "Properties": {
            "Type": "MANAGED", "State": "ENABLED",
            "ComputeResources": {
                "Type": "EC2", "AllocationStrategy": "BEST_FIT_PROGRESSIVE",
                "MinvCpus": 0, "DesiredvCpus": 0, "MaxvCpus": _ref("MaxGpuVcpus"),
                "InstanceTypes": _ref("GpuInstanceTypes"), "Subnets": _ref("SubnetIds"),
                "SecurityGroupIds": _ref("SecurityGroupIds"),
                "InstanceRole": _get("BatchInstanceProfile", "Arn"),
                "LaunchTemplate": {"LaunchTemplateId": _ref("GpuLaunchTemplate"),
                                   "Version": _get("GpuLaunchTemplate", "LatestVersionNumber")},
                "Ec2Configuration": [{"ImageType": "ECS_AL2_NVIDIA"}]}}},
        "BacklogJobQueue": {"Type": "AWS::Batch::JobQueue", "Properties": {
            "Priority": 1, "State": "ENABLED",
            "ComputeEnvironmentOrder": [{"Order": 1, "ComputeEnvironment": _ref("GpuComputeEnvironment")}]}},
        "BacklogJobRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": _assume("ecs-tasks.amazonaws.com"),
            "Policies": [{"PolicyName": "BacklogJob", "PolicyDocument": policy}]}},
        "BacklogJobDefinition": {"Type": "AWS::Batch::JobDefinition", "Properties": {
            "Type": "container",
            "JobDefinitionName": {"Fn::Sub": "${AWS::StackName}-backlog"},
            "PlatformCapabilities": ["EC2"],
            # The image's ENTRYPOINT is `tfbatch`; the scoring function overrides it for Lambda.
            "Parameters": {"instance_id": "-", "deployment_id": "-", "shards": "1"},
            "ContainerProperties": {
                "Image": _ref("ImageUri"),
                "Command": ["job", "run", "--instance", "Ref::instance_id", "--deployment", "Ref::deployment_id",
                            "--shards", "Ref::shards"],
                "JobRoleArn": _get("BacklogJobRole", "Arn"),
                "ResourceRequirements": [{"Type": "GPU", "Value": "1"}, {"Type": "VCPU", "Value": "4"},
                                         {"Type": "MEMORY", "Value": "15000"}],
                "Environment": [{"Name": name, "Value": value} for name, value in
                                {**environment, "AWS_DEFAULT_REGION": _ref("AWS::Region")}.items()]},
            "RetryStrategy": {"Attempts": 3},  # the ledger makes a retried shard resume, not redo
            "Timeout": {"AttemptDurationSeconds": 24 * 3600}}},
    }


def _assume(service: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def environment(settings: Settings, stage: str) -> dict[str, Any]:
    """What every function and the backlog job read to find the stack's resources."""
    env: dict[str, Any] = {"TFBATCH_STAGE": stage, "POWERTOOLS_SERVICE_NAME": "tfbatch"}
    for spec in resources.tables(settings):
        env[env_name(spec.setting)] = _ref(logical_id(spec.setting))
    for setting in resources.BUCKET_SETTINGS:
        env[env_name(setting)] = _ref(logical_id(setting))
    for spec in resources.queues(settings):
        env[env_name(spec.setting)] = _get(logical_id(spec.setting), "QueueName")
    env[env_name("signing_key_secret")] = _ref("SigningKeySecret")
    env[env_name("secret_prefix")] = _ref("AWS::StackName")
    env[env_name("event_bus")] = _ref("EventBus")
    # The image functions' /tmp; the API reads it too, to refuse at upload what they could not hold.
    env[env_name("ephemeral_storage_mb")] = str(settings.ephemeral_storage_mb)
    return env


def scoring_environment() -> dict[str, Any]:
    """The scoring function also hands large backlogs to AWS Batch."""
    return {env_name("batch_job_queue"): _ref("BacklogJobQueue"),
            env_name("batch_job_definition"): _ref("BacklogJobDefinition"),
            env_name("backlog_shards"): _ref("BacklogShards")}


def signing_key_readers(api_role_arn: dict) -> dict[str, dict]:
    """The signing key's resource policy: only the API's role may read it. Anyone holding the key
    can mint a token for any instance, so no other role, even one given a broader policy later,
    may read it."""
    return {"SigningKeySecretPolicy": {"Type": "AWS::SecretsManager::ResourcePolicy", "Properties": {
        "SecretId": _ref("SigningKeySecret"), "BlockPublicPolicy": True,
        "ResourcePolicy": {"Version": "2012-10-17", "Statement": [{
            "Sid": "OnlyTheApiReadsTheSigningKey", "Effect": "Deny", "Principal": "*",
            "Action": "secretsmanager:GetSecretValue", "Resource": "*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": api_role_arn}}}]}}}}


def resources_for(settings: Settings, stage: str) -> dict[str, dict]:
    return {**_tables(settings), **_buckets(), **_queues(settings), **_secrets_and_events(),
            **_batch(environment(settings, stage))}


def outputs(settings: Settings) -> dict[str, dict]:
    """The names an operator needs (`tfbatch admin create-instance` reads them as TFBATCH_* variables)."""
    named = [spec.setting for spec in resources.tables(settings)] + list(resources.BUCKET_SETTINGS)
    out = {logical_id(setting): {"Description": env_name(setting), "Value": _ref(logical_id(setting))}
           for setting in named}
    out["SigningKeySecret"] = {"Description": env_name("signing_key_secret"), "Value": _ref("SigningKeySecret")}
    out["TasksQueue"] = {"Description": env_name("tasks_queue"), "Value": _get("TasksQueue", "QueueName")}
    out["SecretPrefix"] = {"Description": env_name("secret_prefix"), "Value": _ref("AWS::StackName")}
    return out
