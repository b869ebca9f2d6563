"""The trainer as a process over a real broker: `--serve` consumes the pipeline's events and trains once enough newly
labelled videos arrived, recording the run and announcing the model, and stops cleanly on SIGTERM; on demand it
catches up, trains and exits; `--snapshot` trains on a stored snapshot without consuming any event, as a training Job
does; and the kubernetes executor launches that Job through the Kubernetes API and reads back the run it recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.buskit import Recorder, running, wait_until
from tests.datasetkit import NOW, World, make_world
from tests.unit.test_trainer_jobs import NAMESPACE, FakeKubernetes, fake_kubernetes
from tubelens import events
from tubelens.bus import Worker
from tubelens.bus.kafka import KafkaBus
from tubelens.devtools.servers import ServerProcess, start_broker
from tubelens.modelkit.snapshots import load_snapshot
from tubelens.objects.local import LocalObjectStore
from tubelens.settings import KafkaSettings
from tubelens.trainer.dataset import CONSUMED_TOPICS, DatasetBuilder
from tubelens.trainer.jobs import RUN_ID_ANNOTATION
from tubelens.trainer.provenance import Outcome, Trigger, list_runs, load_run
from tubelens.trainer.triggers import load_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[ServerProcess]:
    """Its own broker: the trainer reads the production topic names, which other tests publish to."""
    proc = start_broker(tmp_path / "broker")
    yield proc
    proc.stop()


@pytest.fixture
def kafka(own_broker: ServerProcess) -> Iterator[KafkaBus]:
    bus = KafkaBus(KafkaSettings(bootstrap=own_broker.address, partitions=4, session_timeout_ms=6000))
    yield bus
    bus.close()


@pytest.fixture
def world(store: LocalObjectStore) -> World:
    return make_world(store, channels=4, videos_per_channel=12)


def trainer_env(broker: ServerProcess, store: LocalObjectStore, tmp_path: Path, **trainer: str) -> dict[str, str]:
    return {
        **os.environ,
        "TUBELENS_ENV_FILE": str(tmp_path / "none.env"),
        "TUBELENS_BUS": "kafka",
        "TUBELENS_KAFKA__BOOTSTRAP": broker.address,
        "TUBELENS_KAFKA__PARTITIONS": "4",
        "TUBELENS_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "TUBELENS_OBJECTS": "local",
        "TUBELENS_LOCAL__ROOT": str(store.root),
        "TUBELENS_LOCAL__BUCKET": store.bucket,
        "TUBELENS_METRICS_PORT": "0",
        **{f"TUBELENS_TRAINER__{name.upper()}": value for name, value in trainer.items()},
    }


def trainer(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tubelens.cli", "trainer", "run", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def logged(log: Path, msg: str) -> list[dict]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines if f'"msg": "{msg}"' in line]


def publish(bus: KafkaBus, world: World) -> None:
    """The pipeline's events for every video, each on its topic, keyed by video id."""
    producer = bus.producer()
    for envelope in world.events:
        payload = getattr(envelope, envelope.WhichOneof("payload"))
        topic = events.TOPIC_OF_PAYLOAD[envelope.WhichOneof("payload")]
        producer.publish(topic, events.encode(envelope), key=payload.video_id, headers=events.headers_of(envelope))
    producer.flush()
    producer.close()


def models_trained(bus: KafkaBus, group: str) -> tuple[Recorder, Worker]:
    recorder = Recorder()
    return recorder, Worker(bus, [events.MODELS_TRAINED], group, recorder.handler("observer"), service="test")


def announced(recorder: Recorder) -> list:
    with recorder.lock:
        return [envelope.model_trained for _, envelope, _ in recorder.seen]


