"""Benchmark: the backlog job against the limits it cannot beat, all measured in the same run.

    make venv && .venv/bin/python -m bench.job [--files 2000] [--folder-files 100000] [--rss 10000,100000]

Runs its own moto server (no worker, so nothing but the job scores; a worker only for the
counted upload path, at the end), publishes the demo digits model through the app, writes N
seed-format files, then prints ratios:
- stack: the job's files/s against a GET-only ceiling (the same obstore client settings, only
  fetching every object) measured right before it; its CPU per 1,000 files; a naive per-file
  loop (GET, json.loads, the model on one record, PUT), SageMaker's single-record pattern;
- folders: `tfbatch score`'s CPU seconds per 1,000 records against the in-memory limit (orjson
  parse + the model at the same batch size, on data already in memory), and its files/s
  against the naive loop on the same folder;
- peak RSS of `tfbatch score` at each --rss size (it must not grow with N);
- every request of one backlog job and of the upload path (the local worker scoring upload
  notifications), per 1,000 files, with DynamoDB's write and read units: what bench/costs.py
  prices.
Job figures are net of the process's start (TensorFlow import, model load), measured by running
the same command on an empty input. Writes bench/results/job-<time>.json. Not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import peak as peak_rss

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "job"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGETS = {"stack_vs_get_ceiling": 0.9, "folder_cpu_vs_in_memory": 1.3, "folder_vs_naive": 10.0,
           "stack_cpu_seconds_per_1000_files": 1.0, "peak_rss_mib_over_model_alone": 150,
           "bookkeeping_requests_per_file": 0.2}


MIN_FOLDER_FILES = 10_000  # fewer: scoring takes less time than the start's own variation


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measured(command: list[str], env: dict) -> dict:
    """Run a child to its end: wall seconds, CPU seconds (user + system) and peak RSS, its own."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{' '.join(command[:6])} failed:\n{output[-3000:]}")
    # The child's own peak, when it was run through bench.peak (wait4's counts the parent's too).
    peak = [line for line in output.splitlines() if line.startswith(peak_rss.MARK)]
    rss_mib = int(peak[-1][len(peak_rss.MARK):]) / 1024 if peak else usage.ru_maxrss / 1024
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": rss_mib, "output": output}


def net(run: dict, start: dict) -> dict:
    return {"wall": max(run["wall"] - start["wall"], 1e-9), "cpu": max(run["cpu"] - start["cpu"], 1e-9)}


def export_model(kind: str, directory: Path) -> None:
    """`dense`: an MNIST-shaped classifier (784 -> 256 -> 10, seeded weights), the seed's kind of
    model, whose cost per call outweighs its cost per record, as with most models on a GPU.
    `digits`: the demo model, which crops and resizes each image on the CPU first."""
    from examples import digits_model

    if kind == "digits":
        digits_model.export(str(directory))
        return
    import tensorflow as tf

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            tf.keras.utils.set_random_seed(0)
            self.net = tf.keras.Sequential([tf.keras.Input([784]), tf.keras.layers.Dense(256, activation="relu"),
                                            tf.keras.layers.Dense(10)])

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="inputs")])
        def serve(self, inputs):
            logits = self.net(inputs / 255.0)
            return {"proba": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}

    model = Dense()
    tf.saved_model.save(model, str(directory), signatures={"serving_default": model.serve})


def digits() -> list[bytes]:
    import orjson

    from examples import digits_model

    images, _ = digits_model.digits_as_mnist(50)
    return [orjson.dumps({"inputs": [image.astype(float).tolist()]}) for image in images]


def write_folder(folder: Path, count: int, samples: list[bytes]) -> Path:
    if folder.exists() and len(list(folder.iterdir())) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for number in range(count):
        (folder / f"digit-{number:07d}.json").write_bytes(samples[number % len(samples)])
    return folder


