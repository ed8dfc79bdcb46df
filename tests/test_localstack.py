"""The local stack's pid files: a dead, zombie or reused pid never counts as a running service,
and `down` copes with services that are already gone."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chalicelib.local import localstack


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(localstack, "RUN_DIR", tmp_path)
    return tmp_path


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_killed_service_not_yet_reaped_is_not_running(run_dir):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    service = localstack.Service("worker", [sys.executable, "-c", "..."])
    service.pid_file.write_text(str(child.pid))
    assert service.pid() == child.pid
    child.stdin.close()  # it exits; nobody reaps it yet, so it is a zombie
    while _state(child.pid) != "Z":
        time.sleep(0.01)
    assert service.pid() is None
    child.wait()


def test_a_pid_file_naming_another_program_is_stale(run_dir):
    service = localstack.Service("moto", ["/no/such/bin/moto_server", "-p", "5000"])
    service.pid_file.write_text(str(os.getpid()))  # a live pid, but this test's own
    assert service.pid() is None


def test_down_removes_stale_pid_files_and_kills_nothing(run_dir, monkeypatch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for service in localstack.services():
        service.pid_file.write_text(str(gone.pid))  # dead, perhaps reused later
    assert localstack.down() == []
    assert list(run_dir.iterdir()) == []


def test_down_stops_a_running_service_and_its_group(run_dir, monkeypatch):
    program = [sys.executable, "-c", "import time; time.sleep(600)"]
    monkeypatch.setattr(localstack, "services", lambda: [localstack.Service("worker", program)])
    process = subprocess.Popen(program, start_new_session=True)
    (run_dir / "worker.pid").write_text(str(process.pid))
    assert localstack.down() == ["worker"]
    assert process.wait(timeout=10) is not None
    assert localstack.down() == []  # a second down finds nothing, and raises nothing
