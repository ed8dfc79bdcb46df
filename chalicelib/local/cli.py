"""The `tfbatch` command: the local stack, the worker, and admin tasks."""
from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="tfbatch: score the files that land in a bucket with a TensorFlow model.")
stack = typer.Typer(no_args_is_help=True, help="The local stack (moto, the API, the worker).")
admin = typer.Typer(no_args_is_help=True, help="Administration: instances and their credentials.")
app.add_typer(stack, name="stack")
job = typer.Typer(no_args_is_help=True, help="Scoring jobs.")
models_cli = typer.Typer(no_args_is_help=True, help="Published models: publish, list, show, delete.")
app.add_typer(admin, name="admin")
app.add_typer(job, name="job")
app.add_typer(models_cli, name="models")
deployments_cli = typer.Typer(no_args_is_help=True, help="Deployments: create, list, show, watch, failures, "
                                                        "results, delete.")
app.add_typer(deployments_cli, name="deployments")
console = Console()
PROFILE = typer.Option("default", "--profile", help="Which signed-in profile to use (`tfbatch login`).")
JSON = typer.Option(False, "--json", help="Print the API's JSON answer, exactly, instead of a summary.")
MODEL_PATH = typer.Argument(..., exists=True, help="A SavedModel directory, or its .tar.gz / .zip archive.")
DIRECT_UPLOAD_BYTES = 8 * 1024 * 1024  # larger archives take the two-step upload (API Gateway passes 10 MB)


def _show_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"tfbatch {version('tfbatch')}")
        raise typer.Exit()


VERSION = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit.")


@app.callback()
def options(version: bool = VERSION) -> None:
    """tfbatch: score the files that land in a bucket with a TensorFlow model."""


def _refused_in_one_line(refusal: type[Exception], run):
    """Run a call of the command; a `refusal` is its message on one line, exit 1."""
    try:
        return run()
    except refusal as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None


def _api(run):
    """Run an API call; the API's refusal (or an unreachable API) ends the command."""
    from chalicelib.local.client import ApiFailure

    return _refused_in_one_line(ApiFailure, run)


def _client(profile: str):
    """The signed-in profile's API client; no such profile is one line, exit 1."""
    from chalicelib.local.client import Client

    return _api(lambda: Client(profile))


def _print_json(value) -> None:
    import json

    typer.echo(json.dumps(value, indent=2))


@app.command()
def login(
    url: str = typer.Option(None, help="The API's URL, e.g. https://abc.execute-api.us-east-1.amazonaws.com/api"),
    instance: str = typer.Option(None, help="The instance id."),
    username: str = typer.Option(None, help="The instance's username."),
    local: bool = typer.Option(False, "--local", help="Sign in to the local stack with what `make up` wrote."),
    profile: str = PROFILE,
) -> None:
    """Sign in once: keep a token for the instance (never the password) as a profile.

    The password comes from TFBATCH_PASSWORD or a prompt, never from the command line.
    Example: tfbatch login --url http://127.0.0.1:8000 --instance 0b6e... --username 3f2a..."""
    import json

    from chalicelib.local import client

    if local:
        from chalicelib.local import localstack

        saved = json.loads(localstack.CREDENTIALS_FILE.read_text())
        url, instance, username, password = saved["url"], saved["instance_id"], saved["username"], saved["password"]
    else:
        if not (url and instance and username):
            raise typer.BadParameter("give --url, --instance and --username (or --local)")
        password = os.environ.get("TFBATCH_PASSWORD") or typer.prompt("password", hide_input=True)
    signed_in = _api(lambda: client.login(profile, url, instance, username, password))
    console.print(f"signed in to instance {signed_in.instance_id} at {signed_in.url} as profile '{profile}'")


