"""`tubelens dev up | down | status`: the whole system on loopback, started and stopped with one command each.

`up`, in a state directory (default .tubelens/dev):
  1. the local stack (`stack.up`: a Kafka-protocol broker, an S3-compatible server, TorchServe) in `stack/`;
  2. the YouTube stand-in as a process of its own (`tubelens fake-youtube`, with the catalogue and fault options
     given), which writes the settings that point the pipeline at it (`FakeYouTube.env`) to `youtube.env`;
  3. the five services as `tubelens <service> run` processes (the crawler and the trainer long-running, the
     trainer with `--serve`), each in a process group of its own so they outlive this command; each binds free
     ports itself (port 0: no race with another program for a port picked in advance) and logs them, the
     predictor starts once the embedding service has said where it listens, and is pointed at it;
  4. `dev.env`: every TUBELENS_* setting the services got and the addresses to reach them, and `dev.json`: what
     runs, for `down` and `status`.
`down` stops what `dev.json` records, by PID (never a PID that now runs something else): the services, the stand-in,
then the stack. The processes reuse `demo_stack.Services`, the way `tubelens demo --stack` runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from tubelens.devtools import stack
from tubelens.devtools.demo_stack import Services, service_env
from tubelens.devtools.servers import LOOPBACK
from tubelens.devtools.stack import ServerRecord
from tubelens.errors import ConfigError, Conflict, Unavailable

STATE_FILE = "dev.json"
ENV_FILE = "dev.env"
YOUTUBE_ENV = "youtube.env"
START_TIMEOUT_S = 120.0
# (name, `tubelens` arguments, what it logs once its gRPC server listens), in start order: consumers first, so that
# no early event waits on a group join; the predictor after the embedding service, whose address it needs.
SERVICES = (
    ("embedding", ("embedding", "run"), "embedder listening"),
    ("preprocessor", ("preprocessor", "run"), ""),
    ("trainer", ("trainer", "run", "--serve"), ""),
    ("predictor", ("predictor", "run"), "predictor listening"),
    ("crawler", ("crawler", "run"), ""),
)
METRICS_LISTENING = "metrics listening"
# The `tubelens fake-youtube` options `dev up` passes through, as argparse names them.
YOUTUBE_OPTIONS = (
    "seed", "channels", "videos_per_channel", "channels_per_genre", "quota", "bad_inputs", "server_errors",
    "server_error_rate", "rate_limits", "rate_limit_rate", "delay_ms", "fault_targets",
)  # fmt: skip


@dataclass(frozen=True)
class DevState:
    state_dir: Path
    processes: list[ServerRecord]  # the stand-in and the services; the stack keeps its own record in stack/
    env: dict[str, str]  # the TUBELENS_* settings every service shares
    addresses: dict[str, str]  # what to point a client or a scraper at

    @property
    def env_file(self) -> Path:
        return self.state_dir / ENV_FILE


def youtube_argv(args: argparse.Namespace) -> list[str]:
    """The stand-in's options from `dev up`'s own, as `tubelens fake-youtube` arguments."""
    argv = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in YOUTUBE_OPTIONS]
    return argv + (["--quota-exceeded"] if args.quota_exceeded else [])


def up(
    state_dir: Path, *, youtube_args: list[str], new_labels: int | None = None, console: Console | None = None
) -> DevState:
    """Start everything (see the module's docstring); on any failure, stop what was started and raise."""
    state_dir = state_dir.resolve()
    _refuse_if_running(state_dir)
    say = console.print if console is not None else (lambda *_: None)
    # Short and private: TorchServe's worker sockets live under it, and a Unix socket path has ~100 characters.
    stack_dir = Path(tempfile.mkdtemp(prefix="tubelens-dev-"))
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    (state_dir / "stack").unlink(missing_ok=True)
    (state_dir / "stack").symlink_to(stack_dir)
    started: list[ServerRecord] = []
    try:
        say("starting the local stack: broker, S3 server, TorchServe")
        stack_state = stack.up(stack_dir, torchserve=True)
        say("starting the YouTube stand-in")
        youtube, youtube_env = _start_youtube(state_dir, youtube_args)
        started.append(youtube)
        env = _shared_env(state_dir, stack_state.env, youtube_env, new_labels)
        services = Services(env, state_dir / "logs", detached=True)
        for name, args, grpc_listening in SERVICES:
            say(f"starting {name}")
            process = services.start(name, *args)
            ports = {"metrics": _logged_port(services, name, METRICS_LISTENING)}
            if grpc_listening:
                ports["grpc"] = _logged_port(services, name, grpc_listening)
            if name == "embedding":
                services.env["TUBELENS_PREDICTOR__API__EMBEDDING_ADDRESS"] = f"{LOOPBACK}:{ports['grpc']}"
            started.append(stack.process_record(name, process.pid, ports, state_dir / "logs" / f"{name}.log"))
        addresses = _addresses(started, youtube_env)
        env = services.env
        state = DevState(state_dir, started, env, addresses)
        _write_state(state)
        return state
    except BaseException:
        for record in reversed(started):
            stack.stop_recorded(record)
        stack.down(stack_dir)
        raise


def down(state_dir: Path) -> list[str]:
    """Stop everything `up` recorded in `state_dir`; the names of what was still running."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    stopped = [record.name for record in reversed(state.processes) if stack.stop_recorded(record)] if state else []
    stack_dir = state_dir / "stack"
    if stack_dir.exists():
        stopped += [f"stack {name}" for name in stack.down(stack_dir.resolve())]
        shutil.rmtree(stack_dir.resolve(), ignore_errors=True)
    stack_dir.unlink(missing_ok=True)
    for name in (STATE_FILE, ENV_FILE, YOUTUBE_ENV):
        (state_dir / name).unlink(missing_ok=True)
    return stopped


def read_state(state_dir: Path) -> DevState | None:
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
        processes = [ServerRecord(**record) for record in raw["processes"]]
        return DevState(state_dir, processes, dict(raw["env"]), dict(raw["addresses"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a dev state file ({exc!r}); stop what it started by hand") from None


def show_status(state_dir: Path, console: Console) -> int:
    """A table of the processes; 0 when every one is alive and the predictor ready (its models loaded and warm)."""
    state = read_state(state_dir.resolve())
    if state is None:
        console.print(f"nothing recorded in {state_dir}: `tubelens dev up` first")
        return 1
    table = Table("process", "pid", "alive", "addresses")
    alive = {record.name: stack.recorded_alive(record) for record in state.processes}
    for record in state.processes:
        table.add_row(record.name, str(record.pid), "yes" if alive[record.name] else "NO", _ports(record.ports))
    console.print(table)
    for server in stack.status(state_dir / "stack"):
        console.print(f"stack {server.name}: pid {server.pid}, {'answering' if server.answering else 'NOT answering'}")
    ready = _predictor_ready(state.addresses["predictor"])
    console.print(f"predictor: {'ready (every model loaded and warm)' if ready else 'not ready yet'}")
    return 0 if all(alive.values()) and ready else 1


def describe(state: DevState, console: Console) -> None:
    table = Table("process", "pid", "addresses", "log")
    for record in state.processes:
        table.add_row(record.name, str(record.pid), _ports(record.ports), record.log_path)
    console.print(table)
    predictor = state.addresses["predictor"]
    console.print(f"the services' settings, also in {state.env_file} (set -a; . {state.env_file}; set +a):")
    for line in state.env_file.read_text().splitlines():
        console.print(f"  {line}")
    console.print(f"the predictor answers NOT_SERVING until its models are trained, loaded and warm: {predictor}")
    health = '{"service": "tubelens.v1.Predictor"}'
    console.print(f"  grpcurl -plaintext -d '{health}' {predictor} grpc.health.v1.Health/Check")
    console.print(f"  grpcurl -plaintext {predictor} tubelens.v1.Predictor/ServerReady")
    client = f'from tubelens.client import PredictorClient; print(PredictorClient("{predictor}").wait_until_ready())'
    console.print(f"  python -c '{client}'")
    console.print(f"metrics: {', '.join(f'{n} {a}' for n, a in state.addresses.items() if n.endswith('metrics'))}")
    where = state.state_dir
    console.print(f"status: tubelens dev status --dir {where}   stop: tubelens dev down --dir {where}")


def _refuse_if_running(state_dir: Path) -> None:
    state = read_state(state_dir)
    if state is None:
        return
    running = [record for record in state.processes if stack.recorded_alive(record)]
    if running:
        listed = ", ".join(f"{record.name} (pid {record.pid})" for record in running)
        raise Conflict(f"dev processes already run from {state_dir}: {listed}; `tubelens dev down --dir {state_dir}`")
    down(state_dir)  # a stale record: clear what is left of it


def _start_youtube(state_dir: Path, youtube_args: list[str]) -> tuple[ServerRecord, dict[str, str]]:
    """The stand-in on a port it picks itself; its env file (written once it serves) says where."""
    env_file = state_dir / YOUTUBE_ENV
    env_file.unlink(missing_ok=True)
    services = Services(dict(os.environ), state_dir / "logs", detached=True)
    process = services.start("fake-youtube", "fake-youtube", "--port=0", f"--env-file={env_file}", *youtube_args)
    log_path = state_dir / "logs" / "fake-youtube.log"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not env_file.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            stack.stop_recorded(stack.process_record("fake-youtube", process.pid, {}, log_path))
            raise Unavailable(f"the YouTube stand-in did not start:\n{services.tail('fake-youtube')}")
        time.sleep(0.1)
    env = _read_env(env_file)
    port = urlsplit(env["TUBELENS_CRAWLER__API_BASE"]).port or 0
    return stack.process_record("fake-youtube", process.pid, {"http": port}, log_path), env


def _shared_env(
    state_dir: Path, stack_env: dict[str, str], youtube_env: dict[str, str], new_labels: int | None
) -> dict[str, str]:
    env = service_env(stack_env, youtube_env, state_dir)  # every port 0: each service binds a free one itself
    # A dev trainer runs as soon as its threshold is met, and again at most every five minutes.
    env["TUBELENS_TRAINER__MIN_INTERVAL_S"] = "300"
    if new_labels is not None:
        env["TUBELENS_TRAINER__NEW_LABELS"] = str(new_labels)
    return env


def _logged_port(services: Services, name: str, message: str) -> int:
    """The port a service logged `message` with; a service that exits or stays silent fails `up` at once."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        found = services.logged(name, message)
        if found:
            return int(found[-1]["port"])
        services.check_alive()
        if time.monotonic() > deadline:
            raise Unavailable(f"{name} did not start within {START_TIMEOUT_S:.0f}s:\n{services.tail(name)}")
        time.sleep(0.1)


def _addresses(records: list[ServerRecord], youtube_env: dict[str, str]) -> dict[str, str]:
    addresses = {"youtube api": youtube_env["TUBELENS_CRAWLER__API_BASE"]}
    for record in records:
        for kind, port in record.ports.items():
            if kind == "grpc":
                addresses[record.name] = f"{LOOPBACK}:{port}"
            elif kind == "metrics":
                addresses[f"{record.name} metrics"] = f"http://{LOOPBACK}:{port}/metrics"
    return addresses


def _write_state(state: DevState) -> None:
    recorded = {"processes": [asdict(r) for r in state.processes], "env": state.env, "addresses": state.addresses}
    (state.state_dir / STATE_FILE).write_text(json.dumps(recorded, indent=2))
    tubelens = {key: value for key, value in state.env.items() if key.startswith("TUBELENS_")}
    lines = [f"{key}={value}" for key, value in sorted(tubelens.items())]
    state.env_file.write_text("\n".join(lines) + "\n")


def _read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def _ports(ports: dict[str, int]) -> str:
    return "\n".join(f"{kind} {LOOPBACK}:{port}" for kind, port in ports.items())


def _predictor_ready(address: str) -> bool:
    from tubelens.client import ApiError, PredictorClient, RetryPolicy

    try:
        with PredictorClient(address, timeout_s=3, retry=RetryPolicy(attempts=1)) as client:
            return client.server_ready().ready
    except ApiError:
        return False

