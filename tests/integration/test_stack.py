"""`tubelens stack up|down|status` runs a real local stack that outlives the command and is stopped by PID."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from minio import Minio

from tubelens.devtools import stack
from tubelens.devtools.servers import (
    ServerProcess,
    group_alive,
    pid_alive,
    start_torchserve,
    stop_pid,
    tcp_open,
    torchserve_healthy,
)
from tubelens.devtools.stack import read_state
from tubelens.errors import Unavailable
from tubelens.predictor.settings import PredictorServiceSettings
from tubelens.settings import load_settings

TORCHSERVE_DEFAULT_PORTS = {8080, 8081, 8082, 7070, 7071}


@dataclass
class Stack:
    state_dir: Path
    env: dict[str, str]
    up_output: str


def tubelens(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tubelens.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def recorded_pids(state_dir: Path) -> list[int]:
    state = stack.read_state(state_dir.resolve())
    return [record.pid for record in state.servers] if state else []


def stop_leftovers(pids: list[int]) -> None:
    """Last resort for a failed test: whatever `down` did not stop is stopped here."""
    for pid in pids:
        if pid_alive(pid) or group_alive(pid):
            stop_pid(pid)


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose recorded servers are stopped after the test, whatever happened in it."""
    state_dir = tmp_path / ".tubelens"
    pids: list[int] = []
    try:
        yield state_dir
        pids = recorded_pids(state_dir)
    finally:
        pids = pids or recorded_pids(state_dir)
        tubelens("stack", "down", "--dir", str(state_dir), cwd=tmp_path)
        stop_leftovers(pids)


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by the tests that only look at it."""
    cwd = tmp_path_factory.mktemp("stack")
    state_dir = cwd / ".tubelens"
    pids: list[int] = []
    try:
        result = tubelens("stack", "up", "--dir", str(state_dir), cwd=cwd)
        pids = recorded_pids(state_dir)
        assert result.returncode == 0, result.stderr
        yield Stack(state_dir, read_env_file(state_dir / "stack.env"), result.stdout)
    finally:
        tubelens("stack", "down", "--dir", str(state_dir), cwd=cwd)
        stop_leftovers(pids)


def test_up_prints_where_the_env_file_is_and_how_to_load_it(running_stack: Stack) -> None:
    env_file = running_stack.state_dir / "stack.env"
    assert f"env file: {env_file}" in running_stack.up_output
    assert f"set -a; . {env_file}; set +a" in running_stack.up_output
    assert running_stack.env["TUBELENS_KAFKA__BOOTSTRAP"] in running_stack.up_output


def test_env_file_names_every_backend_the_services_read(running_stack: Stack) -> None:
    env = running_stack.env
    assert env["TUBELENS_BUS"] == "kafka"
    assert env["TUBELENS_OBJECTS"] == "s3"
    model_store = running_stack.state_dir / "torchserve" / "model-store"
    assert env["TUBELENS_PREDICTOR__TORCHSERVE__MODEL_STORE"] == str(model_store)
    assert model_store.is_dir()
    assert set(env) >= {
        "TUBELENS_KAFKA__BOOTSTRAP",
        "TUBELENS_S3__ENDPOINT",
        "TUBELENS_S3__ACCESS_KEY",
        "TUBELENS_S3__SECRET_KEY",
        "TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL",
        "TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL",
    }



def test_the_predictor_reads_the_stacks_torchserve(running_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in running_stack.env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(PredictorServiceSettings)
    torchserve = settings.predictor.torchserve
    assert torchserve.inference_url == running_stack.env["TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL"]
    assert torchserve.management_url == running_stack.env["TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL"]
    assert str(torchserve.model_store) == running_stack.env["TUBELENS_PREDICTOR__TORCHSERVE__MODEL_STORE"]


def test_broker_delivers_a_message_sent_to_the_bootstrap_address(running_stack: Stack, unique: str) -> None:
    bootstrap = running_stack.env["TUBELENS_KAFKA__BOOTSTRAP"]
    topic = f"stack-{unique}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(topic, key=b"video-1", value=b"hello").get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=10_000)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    first = next(iter(consumer), None)  # None when nothing arrives within consumer_timeout_ms
    consumer.close()

    assert first is not None
    assert (first.key, first.value) == (b"video-1", b"hello")


def test_s3_server_stores_an_object_with_the_keys_in_the_env_file(running_stack: Stack, unique: str) -> None:
    env = running_stack.env
    client = Minio(
        env["TUBELENS_S3__ENDPOINT"],
        access_key=env["TUBELENS_S3__ACCESS_KEY"],
        secret_key=env["TUBELENS_S3__SECRET_KEY"],
        secure=False,
    )
    bucket = f"stack-{unique}"
    client.make_bucket(bucket)
    client.put_object(bucket, "thumbnails/a.jpg", io.BytesIO(b"jpeg bytes"), length=10)

    response = client.get_object(bucket, "thumbnails/a.jpg")
    try:
        assert response.read() == b"jpeg bytes"
    finally:
        response.close()
        response.release_conn()


def test_torchserve_answers_ping_and_serves_prometheus_metrics(running_stack: Stack) -> None:
    env = running_stack.env
    with urllib.request.urlopen(env["TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL"] + "/ping", timeout=5) as resp:
        assert json.load(resp) == {"status": "Healthy"}
    [torchserve] = [s for s in read_state(running_stack.state_dir).servers if s.name == "torchserve"]
    metrics_url = f"http://127.0.0.1:{torchserve.ports['metrics']}"
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "# TYPE" in resp.read().decode()
    with urllib.request.urlopen(env["TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL"] + "/models", timeout=5) as resp:
        assert json.load(resp) == {"models": []}


def test_servers_outlive_up_in_sessions_of_their_own(running_stack: Stack) -> None:
    pids = recorded_pids(running_stack.state_dir)

    assert len(pids) == 3
    assert all(pid_alive(pid) for pid in pids)
    # Each leads its own session, so neither the exit of `up` nor a closed terminal reaches it.
    assert all(os.getsid(pid) == pid for pid in pids)


def test_status_reports_every_server_alive_and_answering(running_stack: Stack) -> None:
    state_dir = running_stack.state_dir
    result = tubelens("stack", "status", "--dir", str(state_dir), cwd=state_dir.parent)

    assert result.returncode == 0, result.stdout
    servers = stack.status(state_dir)
    assert [server.name for server in servers] == ["broker", "s3", "torchserve"]
    assert all(server.alive and server.answering for server in servers)
    for name in ("broker", "s3", "torchserve"):
        assert name in result.stdout


def test_every_listener_has_its_own_port_none_of_them_torchserves_defaults(running_stack: Stack) -> None:
    ports = [port for server in stack.status(running_stack.state_dir) for port in server.ports.values()]

    assert len(ports) == 7
    assert len(set(ports)) == len(ports)
    assert not set(ports) & TORCHSERVE_DEFAULT_PORTS


def test_second_up_while_running_is_refused_and_leaves_the_stack_alone(running_stack: Stack) -> None:
    state_dir = running_stack.state_dir
    before = recorded_pids(state_dir)

    result = tubelens("stack", "up", "--dir", str(state_dir), cwd=state_dir.parent)

    assert result.returncode == 2
    assert result.stderr.startswith(f"tubelens: a stack is already running in {state_dir}")
    assert "tubelens stack down" in result.stderr
    assert "Traceback" not in result.stderr
    assert recorded_pids(state_dir) == before
    assert all(server.answering for server in stack.status(state_dir))


def test_down_stops_every_server_closes_its_ports_and_a_second_down_is_harmless(stack_dir: Path) -> None:
    cwd = stack_dir.parent
    assert tubelens("stack", "up", "--torchserve", "--dir", str(stack_dir), cwd=cwd).returncode == 0
    servers = stack.status(stack_dir)

    first = tubelens("stack", "down", "--dir", str(stack_dir), cwd=cwd)
    second = tubelens("stack", "down", "--dir", str(stack_dir), cwd=cwd)

    assert first.returncode == 0
    assert first.stdout.strip() == "stopped torchserve, s3, broker"
    for server in servers:
        assert not pid_alive(server.pid) and not group_alive(server.pid), server.name
        assert not any(tcp_open(port) for port in server.ports.values()), server.name
    assert not (stack_dir / "state.json").exists()
    assert not (stack_dir / "stack.env").exists()
    assert second.returncode == 0
    assert second.stdout.strip() == f"nothing was running in {stack_dir}"


def test_up_replaces_a_stale_state_whose_processes_are_gone(stack_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stack_dir.mkdir()
    stale = {
        "servers": [
            {"name": "broker", "pid": dead.pid, "ports": {"kafka": 1}, "cmdline": ["tansu"], "log_path": "broker.log"}
        ],
        "env": {"TUBELENS_KAFKA__BOOTSTRAP": "127.0.0.1:1"},
    }
    (stack_dir / "state.json").write_text(json.dumps(stale))
    (stack_dir / "stack.env").write_text("TUBELENS_KAFKA__BOOTSTRAP=127.0.0.1:1\n")

    result = tubelens("stack", "up", "--no-torchserve", "--dir", str(stack_dir), cwd=stack_dir.parent)

    assert result.returncode == 0, result.stderr
    servers = stack.status(stack_dir)
    assert [server.name for server in servers] == ["broker", "s3"]
    assert all(server.alive and server.answering for server in servers)
    env = read_env_file(stack_dir / "stack.env")
    assert env["TUBELENS_KAFKA__BOOTSTRAP"] == f"127.0.0.1:{servers[0].ports['kafka']}"
    assert not any(key.startswith("TUBELENS_TORCHSERVE__") for key in env)


def test_down_never_signals_a_process_that_reused_a_recorded_pid(stack_dir: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stack_dir.mkdir()
        record = {
            "name": "broker",
            "pid": bystander.pid,
            "ports": {"kafka": 1},
            "cmdline": ["tansu", "broker"],
            "log_path": "broker.log",
        }
        (stack_dir / "state.json").write_text(json.dumps({"servers": [record], "env": {}}))

        assert [server.alive for server in stack.status(stack_dir)] == [False]
        result = tubelens("stack", "down", "--dir", str(stack_dir), cwd=stack_dir.parent)

        assert result.stdout.strip() == f"nothing was running in {stack_dir}"
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_server_failing_to_start_takes_down_those_already_started(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[ServerProcess] = []

    def recording(start):
        def wrapper(*args, **kwargs):
            started.append(start(*args, **kwargs))
            return started[-1]

        return wrapper

    def failing_torchserve(*args, **kwargs):
        raise Unavailable("TorchServe not ready")

    monkeypatch.setattr(stack, "start_broker", recording(stack.start_broker))
    monkeypatch.setattr(stack, "start_s3", recording(stack.start_s3))
    monkeypatch.setattr(stack, "start_torchserve", failing_torchserve)
    monkeypatch.setattr(stack, "torchserve_installed", lambda: True)
    try:
        with pytest.raises(Unavailable):
            stack.up(stack_dir, torchserve=True)

        assert [proc.name for proc in started] == ["broker", "s3"]
        assert not any(proc.alive() or group_alive(proc.pid) for proc in started)
        assert not (stack_dir / "state.json").exists()
        assert not (stack_dir / "stack.env").exists()
    finally:
        stop_leftovers([proc.pid for proc in started])


def test_start_torchserve_keeps_the_cwd_clean_and_runs_beside_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    servers: list[ServerProcess] = []
    try:
        # Relative work directories on purpose: every path TorchServe gets must still land in them.
        servers.append(start_torchserve(Path("../first")))
        servers.append(start_torchserve(Path("../second")))

        assert all(torchserve_healthy(server.ports["inference"]) for server in servers)
        first, second = (set(server.ports.values()) for server in servers)
        assert len(first) == len(second) == 5
        assert not first & second
        assert not (first | second) & TORCHSERVE_DEFAULT_PORTS
        assert list(cwd.iterdir()) == []
        for name in ("first", "second"):
            assert (tmp_path / name / "logs" / "ts_log.log").is_file()
    finally:
        for server in servers:
            server.stop()
    assert not any(group_alive(server.pid) for server in servers)
