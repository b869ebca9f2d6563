"""The local stack: a Kafka-protocol broker, an S3-compatible server and TorchServe on loopback.

`up` starts them as detached processes that outlive the command, each in its own subdirectory of the state
directory, and writes two files there: `state.json` (what runs, for `down` and `status`) and `stack.env` (the
TUBELENS_* variables the services read). `down` stops what `state.json` records, by PID.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tubelens.devtools.servers import (
    LOOPBACK,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    ServerProcess,
    group_alive,
    http_ok,
    pid_alive,
    start_broker,
    start_s3,
    start_torchserve,
    stop_pid,
    tcp_open,
    torchserve_healthy,
    torchserve_installed,
)
from tubelens.errors import ConfigError, Conflict

STATE_FILE = "state.json"
ENV_FILE = "stack.env"


@dataclass(frozen=True)
class ServerRecord:
    name: str
    pid: int
    ports: dict[str, int]
    cmdline: list[str]  # as /proc showed it once ready; a PID now running anything else was reused
    log_path: str


@dataclass(frozen=True)
class StackState:
    state_dir: Path
    servers: list[ServerRecord]
    env: dict[str, str]

    @property
    def env_file(self) -> Path:
        return self.state_dir / ENV_FILE


@dataclass(frozen=True)
class ServerStatus:
    name: str
    pid: int
    ports: dict[str, int]
    alive: bool
    answering: bool


def up(state_dir: Path, *, torchserve: bool | None = None) -> StackState:
    """Start the stack in `state_dir`; `torchserve=None` includes TorchServe when it can run here.

    Refuses (Conflict) while a stack recorded there still runs; a record whose processes are all gone is
    replaced. When a server fails to start, those already started are stopped before the error propagates.
    """
    state_dir = state_dir.resolve()
    _clear_stale_state(state_dir)
    with_torchserve = _want_torchserve(torchserve)
    started: list[ServerProcess] = []
    try:
        started.append(start_broker(state_dir / "broker"))
        started.append(start_s3(state_dir / "s3"))
        if with_torchserve:
            started.append(start_torchserve(state_dir / "torchserve", model_store=_model_store(state_dir)))
        state = StackState(state_dir, [_record(proc) for proc in started], _stack_env(state_dir, started))
        _write_state(state)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return state


def down(state_dir: Path) -> list[str]:
    """Stop every server recorded in `state_dir`; returns the names of those that were still running."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = [record.name for record in reversed(state.servers) if _stop(record)]
    _remove_state(state_dir)
    return stopped


def status(state_dir: Path) -> list[ServerStatus]:
    state = read_state(state_dir.resolve())
    if state is None:
        return []
    return [_status(record) for record in state.servers]