@models_cli.command("publish")
def models_publish(
    path: Path = MODEL_PATH,
    name: str = typer.Option(..., help="The published model's name."),
    framework_version: str = typer.Option("2.21", help="The TensorFlow version it was saved with."),
    two_step: bool = typer.Option(None, "--two-step/--direct", help="Upload straight to the models bucket "
                                  "(default: past 8 MB, as API Gateway passes at most 10 MB) or through the API."),
    profile: str = PROFILE,
    as_json: bool = JSON,
) -> None:
    """Publish a model and wait for its inspection: its signatures, or why it cannot be served.

    Example: tfbatch models publish ./my_saved_model --name digits"""
    import time

    from chalicelib.core import archives

    api = _client(profile)
    data = archives.pack(path, path.name) if path.is_dir() else path.read_bytes()
    model = _api(lambda: api.call("POST", "/published_models", expect=(201,),
                                  json={"name": name, "model_type": f"tensorflow-{framework_version}"}))
    model_id = model["metadata"]["guid"]
    if not (two_step if two_step is not None else len(data) > DIRECT_UPLOAD_BYTES):
        with _upload_progress(len(data)) as advance:
            _api(lambda: api.call("PUT", f"/published_models/{model_id}/content", expect=(202,),
                                  data=_Counted(data, advance), headers={"Content-Type": "application/octet-stream"}))
    else:
        _upload_in_two_steps(api, model_id, data)
    while (model := _api(lambda: api.call("GET", f"/published_models/{model_id}")))["entity"]["status"] in (
            "inspecting", "awaiting_content"):
        time.sleep(0.5)
    if as_json:
        _print_json(model)
    else:
        _show_model(model)
    if model["entity"]["status"] != "ready":
        raise typer.Exit(1)


class _Counted:
    """Bytes sent as a request body in chunks, each one counted (a known length: no chunked encoding)."""

    def __init__(self, data: bytes, advance):
        self._data, self._at, self._advance = data, 0, advance

    def __len__(self) -> int:
        return len(self._data)

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else min(len(self._data), self._at + size)
        chunk, self._at = self._data[self._at:end], end
        self._advance(len(chunk))
        return chunk


