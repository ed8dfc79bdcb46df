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
app.add_typer(admin, name="admin")
app.add_typer(job, name="job")
console = Console()


@stack.command("up")
def stack_up() -> None:
    """Start the local stack (a second call does no harm)."""
    from chalicelib.local import localstack

    credentials = localstack.up()
    console.print(f"[green]local stack up[/green]: API {localstack.api_url()}, "
                  f"moto http://{localstack.HOST}:{localstack.moto_port()}")
    console.print(f"instance {credentials['instance_id']}; credentials in {localstack.CREDENTIALS_FILE.name}")


@stack.command("down")
def stack_down() -> None:
    """Stop what `stack up` started."""
    from chalicelib.local import localstack

    stopped = localstack.down()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack.command("status")
def stack_status() -> None:
    from chalicelib.local import localstack

    for name, pid in localstack.status().items():
        console.print(f"{name:8} {'running, pid ' + str(pid) if pid else 'stopped'}")


@app.command()
def api(host: str = typer.Option("127.0.0.1", help="The address to serve on."),
        port: int = typer.Option(8000, help="The port to serve on."),
        stage: str = typer.Option("local", help="The chalice stage whose environment to use.")) -> None:
    """Serve the API locally, as `chalice local` does, with unknown routes in the v3 error shape."""
    from chalicelib.local import api_server

    api_server.serve(host, port, stage)


@app.command()
def worker() -> None:
    """Run the local worker: poll the tasks queue and call the Lambda handlers."""
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
    to finish settles the deployment; a failed shard can be rerun alone with --shard."""
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
    """Score every JSON file of a folder or bucket with a SavedModel, without any service."""
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
    """Run a scoring call; a refusal (e.g. an ambiguous signature) is one clear line, exit 1."""
    from chalicelib.core.errors import ApiError

    try:
        return run()
    except ApiError as error:
        console.print(f"[red]{error.message}[/red]")
        raise typer.Exit(1) from None


@admin.command("create-instance")
def create_instance(
    name: str,
    api_url: str = typer.Option(None, help="The API's base URL to print (default: the local stack's)."),
) -> None:
    """Create an instance and print its credentials (the password is shown only now)."""
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
