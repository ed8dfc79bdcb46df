"""The `tfbatch` command: the local stack, the worker, and admin tasks."""
from __future__ import annotations

import os

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
    from chalicelib import localstack

    credentials = localstack.up()
    console.print(f"[green]local stack up[/green]: API {localstack.api_url()}, "
                  f"moto http://{localstack.HOST}:{localstack.moto_port()}")
    console.print(f"instance {credentials['instance_id']}; credentials in {localstack.CREDENTIALS_FILE.name}")


@stack.command("down")
def stack_down() -> None:
    """Stop what `stack up` started."""
    from chalicelib import localstack

    stopped = localstack.down()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack.command("status")
def stack_status() -> None:
    from chalicelib import localstack

    for name, pid in localstack.status().items():
        console.print(f"{name:8} {'running, pid ' + str(pid) if pid else 'stopped'}")


@app.command()
def worker() -> None:
    """Run the local worker: poll the tasks queue and call the Lambda handlers."""
    from chalicelib import worker as local_worker

    local_worker.run()


@job.command("run")
def job_run(
    instance_id: str = typer.Option(..., "--instance", help="The deployment's instance id."),
    deployment_id: str = typer.Option(..., "--deployment", help="The deployment to score."),
) -> None:
    """Score every input of a deployment that has no result yet (resumable at any point)."""
    from chalicelib import runner

    summary = runner.run_deployment(instance_id, deployment_id)
    console.print(f"{summary.status}: {summary.scored} files scored ({summary.records} records), "
                  f"{summary.failed} failed")
    if summary.status == "FAILED":
        raise typer.Exit(1)


@app.command()
def score(
    model: str = typer.Option(..., help="A SavedModel directory."),
    input_: str = typer.Option(..., "--input", help="A folder, or s3://bucket/prefix."),
    output: str = typer.Option(..., help="A folder, or s3://bucket/prefix."),
    signature: str = typer.Option(None, help="The signature to serve (default: serving_default, or the only one)."),
) -> None:
    """Score every JSON file of a folder or bucket with a SavedModel, without any service."""
    import sys
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from chalicelib import localscore

    total = localscore.count_inputs(input_, output)
    if sys.stdout.isatty():
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
            print(f"{done.files}/{total} files, {done.failed} failed, {rate:.0f} records/s", flush=True)

        result = _scored(lambda: localscore.score(model, input_, output, signature_name=signature, on_progress=log))
    console.print(f"scored {result.files - result.failed} files ({result.records} records), {result.failed} failed; "
                  f"results in {output}")


def _scored(run):
    """Run a scoring call; a refusal (e.g. an ambiguous signature) is one clear line, exit 1."""
    from chalicelib.errors import ApiError

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
    from chalicelib import instances, localstack

    if os.environ.get("TFBATCH_STAGE", "local") == "local":
        os.environ.update(localstack.local_environment())
    created = instances.create(name)
    console.print_json(data={
        "instance_id": created.instance_id,
        "username": created.username,
        "password": created.password,
        "url": api_url or localstack.api_url(),
    })


def main() -> None:
    app()