def _upload_progress(total: int):
    """A progress bar for an upload of `total` bytes; yields the function that advances it."""
    import contextlib

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    @contextlib.contextmanager
    def shown():
        with Progress(TextColumn("uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("archive", total=total)
            yield lambda sent: bar.advance(task, sent)

    return shown()


def _upload_in_two_steps(api, model_id: str, data: bytes) -> None:
    import requests
    from urllib3 import encode_multipart_formdata

    started = _api(lambda: api.call("POST", f"/published_models/{model_id}/uploads", expect=(201,)))
    form = started["upload"]
    body, content_type = encode_multipart_formdata({**form["fields"], form["file_field"]: ("model.tar.gz", data)})
    with _upload_progress(len(body)) as advance:
        posted = requests.post(form["url"], data=_Counted(body, advance), headers={"Content-Type": content_type},
                               timeout=(5, 600))
    if posted.status_code not in (200, 201, 204):
        console.print(f"[red]the archive could not be uploaded: {posted.status_code} {posted.text[:300]}[/red]")
        raise typer.Exit(1)


def _show_model(model: dict) -> None:
    from rich.table import Table

    entity = model["entity"]
    latest = entity.get("latest_version", {})
    console.print(f"model {model['metadata']['guid']} '{entity['name']}': {entity['status']}")
    if entity["status"] == "invalid":
        console.print(f"[red]{latest.get('status_details', {}).get('message', '')}[/red]")
    table = Table("signature", "inputs", "outputs")
    for signature in latest.get("signatures", []):
        describe = lambda tensors: ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in tensors)  # noqa: E731
        table.add_row(signature["name"], describe(signature["inputs"]), describe(signature["outputs"]))
    if latest.get("signatures"):
        console.print(table)


@models_cli.command("list")
def models_list(profile: str = PROFILE, as_json: bool = JSON) -> None:
    """The instance's published models. Example: tfbatch models list --json"""
    api = _client(profile)
    page = _api(lambda: api.call("GET", "/published_models", params={"limit": 1000}))
    if as_json:
        return _print_json(page)
    for model in page["resources"]:
        entity = model["entity"]
        console.print(f"{model['metadata']['guid']}  {entity['status']:<16} {entity['name']}")


@models_cli.command("show")
def models_show(model_id: str, profile: str = PROFILE, as_json: bool = JSON) -> None:
    """One published model, with its signatures. Example: tfbatch models show 5d1c..."""
    api = _client(profile)
    model = _api(lambda: api.call("GET", f"/published_models/{model_id}"))
    _print_json(model) if as_json else _show_model(model)


@models_cli.command("delete")
def models_delete(model_id: str, profile: str = PROFILE) -> None:
    """Delete a published model no deployment uses. Example: tfbatch models delete 5d1c..."""
    api = _client(profile)
    _api(lambda: api.call("DELETE", f"/published_models/{model_id}", expect=(204,)))
    console.print(f"deleted model {model_id}")


@stack.command("up")
def stack_up() -> None:
    """Start the local stack (a second call does no harm). Example: tfbatch stack up"""
    from chalicelib.local import localstack

    credentials = localstack.up()
    console.print(f"[green]local stack up[/green]: API {localstack.api_url()}, "
                  f"moto http://{localstack.HOST}:{localstack.moto_port()}")
    console.print(f"instance {credentials['instance_id']}; credentials in {localstack.CREDENTIALS_FILE.name}")
    console.print(f"Dashboard: {localstack.api_url()}/dashboard (sign in with the username and password there)")


@stack.command("down")
def stack_down() -> None:
    """Stop what `stack up` started. Example: tfbatch stack down"""
    from chalicelib.local import localstack

    stopped = localstack.down()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack.command("status")
def stack_status() -> None:
    """Which parts of the local stack run. Example: tfbatch stack status"""
    from chalicelib.local import localstack

    for name, pid in localstack.status().items():
        console.print(f"{name:8} {'running, pid ' + str(pid) if pid else 'stopped'}")


@app.command()
def api(host: str = typer.Option("127.0.0.1", help="The address to serve on."),
        port: int = typer.Option(8000, help="The port to serve on."),
        stage: str = typer.Option("local", help="The chalice stage whose environment to use.")) -> None:
    """Serve the API locally, as `chalice local` does, with unknown routes in the v3 error shape.

    Example: tfbatch api --port 8000 (`tfbatch stack up` runs it for you)"""
    from chalicelib.local import api_server

    api_server.serve(host, port, stage)


@app.command()
def worker() -> None:
    """Run the local worker: poll the tasks queue and call the Lambda handlers.

    Example: tfbatch worker (`tfbatch stack up` runs it for you)"""
    from chalicelib.local import worker as local_worker

    local_worker.run()


def _local_stack_defaults() -> None:
    """On the local stage, talk to the local stack with its fake keys (never real ones)."""
    if os.environ.get("TFBATCH_STAGE", "local") == "local":
        from chalicelib.local import localstack

        os.environ.update(localstack.local_environment())


@job.command("run")
def job_run(
    instance_id: str = typer.Option(..., "--instance", help="The deployment's instance id."),
    deployment_id: str = typer.Option(..., "--deployment", help="The deployment to score."),
    shards: int = typer.Option(1, min=1, help="Split the keys into this many disjoint shares."),
    shard: int = typer.Option(None, min=0, help="Score only this share (default: AWS_BATCH_JOB_ARRAY_INDEX; "
                                                "without either, run every share as a local process)."),
) -> None:
    """Score every input of a deployment that has no result yet (resumable at any point).

    The backlog job's entry point: AWS Batch array children each score their shard and the last
    to finish settles the deployment; a failed shard can be rerun alone with --shard.
    Example: tfbatch job run --instance 0b6e... --deployment 8a0f... --shards 4"""
    from chalicelib.scoring import pipeline, runner

    _local_stack_defaults()
    if shard is None and shards > 1:
        index = os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX")
        if index is None:
            raise typer.Exit(_run_local_shards(instance_id, deployment_id, shards))
        shard = int(index)
    try:
        part = pipeline.Shard(shard, shards) if shard is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    summary = runner.run_deployment(instance_id, deployment_id, part, wait=True)
    where = f" (shard {shard} of {shards})" if part else ""
    console.print(f"{summary.status}{where}: {summary.scored} files scored ({summary.records} records), "
                  f"{summary.failed} failed")
    stages = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in sorted(summary.seconds.items()))
    console.print(f"seconds per stage: {stages or 'none'}")
    if summary.status == "FAILED":
        raise typer.Exit(1)