def test_serve_trains_once_enough_new_labelled_videos_arrived_and_stops_on_sigterm(
    own_broker: ServerProcess, kafka: KafkaBus, store: LocalObjectStore, world: World, tmp_path: Path, unique: str
) -> None:
    log = tmp_path / "trainer.log"
    env = trainer_env(
        own_broker,
        store,
        tmp_path,
        new_labels=str(len(world.videos)),
        schedule_s="0",
        min_interval_s="3600",
        idle_s="1",
        tick_s="0.2",
    )
    kafka.ensure_topics(list(CONSUMED_TOPICS))
    recorder, observer = models_trained(kafka, f"observer-{unique}")
    service = trainer("--serve", "--task", "channel", env=env, log=log)
    try:
        with running(observer):
            wait_until(lambda: logged(log, "caught up"), timeout=60, what="the trainer caught up on empty topics")
            assert logged(log, "caught up")[0]["labelled_videos"] == 0
            assert not list_runs(store), "no run before any labelled video arrived"
            publish(kafka, world)
            wait_until(lambda: list_runs(store) and announced(recorder), timeout=120, what="a run and its event")
            port = logged(log, "metrics listening")[0]["port"]
            counted = 'tubelens_trainer_runs_total{outcome="succeeded",trigger="new_labels"} 1.0'
            wait_until(lambda: counted in scrape(port), timeout=30, what="the run counted in /metrics")
            metrics = scrape(port)
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=60) == 0, log.read_text()[-3000:]

    [record] = list_runs(store)
    assert (record.trigger, record.outcome, record.tasks) == (Trigger.NEW_LABELS, Outcome.SUCCEEDED, ("channel",))
    assert record.code_version.startswith("tubelens-trainer 0.1.0+"), "a checkout adds its commit"
    assert record.device == "cpu" or record.device.startswith("cuda:")
    snapshot = load_snapshot(store, record.snapshot_id)
    assert snapshot.table.num_rows == len(world.videos), "the run came once every video was labelled"
    [trained] = announced(recorder)
    assert (trained.task, trained.dataset_snapshot_id, trained.promoted) == ("channel", record.snapshot_id, True)
    assert record.results[0].version == trained.version and "accuracy" in record.results[0].metrics
    state = load_state(store)
    assert state.labelled_at_last_run == len(world.videos) and state.last_run_at is not None
    assert "tubelens_trainer_labelled_videos_since_last_run 0.0" in metrics
    assert logged(log, "stop requested")


def test_on_demand_catches_up_trains_records_and_exits(
    own_broker: ServerProcess, kafka: KafkaBus, store: LocalObjectStore, world: World, tmp_path: Path
) -> None:
    kafka.ensure_topics(list(CONSUMED_TOPICS))
    publish(kafka, world)
    log = tmp_path / "trainer.log"
    run = trainer("--task", "channel", env=trainer_env(own_broker, store, tmp_path, idle_s="1"), log=log)
    assert run.wait(timeout=120) == 0, log.read_text()[-3000:]

    [record] = list_runs(store)
    assert (record.trigger, record.outcome, record.executor) == (Trigger.ON_DEMAND, Outcome.SUCCEEDED, "local")
    assert load_snapshot(store, record.snapshot_id).table.num_rows == len(world.videos)
    [trained] = logged(log, "model trained")
    assert (trained["task"], trained["promoted"], trained["run_id"]) == ("channel", True, record.run_id)
    assert load_state(store) is None, "an on-demand run leaves the serving trainer's trigger alone"


def test_snapshot_trains_a_stored_snapshot_without_consuming_events(
    own_broker: ServerProcess, kafka: KafkaBus, store: LocalObjectStore, world: World, tmp_path: Path, unique: str
) -> None:
    builder = DatasetBuilder(store)
    for envelope in world.events:
        builder.handle(envelope)
    snapshot = builder.snapshot(seed=1, now=NOW)
    run_id = "20250602T120500Z-0123abcd"
    log = tmp_path / "trainer.log"
    env = trainer_env(own_broker, store, tmp_path)
    recorder, observer = models_trained(kafka, f"observer-{unique}")
    with running(observer):
        # What a training Job runs; no event was ever published to the topics the trainer consumes.
        args = (
            "--snapshot",
            snapshot.id,
            "--task",
            "channel",
            "--seed",
            "2",
            "--trigger",
            "schedule",
            "--run-id",
            run_id,
        )
        job = trainer(*args, env=env, log=log)
        assert job.wait(timeout=120) == 0, log.read_text()[-3000:]
        wait_until(lambda: announced(recorder), timeout=30, what="models.trained")

    record = load_run(store, run_id)
    assert (record.snapshot_id, record.trigger, record.seed, record.outcome) == (
        snapshot.id,
        Trigger.SCHEDULE,
        2,
        Outcome.SUCCEEDED,
    )
    assert record.results[0].version == f"{snapshot.id}-s2"
    [trained] = announced(recorder)
    assert trained.dataset_snapshot_id == snapshot.id
    assert not logged(log, "consuming"), "no consumer was started"
    assert [m["task"] for m in logged(log, "model trained")] == ["channel"]


