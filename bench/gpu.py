"""Benchmark: records/s of the engine's joined model calls on the device this machine has, by
records per call, with the GPU's utilisation sampled while it runs (nvidia-smi), or the CPU when
there is no GPU (the fallback the tests run).

    .venv/bin/python -m bench.gpu [--records 200000] [--batch-sizes 256,1024,4096]

Uses the same dense MNIST-shaped model as bench.job, through chalicelib.scoring.engine (the
rule of records_per_call, memory growth), so its numbers are the backlog job's model stage.
Prints one line per size and writes bench/results/gpu-<time>.json. Not a test: nothing here
asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _utilisation(stop: threading.Event, samples: list[float]) -> None:
    """GPU utilisation (%) every 0.2 s while the measurement runs; nothing without nvidia-smi."""
    tool = shutil.which("nvidia-smi")
    while tool and not stop.wait(0.2):
        found = subprocess.run([tool, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            samples.append(float(found.stdout.split()[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch-sizes", default="256,1024,4096")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    options = parser.parse_args()

    from bench.job import export_model
    from chalicelib.scoring import engine, savedmodel
    from chalicelib.scoring.formats import Batch

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "dense"
        export_model("dense", directory)
        model = engine.Model(savedmodel.load(directory), "serving_default").warm_up()
    files = [Batch({"inputs": np.random.default_rng(number).random((1, 784), dtype=np.float32)}, 1)
             for number in range(min(options.records, 4096))]
    report: dict = {"device": engine.DEVICE, "records": options.records, "runs": []}
    for size in (int(value) for value in options.batch_sizes.split(",")):
        per_call = engine.records_per_call(size, files[0], explicit=True)
        stop, samples = threading.Event(), []
        sampler = threading.Thread(target=_utilisation, args=(stop, samples), daemon=True)
        sampler.start()
        started, done = time.perf_counter(), 0
        while done < options.records:
            chunk = files[:min(len(files), options.records - done)]
            model.predict_files(chunk, per_call)
            done += len(chunk)
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        run = {"records_per_call": per_call, "records_per_s": round(options.records / seconds),
               "gpu_utilisation_percent": round(sum(samples) / len(samples), 1) if samples else None}
        report["runs"].append(run)
        print(f"{engine.DEVICE}: {per_call} records per call -> {run['records_per_s']:,} records/s"
              + (f", GPU {run['gpu_utilisation_percent']}% busy" if samples else ""), flush=True)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"gpu-{time.strftime('%Y%m%dT%H%M%S')}.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {target}")


if __name__ == "__main__":
    main()