def read_state(state_dir: Path) -> StackState | None:
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
        servers = [ServerRecord(**server) for server in raw["servers"]]
        env = dict(raw["env"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a stack state file ({exc!r}); stop what it started and remove it by hand"
        ) from None
    return StackState(state_dir, servers, env)


def process_record(name: str, pid: int, ports: dict[str, int], log_path: Path) -> ServerRecord:
    """A record of any process started in its own process group (`tubelens dev up` records its services so).

    A child caught right after it was spawned may still show an empty command line; the record waits for the real
    one (a second at most), since a record whose command line never matches would never be stopped."""
    deadline = time.monotonic() + 1.0
    cmdline = _cmdline(pid)
    while not cmdline and pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
        cmdline = _cmdline(pid)
    return ServerRecord(name, pid, dict(ports), cmdline or [], str(log_path))


def stop_recorded(record: ServerRecord) -> bool:
    """Stop a recorded process's group by PID (never a PID now running something else); True if it still ran."""
    return _stop(record)


def recorded_alive(record: ServerRecord) -> bool:
    return not _pid_reused(record) and pid_alive(record.pid)


def _want_torchserve(requested: bool | None) -> bool:
    if requested is None:
        return torchserve_installed()
    if requested and not torchserve_installed():
        raise ConfigError(
            "TorchServe was asked for but cannot run here: it needs pip install -e '.[stack]' and Java 17+ "
            "(bash scripts/ensure-java.sh)"
        )
    return requested


def _clear_stale_state(state_dir: Path) -> None:
    state = read_state(state_dir)
    if state is None:
        return
    running = [record for record in state.servers if _running(record)]
    if running:
        listed = ", ".join(f"{record.name} (pid {record.pid})" for record in running)
        raise Conflict(
            f"a stack is already running in {state_dir}: {listed}; "
            f"stop it first with `tubelens stack down --dir {state_dir}`"
        )
    _remove_state(state_dir)


def _record(proc: ServerProcess) -> ServerRecord:
    return ServerRecord(proc.name, proc.pid, dict(proc.ports), _cmdline(proc.pid) or [], str(proc.log_path))


def _model_store(state_dir: Path) -> Path:
    return state_dir / "torchserve" / "model-store"


def _stack_env(state_dir: Path, started: list[ServerProcess]) -> dict[str, str]:
    by_name = {proc.name: proc for proc in started}
    env = {
        "TUBELENS_BUS": "kafka",
        "TUBELENS_KAFKA__BOOTSTRAP": by_name["broker"].address,
        "TUBELENS_OBJECTS": "s3",
        "TUBELENS_S3__ENDPOINT": by_name["s3"].address,
        "TUBELENS_S3__ACCESS_KEY": S3_ACCESS_KEY,
        "TUBELENS_S3__SECRET_KEY": S3_SECRET_KEY,
    }
    if "torchserve" in by_name:
        env.update(_torchserve_env(by_name["torchserve"].ports, _model_store(state_dir)))
    return env


def _torchserve_env(ports: dict[str, int], model_store: Path) -> dict[str, str]:
    """What the predictor's TorchServe adapter reads (its metrics stay at TorchServe's own port, in state.json)."""
    return {
        "TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL": f"http://{LOOPBACK}:{ports['inference']}",
        "TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL": f"http://{LOOPBACK}:{ports['management']}",
        "TUBELENS_PREDICTOR__TORCHSERVE__MODEL_STORE": str(model_store),
    }


def _write_state(state: StackState) -> None:
    state.state_dir.mkdir(parents=True, exist_ok=True)
    recorded = {"servers": [asdict(record) for record in state.servers], "env": state.env}
    _write_atomically(state.state_dir / STATE_FILE, json.dumps(recorded, indent=2))
    _write_atomically(state.env_file, "".join(f"{key}={value}\n" for key, value in state.env.items()))


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _remove_state(state_dir: Path) -> None:
    for name in (STATE_FILE, ENV_FILE):
        (state_dir / name).unlink(missing_ok=True)


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def _pid_reused(record: ServerRecord) -> bool:
    """Whether the recorded PID now belongs to another program, which must never be signalled.

    A zombie is our server, dead and not yet reaped; a live process whose cmdline cannot be read or differs
    (one caught mid-exec reads empty) is someone else's.
    """
    return pid_alive(record.pid) and _cmdline(record.pid) != record.cmdline


def _running(record: ServerRecord) -> bool:
    return not _pid_reused(record) and (pid_alive(record.pid) or group_alive(record.pid))


def _stop(record: ServerRecord) -> bool:
    """Stop the server's process group; True when something of it was still running."""
    if not _running(record):
        return False
    stop_pid(record.pid)
    return True


def _status(record: ServerRecord) -> ServerStatus:
    alive = not _pid_reused(record) and pid_alive(record.pid)
    answering = alive and _answering(record.name, record.ports)
    return ServerStatus(record.name, record.pid, record.ports, alive, answering)


def _answering(name: str, ports: dict[str, int]) -> bool:
    match name:
        case "broker":
            return tcp_open(ports["kafka"])
        case "s3":
            return http_ok(f"http://{LOOPBACK}:{ports['s3']}/")
        case "torchserve":
            return torchserve_healthy(ports["inference"])
    raise ConfigError(f"{name}: not a server of the local stack")
