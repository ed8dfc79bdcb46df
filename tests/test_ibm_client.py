"""The IBM Watson Machine Learning Python client (1.0.391, the last that speaks v3), unchanged, in
a virtualenv of its own, against the local stack: store a SavedModel, deploy it online, score
with its {"fields", "values"} payload, list, delete, and a 404 after. The virtualenv is made
once (.venv-ibm-client/, from the pinned tests/ibm_client/requirements.txt) and reused."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import savedmodels

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "ibm_client"
VENV = ROOT / ".venv-ibm-client"


@pytest.fixture(scope="module")
def client_python() -> Path:
    """The client's virtualenv, made (or remade when the pins change) from the package registry."""
    requirements = HERE / "requirements.txt"
    stamp, python = VENV / ".installed", VENV / "bin" / "python"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True,
                       timeout=900)
        stamp.write_text(wanted)
    return python


def test_the_ibm_client_stores_deploys_scores_and_deletes(local_stack, model_dirs, client_python, tmp_path):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(savedmodels.tar_gz(model_dirs["multi_io"]))
    done = subprocess.run([str(client_python), str(HERE / "flow.py"), local_stack["url"], local_stack["username"],
                           local_stack["password"], local_stack["instance_id"], str(archive)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["model_type"] == "tensorflow-2.21"
    assert result["status"] == "DEPLOY_SUCCESS"
    assert result["scoring_url"] == (f"{local_stack['url']}/v3/wml_instances/{local_stack['instance_id']}"
                                     f"/deployments/{result['deployment_uid']}/online")
    assert result["scored"] == {"fields": ["shifted", "sum"], "values": [[5, 6.0]]}
    assert result["deployment_uid"] in result["listed"]
    assert result["deleted"] == "SUCCESS"
    assert result["after_delete"].startswith("ApiRequestFailure") and "404" in result["after_delete"]
