"""bench/gpu.py is ready to run as-is on a GPU machine; here it runs its CPU fallback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_benchmark_runs_on_the_cpu_when_there_is_no_gpu(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--records", "300", "--batch-sizes", "32,128",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = [json.loads(path.read_text()) for path in tmp_path.glob("gpu-*.json")]
    assert report["device"] == "CPU" and [run["records_per_call"] for run in report["runs"]] == [32, 128]
    assert all(run["records_per_s"] > 0 and run["gpu_utilisation_percent"] is None for run in report["runs"])
    assert "CPU: 128 records per call" in done.stdout