def _run_local_shards(instance_id: str, deployment_id: str, shards: int) -> int:
    """Every shard as a process of its own, the way AWS Batch runs array children; the worst exit status."""
    import subprocess
    import sys

    from chalicelib.state import deployments

    deployments.start_shards(instance_id, deployment_id, shards)
    children = [subprocess.Popen([sys.executable, "-m", "chalicelib.local.cli", "job", "run", "--instance", instance_id,
                                  "--deployment", deployment_id, "--shards", str(shards), "--shard", str(index)])
                for index in range(shards)]
    return max(child.wait() for child in children)


@app.command()
def score(
    model: str = typer.Option(..., help="A SavedModel directory, or a published model's id (its newest ready "
                                        "version, from the service's store: the local stack's by default)."),
    input_: str = typer.Option(..., "--input", help="A folder, or s3://bucket/prefix."),
    output: str = typer.Option(..., help="A folder, or s3://bucket/prefix."),
    signature: str = typer.Option(None, help="The signature to serve (default: serving_default, or the only one)."),
) -> None:
    """Score every JSON file of a folder or bucket with a SavedModel, without any service.

    Example: tfbatch score --model ./saved_model --input ./inputs --output ./results"""
    import sys
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from chalicelib.scoring import localscore

    if not Path(model).expanduser().is_dir():
        _local_stack_defaults()  # a published id: the service's model store
    if sys.stdout.isatty():
        total = localscore.count_inputs(input_, output)  # the bar's length: one more listing
        with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                      TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("files", total=total, rate="")

            def show(done):
                rate = done.records / max(time.monotonic() - done.started, 1e-9)
                bar.update(task, completed=done.files, rate=f"{rate:,.0f} records/s")

            result = _scored(lambda: localscore.score(model, input_, output, signature_name=signature,
                                                      on_progress=show))
    else:
        def log(done):
            rate = done.records / max(time.monotonic() - done.started, 1e-9)
            print(f"{done.files} files, {done.failed} failed, {rate:.0f} records/s", flush=True)

        result = _scored(lambda: localscore.score(model, input_, output, signature_name=signature, on_progress=log))
    console.print(f"scored {result.files - result.failed} files ({result.records} records), {result.failed} failed; "
                  f"results in {output}")


def _scored(run):
    """Run a scoring call; a refusal (e.g. an ambiguous signature) ends the command."""
    from chalicelib.core.errors import ApiError

    return _refused_in_one_line(ApiError, run)  # str(ApiError) is its message


@admin.command("create-instance")
def create_instance(
    name: str,
    api_url: str = typer.Option(None, help="The API's base URL to print (default: the local stack's)."),
) -> None:
    """Create an instance and print its credentials (the password is shown only now).

    Example: tfbatch admin create-instance team-a"""
    from chalicelib.local import localstack
    from chalicelib.state import instances

    _local_stack_defaults()
    created = instances.create(name)
    console.print_json(data={
        "instance_id": created.instance_id,
        "username": created.username,
        "password": created.password,
        "url": api_url or localstack.api_url(),
    })


