"""Benchmark: warm online scoring on the local stack, beside what the same model costs without it.

    make up && .venv/bin/python -m bench.online [--requests 2000] [--clients 1,8]

One run measures, with the same MNIST-shaped model and the same one-image payload:
- in process: the loaded signature called directly (the floor);
- a minimal HTTP server around it (http.server, JSON in and out, no auth), the limit: the goal is
  the stack's p99 at most LIMIT_P99_RATIO times this server's, for one client and for eight;
- the stack: POST to an online deployment's scoring URL, token checked, v3 payload.
Prints p50/p99 per setup and the ratios against the limit measured in this run; writes
bench/results/online-<time>.json. Not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import requests

from bench.uploads import Stack, percentile
from chalicelib.core import archives

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
LIMIT_P99_RATIO = 2.0


def _model(directory: Path) -> Path:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(7)
    inputs = tf.keras.Input([784], name="image")
    hidden = tf.keras.layers.Dense(128, activation="relu")(inputs)
    outputs = tf.keras.layers.Dense(10, activation="softmax", name="classes")(hidden)
    tf.keras.Model(inputs, outputs).export(str(directory), verbose=False)
    return directory


def _minimal_server(function) -> tuple[ThreadingHTTPServer, str]:
    """The least an HTTP front end can do: read JSON instances, call the model, write JSON."""
    import tensorflow as tf

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            outputs = function(image=tf.constant(body["instances"], tf.float32))
            data = json.dumps({"predictions": next(iter(outputs.values())).numpy().tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def _latencies(send, requests_count: int, clients: int) -> list[float]:
    """Seconds per request, `clients` at a time, after a warm-up of one request per client."""
    def run(count: int) -> list[float]:
        session = requests.Session()
        send(session)
        took = []
        for _ in range(count):
            started = time.perf_counter()
            send(session)
            took.append(time.perf_counter() - started)
        return took

    share = max(1, requests_count // clients)
    with ThreadPoolExecutor(clients) as pool:
        return [value for part in pool.map(run, [share] * clients) for value in part]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50) * 1000, 2), "p99_ms": round(percentile(values, 99) * 1000, 2),
            "requests": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", default="1,8")
    options = parser.parse_args()
    import tempfile

    import tensorflow as tf

    stack = Stack()
    with tempfile.TemporaryDirectory() as scratch:
        directory = _model(Path(scratch) / "dense")
        loaded = tf.saved_model.load(str(directory))
        function = loaded.signatures["serving_default"]
        model_url = stack.publish(archives.pack(directory, "dense"))
    model_id = model_url.rstrip("/").rsplit("/", 1)[1]
    created = stack.http.post(f"{stack.url}/v3/wml_instances/{stack.instance_id}/deployments", timeout=60, json={
        "name": "bench-online", "type": "online", "published_model": {"guid": model_id}})
    created.raise_for_status()
    scoring_url = created.json()["entity"]["scoring_url"]
    image = np.random.default_rng(3).random((1, 784)).round(4).tolist()
    payload = json.dumps({"instances": image})
    headers = dict(stack.http.headers)

    def in_process(_session) -> None:
        function(image=tf.constant(image, tf.float32))

    server, server_url = _minimal_server(function)

    def minimal(session) -> None:
        session.post(server_url, data=payload, headers={"Content-Type": "application/json"}).raise_for_status()

    def on_stack(session) -> None:
        session.post(scoring_url, data=payload, headers=headers).raise_for_status()

    report: dict = {"requests": options.requests, "limit_p99_ratio": LIMIT_P99_RATIO, "runs": {}}
    for clients in (int(value) for value in options.clients.split(",")):
        run = {name: _summary(_latencies(send, options.requests, clients))
               for name, send in (("in_process", in_process), ("minimal_server", minimal), ("stack", on_stack))}
        run["stack_p99_over_minimal_p99"] = round(run["stack"]["p99_ms"] / run["minimal_server"]["p99_ms"], 2)
        run["within_limit"] = run["stack_p99_over_minimal_p99"] <= LIMIT_P99_RATIO
        report["runs"][f"{clients}_clients"] = run
        print(f"{clients} client(s): in process p50 {run['in_process']['p50_ms']} ms p99 {run['in_process']['p99_ms']}"
              f" | minimal server p50 {run['minimal_server']['p50_ms']} p99 {run['minimal_server']['p99_ms']}"
              f" | stack p50 {run['stack']['p50_ms']} p99 {run['stack']['p99_ms']}"
              f" | stack/minimal p99 {run['stack_p99_over_minimal_p99']} (limit {LIMIT_P99_RATIO})", flush=True)
    server.shutdown()
    stack.http.delete(f"{stack.url}/v3/wml_instances/{stack.instance_id}/deployments/{created.json()['metadata']['guid']}",
                      timeout=30)
    out = ROOT / "bench" / "results" / f"online-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
