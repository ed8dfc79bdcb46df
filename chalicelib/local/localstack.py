"""The local stack: moto playing AWS, `tfbatch api` (chalice's local server) serving the API, and the local worker.

`up` starts what is not already running, waits until each part answers, creates the resources
and a default instance, and writes that instance's credentials to local-credentials.json.
`down` stops only the processes `up` started (their pids are kept in .run/). Ports come from
TFBATCH_MOTO_PORT and TFBATCH_API_PORT, folders from TFBATCH_RUN_DIR and
TFBATCH_CREDENTIALS_FILE; everything binds to 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from chalicelib.core import caches, resources
from chalicelib.state import instances

ROOT = Path(__file__).resolve().parents[2]  # the project: chalicelib/local/ is two levels down
# Tests run a stack of their own beside the user's by pointing these (and the ports) elsewhere.
RUN_DIR = Path(os.environ.get("TFBATCH_RUN_DIR", ROOT / ".run"))
CREDENTIALS_FILE = Path(os.environ.get("TFBATCH_CREDENTIALS_FILE", ROOT / "local-credentials.json"))
HOST = "127.0.0.1"


_PROC = Path("/proc")


def moto_port() -> int:
    return int(os.environ.get("TFBATCH_MOTO_PORT", "5000"))


def api_port() -> int:
    return int(os.environ.get("TFBATCH_API_PORT", "8000"))


def api_url() -> str:
    return f"http://{HOST}:{api_port()}"


def local_environment() -> dict[str, str]:
    """The environment every local process runs with: moto's fake keys, never real ones."""
    env = dict(os.environ)
    env.update({
        "TFBATCH_STAGE": "local",
        "TFBATCH_MOTO_PORT": str(moto_port()),
        "TFBATCH_AWS_ENDPOINT": f"http://{HOST}:{moto_port()}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    return env


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]

    @property
    def pid_file(self) -> Path:
        return RUN_DIR / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return RUN_DIR / f"{self.name}.log"

    def pid(self) -> int | None:
        """The service's pid while it runs; None for a missing or stale pid file."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _running(pid, self.command[0]) else None


def _running(pid: int, program: str) -> bool:
    """Whether `pid` is a live process running `program`. A signal check alone is fooled twice:
    a killed service whose parent has not reaped it yet is a zombie that still takes signals,
    and a pid file that outlived its process (a reboot, a kill -9 of the stack) may name a
    number since given to an unrelated process, which `down` would then kill."""
    if not _PROC.exists():  # no /proc (macOS): the signal check is what there is
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    try:
        state = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        arguments = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and any(Path(os.fsdecode(arg)).name == Path(program).name for arg in arguments)


def _reap(pid: int) -> None:
    """Collect a service this process started and that has exited, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def services() -> list[Service]:
    bin_dir = Path(sys.executable).parent
    return [
        Service("moto", [str(bin_dir / "moto_server"), "-H", HOST, "-p", str(moto_port())]),
        Service("api", [str(bin_dir / "tfbatch"), "api", "--stage", "local", "--host", HOST,
                        "--port", str(api_port())]),
        Service("worker", [str(bin_dir / "tfbatch"), "worker"]),
    ]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _wait(what: str, ready, service: Service, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if service.pid() is None:
            break
        time.sleep(0.2)
    tail = service.log_file.read_text()[-3000:] if service.log_file.exists() else ""
    raise RuntimeError(f"{what} did not come up; the end of {service.log_file}:\n{tail}")


def _api_answers() -> bool:
    try:
        urllib.request.urlopen(f"{api_url()}/v3/identity/token", timeout=2)
    except urllib.error.HTTPError as error:
        return error.code == 401
    except OSError:
        return False
    return False


def _start(service: Service) -> None:
    RUN_DIR.mkdir(exist_ok=True)
    with open(service.log_file, "ab") as log:
        process = subprocess.Popen(service.command, cwd=ROOT, env=local_environment(), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    service.pid_file.write_text(str(process.pid))


def _ensure(service: Service, port: int | None, ready) -> bool:
    """Start `service` unless it already runs; True when this call started it."""
    if service.pid() is not None:
        return False
    if port is not None and _port_open(port):
        raise RuntimeError(f"Port {port} is taken by a process tfbatch did not start; stop it or set "
                           f"{'TFBATCH_MOTO_PORT' if service.name == 'moto' else 'TFBATCH_API_PORT'}.")
    _start(service)
    _wait(service.name, ready, service)
    return True


def _apply_local_environment() -> None:
    os.environ.update(local_environment())
    caches.reset()


def up() -> dict:
    """Start the stack; return the default instance's credentials."""
    moto, api, worker = services()
    _apply_local_environment()
    _ensure(moto, moto_port(), lambda: _port_open(moto_port()))
    resources.bootstrap()
    credentials = _default_instance()
    _ensure(api, api_port(), _api_answers)
    _ensure(worker, None, lambda: worker.log_file.exists() and "worker polling" in worker.log_file.read_text())
    return credentials


def _default_instance() -> dict:
    """The instance in local-credentials.json, created anew when moto no longer knows it."""
    if CREDENTIALS_FILE.exists():
        saved = json.loads(CREDENTIALS_FILE.read_text())
        try:
            instances.get(saved["instance_id"])
            return saved
        except Exception:
            pass
    created = instances.create("local")
    saved = {"instance_id": created.instance_id, "username": created.username, "password": created.password,
             "url": api_url()}
    CREDENTIALS_FILE.write_text(json.dumps(saved, indent=2) + "\n")
    CREDENTIALS_FILE.chmod(0o600)
    return saved


def down() -> list[str]:
    """Stop the services `up` started (each its whole process group); stale pid files are only
    removed, and a service that dies meanwhile is not an error."""
    stopped = []
    for service in reversed(services()):
        pid = service.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            for _ in range(50):
                _reap(pid)
                if not _running(pid, service.command[0]):
                    break
                time.sleep(0.1)
            else:
                _signal_group(pid, signal.SIGKILL)
                _reap(pid)
            stopped.append(service.name)
        service.pid_file.unlink(missing_ok=True)
    return stopped


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def status() -> dict[str, int | None]:
    return {service.name: service.pid() for service in services()}