def test_snapshot_of_a_missing_snapshot_fails_and_records_why(
    own_broker: ServerProcess, store: LocalObjectStore, tmp_path: Path
) -> None:
    log = tmp_path / "trainer.log"
    job = trainer(
        "--snapshot",
        "20250602T120000Z-ffffffff",
        "--task",
        "channel",
        env=trainer_env(own_broker, store, tmp_path),
        log=log,
    )
    assert job.wait(timeout=120) == 2, log.read_text()[-3000:]
    [record] = list_runs(store)
    assert record.outcome is Outcome.FAILED and record.snapshot_id == "20250602T120000Z-ffffffff"
    assert "20250602T120000Z-ffffffff" in record.error


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_the_kubernetes_executor_launches_a_job_and_reads_back_the_run_it_recorded(
    own_broker: ServerProcess, kafka: KafkaBus, store: LocalObjectStore, world: World, tmp_path: Path
) -> None:
    kafka.ensure_topics(list(CONSUMED_TOPICS))
    publish(kafka, world)
    cluster = {"executor": "kubernetes", "kubernetes__image": "registry.example/trainer:test", "kubernetes__gpus": "0"}
    env = trainer_env(own_broker, store, tmp_path, idle_s="1", kubernetes__namespace=NAMESPACE, **cluster)
    env.pop("KUBERNETES_SERVICE_HOST", None)  # never the cluster this test might itself run in
    log, job_log = tmp_path / "launcher.log", tmp_path / "job.log"
    with fake_kubernetes() as (fake, host):
        env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "kubeconfig", host))
        # The Job's environment is the launcher's, kubernetes executor included, as a shared ConfigMap would give it.
        fake.on_create = kubelet(fake, env, job_log)
        launcher = trainer("--task", "channel", env=env, log=log)
        assert launcher.wait(timeout=150) == 0, log.read_text()[-3000:] + job_log.read_text()[-3000:]

    [job] = fake.jobs.values()
    [record] = list_runs(store)
    assert job["metadata"]["annotations"][RUN_ID_ANNOTATION] == record.run_id
    assert (record.trigger, record.outcome, record.executor) == (Trigger.ON_DEMAND, Outcome.SUCCEEDED, "local")
    assert job["metadata"]["annotations"]["tubelens.io/snapshot-id"] == record.snapshot_id
    assert logged(job_log, "run recorded") and not logged(job_log, "consuming"), "the Job trained the stored snapshot"
    [trained] = logged(log, "model trained")
    assert (trained["task"], trained["run_id"]) == ("channel", record.run_id), "the launcher read the Job's record"


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "test-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def kubelet(fake: FakeKubernetes, env: dict[str, str], log: Path) -> Callable[[dict], None]:
    """Runs each created Job's container command on this machine, with `env` standing in for its ConfigMap and Secret
    plus the container's own env, and reports how it ended as the Job's condition."""

    def create(job: dict) -> None:
        [container] = job["spec"]["template"]["spec"]["containers"]
        executable, *args = container["command"]
        command = [str(Path(sys.executable).with_name(executable)), *args]
        job_env = {**env, **{variable["name"]: variable["value"] for variable in container["env"]}}

        def run() -> None:
            with open(log, "ab") as out:
                done = subprocess.run(command, env=job_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=120)
            if done.returncode == 0:
                fake.finish("Complete")
            else:
                fake.finish("Failed", "BackoffLimitExceeded", f"the trainer exited {done.returncode}")

        threading.Thread(target=run, name="kubelet", daemon=True).start()

    return create