def _location(uri: str, option: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise typer.BadParameter(f"{option} must be s3://bucket[/prefix]")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


def _store_keys(aws_profile: str | None) -> dict[str, str]:
    """The store's keys, as AWS tools find them: the standard variables, a named profile, or a
    prompt; never a command-line value, which would land in the shell's history."""
    import boto3

    found = boto3.Session(profile_name=aws_profile).get_credentials() if aws_profile else None
    if found is None and os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return {"access_key": os.environ["AWS_ACCESS_KEY_ID"], "secret_key": os.environ["AWS_SECRET_ACCESS_KEY"]}
    if found is not None:
        return {"access_key": found.access_key, "secret_key": found.secret_key}
    return {"access_key": typer.prompt("store access key"), "secret_key": typer.prompt("store secret key",
                                                                                       hide_input=True)}


@deployments_cli.command("create")
def deployments_create(
    model: str = typer.Option(..., help="The published model's id."),
    input_: str = typer.Option(None, "--input", help="s3://bucket/prefix of the files to score (batch)."),
    output: str = typer.Option(None, help="s3://bucket/prefix the results go to (batch)."),
    endpoint: str = typer.Option("", help="The store's URL, for an S3-compatible store (default: AWS S3)."),
    signature: str = typer.Option(None, help="The signature to serve (default: serving_default, or the only one)."),
    name: str = typer.Option(None, help="The deployment's name (default: the model id)."),
    online: bool = typer.Option(False, "--online", help="An online deployment: score requests, no buckets."),
    aws_profile: str = typer.Option(None, help="A named AWS profile holding the store's keys."),
    profile: str = PROFILE,
    as_json: bool = JSON,
) -> None:
    """Deploy a model: batch over a bucket (keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an AWS
    profile or a prompt), or online.

    Example: tfbatch deployments create --model 5d1c... --input s3://in/ --output s3://out/results/"""
    api = _client(profile)
    request: dict = {"name": name or model, "type": "online" if online else "batch",
                     "published_model": {"guid": model}, **({"signature_name": signature} if signature else {})}
    if not online:
        if not (input_ and output):
            raise typer.BadParameter("a batch deployment needs --input and --output (or give --online)")
        keys = {**_store_keys(aws_profile), "url": endpoint}
        (source, prefix), (target, out_prefix) = _location(input_, "--input"), _location(output, "--output")
        request["input"] = {"type": "s3", "source": {"bucket": source, "prefix": prefix}, "connection": keys}
        request["output"] = {"type": "s3", "target": {"bucket": target, "prefix": out_prefix}, "connection": keys}
    created = _api(lambda: api.call("POST", "/deployments", expect=(201, 202), json=request))
    if as_json:
        return _print_json(created)
    entity = created["entity"]
    console.print(f"deployment {created['metadata']['guid']}: {entity['status']}"
                  + (f"; scoring URL {entity['scoring_url']}" if online else ""))


@deployments_cli.command("list")
def deployments_list(profile: str = PROFILE, as_json: bool = JSON) -> None:
    """The instance's deployments. Example: tfbatch deployments list"""
    api = _client(profile)
    page = _api(lambda: api.call("GET", "/deployments", params={"limit": 1000}))
    if as_json:
        return _print_json(page)
    for item in page["resources"]:
        details = item["entity"]["status_details"]
        counts = f"scored {details['scored']} failed {details['failed']}" if "scored" in details else ""
        console.print(f"{item['metadata']['guid']}  {item['entity']['type']:<7} {item['entity']['status']:<19} "
                      f"{item['entity']['name']}  {counts}")


@deployments_cli.command("show")
def deployments_show(deployment_id: str, profile: str = PROFILE, as_json: bool = JSON) -> None:
    """One deployment with its status details. Example: tfbatch deployments show 8a0f..."""
    api = _client(profile)
    item = _api(lambda: api.call("GET", f"/deployments/{deployment_id}"))
    if as_json:
        return _print_json(item)
    console.print(f"deployment {deployment_id} '{item['entity']['name']}' ({item['entity']['type']}): "
                  f"{item['entity']['status_details']}")


@deployments_cli.command("watch")
def deployments_watch(deployment_id: str, profile: str = PROFILE, every: float = typer.Option(1.0, min=0.1)) -> None:
    """Follow a batch deployment until it settles: exit 0 on SUCCESS, 1 on FAILED.

    Example: tfbatch deployments watch 8a0f..."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    api = _client(profile)
    started, details = time.monotonic(), {}
    with Progress(TextColumn("{task.fields[status]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("files", total=None, status="", rate="")
        while True:
            details = _api(lambda: api.call("GET", f"/deployments/{deployment_id}"))["entity"]["status_details"]
            done = details.get("scored", 0) + details.get("failed", 0)
            rate = done / max(time.monotonic() - started, 1e-9)
            bar.update(task, total=details.get("total") or None, completed=done, status=details["status"],
                       rate=f"{rate:,.0f} files/s, {details.get('failed', 0)} failed")
            if details["status"] in ("SUCCESS", "FAILED", "DEPLOY_SUCCESS"):
                break
            time.sleep(every)
    console.print(f"{details['status']}: {details.get('scored', 0)} scored, {details.get('failed', 0)} failed"
                  + (f"; {details['failures'][0]}" if details.get("failures") else ""))
    if details["status"] == "FAILED":
        raise typer.Exit(1)


def _output_files(api, deployment_id: str, aws_profile: str | None, kinds: tuple[str, ...]):
    """(key, parsed JSON) of the deployment's result files of these kinds, read with the store's keys."""
    import json

    import boto3

    item = _api(lambda: api.call("GET", f"/deployments/{deployment_id}"))
    output = item["entity"].get("output")
    if output is None:
        raise typer.BadParameter("an online deployment writes no files")
    keys = _store_keys(aws_profile)
    s3 = boto3.client("s3", endpoint_url=output["connection"]["url"] or None, aws_access_key_id=keys["access_key"],
                      aws_secret_access_key=keys["secret_key"])
    bucket, prefix = output["target"]["bucket"], output["target"].get("prefix", "")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for found in page.get("Contents", []):
            name = found["Key"][len(prefix):]
            if "/" not in name and name.startswith(kinds) and name.endswith(".json"):
                yield found["Key"], json.loads(s3.get_object(Bucket=bucket, Key=found["Key"])["Body"].read())


@deployments_cli.command("failures")
def deployments_failures(deployment_id: str, profile: str = PROFILE, aws_profile: str = typer.Option(None),
                         as_json: bool = JSON) -> None:
    """The files that failed: file, code, message (read from the output bucket with the store's keys).

    Example: tfbatch deployments failures 8a0f..."""
    api = _client(profile)
    failed = [element for _, elements in _output_files(api, deployment_id, aws_profile, ("errors-",))
              for element in elements]
    if as_json:
        return _print_json(failed)
    for element in failed:
        console.print(f"{element['filename']}  {element['error']['code']}  {element['error']['message']}")


DOWNLOAD_TO = typer.Option(..., "--to", help="The folder to download to.")


@deployments_cli.command("results")
def deployments_results(deployment_id: str, to: Path = DOWNLOAD_TO,
                        profile: str = PROFILE, aws_profile: str = typer.Option(None)) -> None:
    """Download the deployment's result and error files. Example: tfbatch deployments results 8a0f... --to ./out"""
    import json

    api = _client(profile)
    to.mkdir(parents=True, exist_ok=True)
    count = 0
    for key, elements in _output_files(api, deployment_id, aws_profile, ("predictions-", "errors-")):
        (to / key.rsplit("/", 1)[-1]).write_text(json.dumps(elements))
        count += 1
    console.print(f"{count} files in {to}")


@deployments_cli.command("delete")
def deployments_delete(deployment_id: str, profile: str = PROFILE) -> None:
    """Stop a deployment and forget its keys (its results stay). Example: tfbatch deployments delete 8a0f..."""
    api = _client(profile)
    _api(lambda: api.call("DELETE", f"/deployments/{deployment_id}", expect=(204,)))
    console.print(f"deleted deployment {deployment_id}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
