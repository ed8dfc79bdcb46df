"""`make package`: the whole service as one CloudFormation (SAM) template in dist/.

Chalice packages the app (routes, the SQS handler, the schedule) into a zip and a SAM template;
this script then makes that template deployable on its own:

- functions that load a model (the SQS handler: scoring and model inspection; the online scoring
  function the API invokes) become image functions running the TensorFlow image, since
  TensorFlow does not fit a zip, with the ephemeral storage (/tmp) that
  settings.ephemeral_storage_mb names; the API and the poller stay small zip functions;
- the SQS event source reports partial batch failures, and points at the stack's own queue;
- every function gets the TFBATCH_* variables naming the stack's tables, bucket, queues, secret
  and event bus, and the resources themselves are added from deploy.stack.

Run: python -m deploy.package --stage prod --out dist
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy import stack

ROOT = Path(__file__).resolve().parent.parent
# TensorFlow runs here: model inspection and batch scoring, and online scoring (invoked by the API)
IMAGE_HANDLERS = {"app.handle_tasks", "app.score_online_function"}
SCORING_HANDLER = "app.handle_tasks"
ONLINE_HANDLER = "app.score_online_function"
API_HANDLER = "app.app"  # the only reader of the token signing key
REST_API = "RestAPI"  # chalice's logical id for the REST API
ONLINE_FUNCTION = "ScoreOnline"  # chalice's logical id for app.score_online_function
EPHEMERAL_STORAGE_RANGE_MB = (512, 10240)  # what Lambda accepts
FUNCTION = "AWS::Serverless::Function"


class PackagingError(Exception):
    """Chalice's output did not have the shape this script relies on."""


def chalice_package(stage: str, out: Path) -> dict:
    """Run `chalice package` for the stage; its SAM template (the zip lands next to it)."""
    env = {**os.environ, "TFBATCH_STAGE": stage}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # chalice wants one; the template uses AWS::Region
    chalice = Path(sys.executable).with_name("chalice")
    subprocess.run([str(chalice), "package", "--stage", stage, str(out)], cwd=ROOT, env=env, check=True)
    return json.loads((out / "sam.json").read_text())


def _to_image_function(properties: dict, ephemeral_storage_mb: int) -> None:
    low, high = EPHEMERAL_STORAGE_RANGE_MB
    if not low <= ephemeral_storage_mb <= high:
        raise PackagingError(f"TFBATCH_EPHEMERAL_STORAGE_MB is {ephemeral_storage_mb}; Lambda takes {low} to {high}")
    handler = properties.pop("Handler")
    for key in ("CodeUri", "Runtime", "Layers"):
        properties.pop(key, None)
    properties["PackageType"] = "Image"
    properties["ImageUri"] = {"Ref": "ImageUri"}
    # The image's ENTRYPOINT is the backlog job (`tfbatch`); Lambda runs the runtime interface client.
    properties["ImageConfig"] = {"EntryPoint": ["python", "-m", "awslambdaric"], "Command": [handler],
                                 "WorkingDirectory": "/var/task"}
    # /tmp holds the model copies; the archive and cache limits are derived from the same setting.
    properties["EphemeralStorage"] = {"Size": ephemeral_storage_mb}


def _use_stack_queue(properties: dict, queue_name: str) -> None:
    for event in properties.get("Events", {}).values():
        if event["Type"] != "SQS":
            continue
        queue = json.dumps(event["Properties"]["Queue"])
        if not queue.endswith(f':{queue_name}"}}'):
            raise PackagingError(f"the SQS event source names {queue}, expected the tasks queue {queue_name}")
        event["Properties"]["Queue"] = {"Fn::GetAtt": ["TasksQueue", "Arn"]}
        event["Properties"]["FunctionResponseTypes"] = ["ReportBatchItemFailures"]


def transform(template: dict, stage: str) -> dict:
    """The deployable template made from chalice's SAM template (which is left unchanged)."""
    from chalicelib.core.settings import get_settings

    settings = get_settings()
    out = copy.deepcopy(template)
    resources: dict[str, Any] = out["Resources"]
    functions = {name: body for name, body in resources.items() if body["Type"] == FUNCTION}
    handlers = {body["Properties"].get("Handler") for body in functions.values()}
    if not IMAGE_HANDLERS <= handlers:
        raise PackagingError(f"chalice's template has no function for {sorted(IMAGE_HANDLERS - handlers)}")
    environment = stack.environment(settings, stage)
    for body in functions.values():
        properties = body["Properties"]
        handler = properties["Handler"]
        variables = properties.setdefault("Environment", {}).setdefault("Variables", {})
        variables.update(environment)
        if handler == SCORING_HANDLER:
            variables.update(stack.scoring_environment())
        if handler == API_HANDLER:  # it checks the caller, then invokes the function that has the model
            variables["TFBATCH_ONLINE_FUNCTION"] = {"Ref": ONLINE_FUNCTION}
        _use_stack_queue(properties, settings.tasks_queue)
        if handler in IMAGE_HANDLERS:
            _to_image_function(properties, settings.ephemeral_storage_mb)
    api = next((body["Properties"] for body in functions.values()
                if body["Properties"].get("Handler") == API_HANDLER), {})
    if "Role" not in api:
        raise PackagingError(f"chalice's template has no function with its own role for {API_HANDLER}")
    if resources.get(REST_API, {}).get("Type") != "AWS::Serverless::Api":
        raise PackagingError(f"chalice's template has no {REST_API} to give v3 gateway responses")
    added = {**stack.resources_for(settings, stage), **stack.signing_key_readers(api["Role"]),
             **stack.gateway_responses(REST_API)}
    clashes = set(added) & set(resources)
    if clashes:
        raise PackagingError(f"chalice already defines {sorted(clashes)}")
    resources.update(added)
    out["Description"] = f"tfbatch ({stage}): TensorFlow batch deployments, IBM WML v3 API"
    out.setdefault("Parameters", {}).update(stack.PARAMETERS)
    out.setdefault("Outputs", {}).update(stack.outputs(settings))
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    os.environ["TFBATCH_STAGE"] = args.stage  # names derive from the stage; read before any import caches them
    if args.out.exists():
        shutil.rmtree(args.out)
    template = chalice_package(args.stage, args.out)
    (args.out / "sam.json").unlink()
    target = args.out / "template.json"
    target.write_text(json.dumps(transform(template, args.stage), indent=2) + "\n")
    print(f"wrote {target} and {args.out / 'deployment.zip'}")
    return target


if __name__ == "__main__":
    main()