class Service:
    """A moto server with the service's resources, a tenant, and the digits model published."""

    def __init__(self, model_dir: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "TFBATCH_STAGE": "bench", "TFBATCH_AWS_ENDPOINT": self.url,
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
        port = self.url.rsplit(":", 1)[1]
        self.server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                        "-p", port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.environ.update(self.env)
        import requests

        for _ in range(100):
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        from chalice.test import Client

        import app as service
        from chalicelib.core import resources
        from chalicelib.scoring import inspection
        from chalicelib.state import instances

        resources.bootstrap()
        created = instances.create("bench")
        self.instance_id = created.instance_id
        self.client = Client(service.app, stage_name="bench")
        basic = requests.auth._basic_auth_str(created.username, created.password)
        token = json.loads(self.client.http.get("/v3/identity/token", headers={"Authorization": basic}).body)["token"]
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Host": "bench"}
        base = f"/v3/wml_instances/{self.instance_id}/published_models"
        model = json.loads(self.client.http.post(base, headers=self.headers, body=json.dumps(
            {"name": "digits", "model_type": "tensorflow-2.21"})).body)
        self.model_id = model["metadata"]["guid"]
        uploaded = json.loads(self.client.http.put(f"{base}/{self.model_id}/content", body=tar_gz(model_dir),
                                                   headers={**self.headers, "Content-Type": "application/gzip"}).body)
        version = uploaded["entity"]["latest_version"]["guid"]
        assert inspection.inspect_version(self.model_id, version) == "ready"

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def bucket(self, name: str, samples: list[bytes], count: int) -> None:
        from obstore.store import S3Store

        s3 = self.s3()
        s3.create_bucket(Bucket=name)
        s3.create_bucket(Bucket=f"{name}-out")
        store = S3Store(name, endpoint=self.url, region="us-east-1", access_key_id="bench",
                        secret_access_key="bench", virtual_hosted_style_request=False,
                        client_options={"allow_http": True})

        async def put_all():
            import obstore

            gate = asyncio.Semaphore(32)

            async def put(number):
                async with gate:
                    await obstore.put_async(store, f"digit-{number:07d}.json", samples[number % len(samples)])

            await asyncio.gather(*(put(number) for number in range(count)))

        asyncio.run(put_all())

    def deploy(self, bucket: str, store: str | None = None) -> str:
        keys = {"access_key": "bench", "secret_key": "bench", "url": store or self.url}
        response = self.client.http.post(
            f"/v3/wml_instances/{self.instance_id}/published_models/{self.model_id}/deployments",
            headers=self.headers, body=json.dumps({
                "name": bucket, "type": "batch",
                "input": {"type": "s3", "source": {"bucket": bucket}, "connection": keys},
                "output": {"type": "s3", "target": {"bucket": f"{bucket}-out"}, "connection": keys}}))
        assert response.status_code == 201, response.body
        return json.loads(response.body)["metadata"]["guid"]

    def job(self, deployment_id: str, endpoint: str | None = None) -> dict:
        env = {**self.env, "TFBATCH_AWS_ENDPOINT": endpoint} if endpoint else self.env
        return measured([sys.executable, "-m", "bench.peak", "chalicelib.local.cli", "job", "run", "--instance",
                         self.instance_id, "--deployment", deployment_id], env)

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait()


BOOKKEEPING = ("dynamodb", "json")  # the service's own requests: DynamoDB, SQS, Secrets Manager, EventBridge


def _deployed_through(service: Service, proxy, bucket: str) -> str:
    """A deployment of `bucket` whose store is the proxy. The proxy is the service's endpoint
    too while it is created, so a loopback store passes the endpoint check (only the service's
    own endpoint may be on loopback outside "local")."""
    from chalicelib.core import caches

    os.environ["TFBATCH_AWS_ENDPOINT"] = proxy.url
    caches.reset()
    try:
        return service.deploy(bucket, store=proxy.url)
    finally:
        os.environ["TFBATCH_AWS_ENDPOINT"] = service.url
        caches.reset()


def counted_requests(service: Service, samples: list[bytes], files: int) -> dict:
    """Every request one backlog job makes for `files` inputs, counted by a proxy in front of the
    moto server (tests/faultproxy.py with no faults): the service's endpoint and the user's store
    both go through it. Counts only: the proxy's own cost makes this run's times meaningless."""
    from tests.faultproxy import FaultProxy

    service.bucket("counted", samples, files)
    with FaultProxy(service.url, seed=0, rates={}) as proxy:
        deployment_id = _deployed_through(service, proxy, "counted")
        proxy.reset_counts()
        service.job(deployment_id, endpoint=proxy.url)
    return {"files": files, **_per_1000(proxy, files)}


def counted_uploads(service: Service, samples: list[bytes], files: int) -> dict:
    """Every request the upload path makes for `files` uploads: the local worker (what Lambda's
    SQS event source does on AWS, the same handler) scores each batch of notifications, with the
    service's endpoint and the user's store behind the counting proxy. Uploads are put straight
    into moto (they are the user's requests, not the service's) a few at a time, and the
    threshold that hands bursts to the backlog job is lifted, so every file takes the upload
    path; the store poller is off (on AWS it runs once a minute, whatever the uploads)."""
    from chalicelib.state import deployments
    from tests.faultproxy import FaultProxy

    s3 = service.s3()
    service.bucket("uploads", samples, 0)
    with FaultProxy(service.url, seed=0, rates={}) as proxy:
        deployment_id = _deployed_through(service, proxy, "uploads")
        worker = subprocess.Popen([str(Path(sys.executable).with_name("tfbatch")), "worker"], cwd=ROOT,
                                  env={**service.env, "TFBATCH_AWS_ENDPOINT": proxy.url,
                                       "TFBATCH_BACKLOG_THRESHOLD": "1000000", "TFBATCH_POLL_SECONDS": "3600"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def deployment() -> dict:
                return deployments.load(service.instance_id, deployment_id)

            if not _waited(lambda: deployment()["status"] == deployments.SUCCESS):
                return {"files": files, "error": "the deployment's first (empty) run did not end"}
            proxy.reset_counts()
            for number in range(files):
                s3.put_object(Bucket="uploads", Key=f"up-{number:06d}.json", Body=samples[number % len(samples)])
                if number % 10 == 9:
                    time.sleep(0.05)
            done = _waited(lambda: deployment()["status"] == deployments.SUCCESS
                           and int(deployment().get("scored", 0)) >= files)
            _waited(_quiet(proxy), seconds=30)  # the last batch's release, settle, event and delete
            counted = _per_1000(proxy, files)
        finally:
            worker.terminate()
            worker.wait()
    return {"files": files, **counted, **({} if done else {"error": f"not all {files} uploads were scored"})}


def _waited(condition, seconds: float = 300) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _quiet(proxy, seconds: float = 2.0):
    """A condition: no request but the worker's idle polls of the queue for `seconds`."""
    def busy() -> int:
        return sum(number for (_, operation), number in proxy.requests_so_far().items()
                   if operation != "AmazonSQS.ReceiveMessage")

    last = {"count": busy(), "since": time.monotonic()}

    def quiet() -> bool:
        if busy() != last["count"]:
            last.update(count=busy(), since=time.monotonic())
        return time.monotonic() - last["since"] >= seconds

    return quiet


def _per_1000(proxy, files: int) -> dict:
    """What the counting proxy saw, per 1,000 files: requests and their bytes by service and
    operation, DynamoDB's write and read units, and the service's own requests per file."""
    requests = dict(proxy.requests)
    bookkeeping = sum(number for (kind, _), number in requests.items() if kind in BOOKKEEPING)
    return {"requests_per_1000_files": {f"{kind} {operation}": round(number / files * 1000, 1)
                                        for (kind, operation), number in sorted(requests.items())},
            "request_bytes_per_1000_files": {f"{kind} {operation}": round(size / files * 1000)
                                             for (kind, operation), size in sorted(proxy.request_bytes.items())},
            "dynamodb_write_units_per_1000_files": round(sum(proxy.write_units.values()) / files * 1000, 1),
            "dynamodb_read_units_per_1000_files": round(sum(proxy.read_units.values()) / files * 1000, 1),
            "bookkeeping_requests_per_file": round(bookkeeping / files, 3)}


def tar_gz(directory: Path) -> bytes:
    from chalicelib.core import archives

    return archives.pack(directory, "digits")


def get_only(service: Service, bucket: str) -> tuple[float, float]:
    """Files/s fetching every object with the job's own listing, fetch and client settings, and
    the CPU seconds per 1,000 files that fetching alone costs this process."""
    from chalicelib.core.settings import get_settings
    from chalicelib.scoring import pipeline
    from chalicelib.state import connections

    get_settings.cache_clear()
    settings = get_settings()
    store = connections.object_store(connections.Location(bucket, url=service.url),
                                     {"access_key": "bench", "secret_key": "bench"})
    import obstore

    started, cpu, count = time.perf_counter(), time.process_time(), 0
    listing = (pipeline.Input(meta["path"], "", meta["size"], meta["path"])
               for chunk in obstore.list(store, chunk_size=1000) for meta in chunk)
    for group in pipeline.groups(listing, settings.files_per_output):
        count += len(pipeline.fetch(store, group, max_bytes=settings.max_input_bytes,
                                    concurrency=settings.fetch_concurrency))
    return count / (time.perf_counter() - started), (time.process_time() - cpu) / count * 1000


def naive_stack(service: Service, bucket: str, model, count: int) -> float:
    s3 = service.s3()
    keys = [f"digit-{number:07d}.json" for number in range(count)]
    started = time.perf_counter()
    for key in keys:
        record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        result = model(record["inputs"])
        s3.put_object(Bucket=f"{bucket}-out", Key=f"naive/{key}", Body=json.dumps(result).encode())
    return count / (time.perf_counter() - started)


def naive_folder(folder: Path, out: Path, model, count: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(folder.iterdir())[:count]
    started = time.perf_counter()
    for path in paths:
        record = json.loads(path.read_bytes())
        (out / path.name).write_text(json.dumps(model(record["inputs"])))
    return count / (time.perf_counter() - started)


def one_record_model(model_dir: Path):
    """The naive loop's model call: one record, outputs as lists."""
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    return lambda inputs: {name: value.numpy().tolist()
                           for name, value in serve(inputs=tf.constant(np.asarray(inputs, np.float32))).items()}


IN_MEMORY_FILES = 20_000  # enough for a steady rate, and few enough to hold in memory


TRIES = 3  # runs behind each folder figure: their median


def median_run(runs: list[dict]) -> dict:
    """The run with the median CPU seconds."""
    return sorted(runs, key=lambda run: run["cpu"])[len(runs) // 2]


def in_memory_cpu_per_1000(folder: Path, model_dir: Path, tries: int = TRIES) -> float:
    """CPU seconds per 1,000 records for orjson parse + joined model calls on bytes in memory
    (the first IN_MEMORY_FILES files): the median of `tries`, since one try varies by +-6%."""
    from chalicelib.core.settings import get_settings
    from chalicelib.scoring import engine, savedmodel
    from chalicelib.scoring.formats import TensorSpec, parse
    from chalicelib.state import deployments

    signature = deployments.choose_signature(savedmodel.read_signatures(model_dir), None)
    specs = [TensorSpec.from_signature(tensor) for tensor in signature["inputs"]]
    model = engine.Model(savedmodel.load(model_dir), signature["name"])
    contents = [path.read_bytes() for path in sorted(folder.iterdir())[:IN_MEMORY_FILES]]
    batch_size = get_settings().batch_size
    model.predict_files([parse(contents[0], specs, signature["name"])], batch_size)  # warm
    rates = []
    for _ in range(tries):
        started = time.process_time()
        batches = [parse(content, specs, signature["name"]) for content in contents]
        model.predict_files(batches, batch_size)
        rates.append((time.process_time() - started) / sum(batch.count for batch in batches) * 1000)
    return sorted(rates)[len(rates) // 2]


def score_folder(model_dir: Path, folder: Path, env: dict) -> dict:
    out = Path(tempfile.mkdtemp(prefix="tfbatch-bench-"))
    try:
        return measured([sys.executable, "-m", "bench.peak", "chalicelib.local.cli", "score", "--model", str(model_dir),
                         "--input", str(folder), "--output", str(out)], env)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def stage_seconds(output: str) -> dict:
    """The job's own account of where its time went (its "deployment run finished" log line)."""
    for line in output.splitlines():
        if line.startswith("{") and '"deployment run finished"' in line:
            return json.loads(line).get("stage_seconds", {})
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--naive", type=int, default=300, help="files for each naive loop (it is slow)")
    parser.add_argument("--folder-files", type=int, default=100_000,
                        help="files for the folder measurements (their CPU is net of a start that varies by "
                             "+-0.2 s, so more files measure it closer)")
    parser.add_argument("--rss", default="10000,100000", help="input counts at which to measure peak RSS")
    parser.add_argument("--model", choices=["dense", "digits"], default="dense")
    parser.add_argument("--count-files", type=int, default=1000,
                        help="inputs of the run whose requests are counted (0: no counted run)")
    parser.add_argument("--count-uploads", type=int, default=300,
                        help="uploads whose requests on the upload path are counted (0: none)")
    args = parser.parse_args()
    if args.folder_files < MIN_FOLDER_FILES:
        parser.error(f"--folder-files below {MIN_FOLDER_FILES:,} is lost in the process's start time (TensorFlow's "
                     "import and the model's load, subtracted from every folder figure)")

    work = Path(tempfile.mkdtemp(prefix="tfbatch-bench-model-"))
    model_dir = work / args.model
    export_model(args.model, model_dir)
    samples = digits()
    report: dict = {"files": args.files, "folder_files": args.folder_files, "model": args.model,
                    "cpu_count": os.cpu_count(), "targets": TARGETS}

    service = Service(model_dir)
    try:
        service.bucket("empty", samples, 0)
        start = service.job(service.deploy("empty"))
        service.bucket("bench", samples, args.files)
        ceiling, get_cpu = get_only(service, "bench")
        job = service.job(service.deploy("bench"))
        job_net = net(job, start)
        stack_rate = args.files / job_net["wall"]
        model = one_record_model(model_dir)
        naive = naive_stack(service, "bench", model, min(args.naive, args.files))
        report["stack"] = {
            "get_only_files_per_s": ceiling, "job_files_per_s": stack_rate, "naive_files_per_s": naive,
            "job_vs_get_ceiling": stack_rate / ceiling, "job_vs_naive": stack_rate / naive,
            "job_cpu_seconds_per_1000_files": job_net["cpu"] / args.files * 1000,
            "job_start_seconds": start["wall"], "job_peak_rss_mib": job["rss_mib"],
            "job_stage_seconds": stage_seconds(job["output"]),
            # Where the time goes: fetching alone costs this much CPU per 1,000 files (of the 1.0 s
            # budget); the stage seconds are wall time per stage, the three stages overlapping.
            "get_only_cpu_seconds_per_1000_files": get_cpu,
        }
        if args.count_files:
            report["requests"] = counted_requests(service, samples, args.count_files)
        if args.count_uploads:
            report["upload_requests"] = counted_uploads(service, samples, args.count_uploads)
    finally:
        service.stop()

    env = {**os.environ, "TFBATCH_STAGE": "bench", "TFBATCH_AWS_ENDPOINT": ""}
    count = args.folder_files
    folder = write_folder(DATA / f"in-{count}", count, samples)
    empty = write_folder(DATA / "in-0", 0, samples)
    # Each figure the median of three runs, as the in-memory limit's: one run of either varies
    # by +-6% on this machine, the start (subtracted) by +-0.2 s.
    start = median_run([score_folder(model_dir, empty, env) for _ in range(TRIES)])
    folder_run = median_run([score_folder(model_dir, folder, env) for _ in range(TRIES)])
    scored = net(folder_run, start)
    limit = in_memory_cpu_per_1000(folder, model_dir)
    naive = naive_folder(folder, work / "naive", model, min(args.naive, count))
    cpu_per_1000 = scored["cpu"] / count * 1000  # one record per file
    report["folders"] = {
        "job_cpu_seconds_per_1000_records": cpu_per_1000, "in_memory_cpu_seconds_per_1000_records": limit,
        "job_cpu_vs_in_memory": cpu_per_1000 / limit, "job_files_per_s": count / scored["wall"],
        "naive_files_per_s": naive, "job_vs_naive": count / scored["wall"] / naive,
        # The in-memory limit's own rate against the naive loop: no job can beat this ratio here.
        "in_memory_limit_vs_naive": 1000 / limit / naive,
    }
    report["peak_rss_mib"] = {}
    # The floor: a process that only imports TensorFlow and loads the model.
    report["model_alone_rss_mib"] = measured([sys.executable, "-m", "bench.peak", "-c", "import sys, tensorflow as tf; "
                                              "tf.saved_model.load(sys.argv[1])", str(model_dir)], env)["rss_mib"]
    for count in [int(value) for value in args.rss.split(",") if value]:
        run = folder_run if count == args.folder_files else score_folder(
            model_dir, write_folder(DATA / f"in-{count}", count, samples), env)
        report["peak_rss_mib"][str(count)] = run["rss_mib"]

    stack, folders = report["stack"], report["folders"]
    rss = report["peak_rss_mib"]
    report["verdict"] = {
        "stack_vs_get_ceiling": stack["job_vs_get_ceiling"] >= TARGETS["stack_vs_get_ceiling"],
        "stack_cpu_per_1000_files": stack["job_cpu_seconds_per_1000_files"] <= TARGETS[
            "stack_cpu_seconds_per_1000_files"],
        "folder_cpu_vs_in_memory": folders["job_cpu_vs_in_memory"] <= TARGETS["folder_cpu_vs_in_memory"],
        "folder_vs_naive": folders["job_vs_naive"] >= TARGETS["folder_vs_naive"],
        "peak_rss": all(value - report["model_alone_rss_mib"] <= TARGETS["peak_rss_mib_over_model_alone"]
                        for value in rss.values()),
        **({"bookkeeping": report["requests"]["bookkeeping_requests_per_file"]
            <= TARGETS["bookkeeping_requests_per_file"]} if "requests" in report else {}),
    }
    # For a missed target, where the time went: the stage that held the job longest.
    stages = stack["job_stage_seconds"]
    report["holding_stage"] = max(stages, key=stages.get) if stages else None
    print(f"stack:   job {stack['job_files_per_s']:.0f} files/s = {stack['job_vs_get_ceiling']:.2f}x the GET-only "
          f"ceiling ({stack['get_only_files_per_s']:.0f}/s; target >= {TARGETS['stack_vs_get_ceiling']}), "
          f"{stack['job_vs_naive']:.1f}x the naive "
          f"loop ({stack['naive_files_per_s']:.0f}/s); CPU {stack['job_cpu_seconds_per_1000_files']:.2f} s per "
          f"1,000 files (target <= 1.0; fetching alone {stack['get_only_cpu_seconds_per_1000_files']:.2f} s); "
          f"stages {stack['job_stage_seconds']}")
    print(f"folders: CPU {folders['job_cpu_seconds_per_1000_records']:.2f} s per 1,000 records = "
          f"{folders['job_cpu_vs_in_memory']:.2f}x the in-memory limit "
          f"({folders['in_memory_cpu_seconds_per_1000_records']:.2f} s; "
          f"target <= {TARGETS['folder_cpu_vs_in_memory']}); "
          f"{folders['job_files_per_s']:.0f} files/s = {folders['job_vs_naive']:.1f}x the naive loop "
          f"({folders['naive_files_per_s']:.0f}/s; target >= 10; the in-memory limit itself is "
          f"{folders['in_memory_limit_vs_naive']:.1f}x)")
    print(f"peak RSS (MiB) by input count: { {n: round(v) for n, v in rss.items()} }; the model alone "
          f"{report['model_alone_rss_mib']:.0f} (target: at most {TARGETS['peak_rss_mib_over_model_alone']} above it)")
    if "requests" in report:
        counted = report["requests"]
        print(f"requests per 1,000 files (backlog job, {counted['files']} files): "
              f"{counted['requests_per_1000_files']}; bookkeeping {counted['bookkeeping_requests_per_file']} "
              "per file (target <= 0.2)")
    if "upload_requests" in report:
        counted = report["upload_requests"]
        print(f"requests per 1,000 files (upload path, {counted['files']} uploads): "
              f"{counted['requests_per_1000_files']}; bookkeeping {counted['bookkeeping_requests_per_file']} per file")
    print(f"targets met: {report['verdict']}")
    if not report["verdict"]["stack_vs_get_ceiling"]:
        print(f"the job's time went mostly to its '{report['holding_stage']}' stage: {stack['job_stage_seconds']}")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    target = results / f"job-{time.strftime('%Y%m%dT%H%M%S')}.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {target}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
