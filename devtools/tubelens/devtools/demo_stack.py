"""`tubelens demo --stack`: the demo's pipeline as separate service processes over the local stack.

The local stack (`tubelens stack up`: a Kafka-protocol broker, an S3-compatible server, TorchServe) starts in a state
directory of the demo's own; the YouTube stand-in serves the same seeded catalogue as the embedded demo. Then each
service runs as its own `tubelens <service> run` process, exactly as it would in a pod: the crawler once, the
preprocessor and the embedding service until every video went through, the trainer once, and the predictor with its
models in TorchServe, asked one real gRPC question. The evaluation tables are computed from the trainer's snapshot,
read back from the S3 server. Everything is stopped at the end, the stack included.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tubelens import events
from tubelens.bus import Message, Worker, dlq_topic
from tubelens.bus.kafka import KafkaBus
from tubelens.client import PredictorClient
from tubelens.devtools import stack
from tubelens.devtools.demo_serving import client_example, sample_call
from tubelens.devtools.fakeyoutube import BadInput, Catalogue, FakeYouTube, InputFaults
from tubelens.errors import Unavailable
from tubelens.modelkit.snapshots import load_snapshot
from tubelens.objects import open_store
from tubelens.settings import KafkaSettings, TubelensSettings
from tubelens.trainer.evaluate import Report, evaluate_all
from tubelens.v1 import events_pb2, predictor_pb2

SEED = 7
SESSION_TIMEOUT_MS = "6000"  # consumers join in about half of it on this broker
QUIET_S = 5.0  # the pipeline is drained once every video is accounted for and nothing new arrived for this long
STAGE_TIMEOUT_S = 600.0


@dataclass
class Counts:
    """What the observer saw on the bus, by stage."""

    discovered: set[str] = field(default_factory=set)
    thumbnails: set[str] = field(default_factory=set)
    frames: set[str] = field(default_factory=set)
    embedded_thumbnails: set[str] = field(default_factory=set)
    embedded_frames: set[str] = field(default_factory=set)
    dead_letters: dict[str, str] = field(default_factory=dict)  # video id -> reason
    last_change: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, message: Message) -> None:
        envelope = events.decode(message.value)
        kind = envelope.WhichOneof("payload")
        with self.lock:
            self.last_change = time.monotonic()
            if kind == "video_discovered":
                self.discovered.add(envelope.video_discovered.video_id)
            elif kind == "thumbnail_stored":
                self.thumbnails.add(envelope.thumbnail_stored.video_id)
            elif kind == "frames_extracted":
                self.frames.add(envelope.frames_extracted.video_id)
            elif kind == "embedding_computed":
                computed = envelope.embedding_computed
                thumbnail = computed.source == events_pb2.EMBEDDING_SOURCE_THUMBNAIL
                (self.embedded_thumbnails if thumbnail else self.embedded_frames).add(computed.video_id)
            elif kind == "dead_letter":
                # The original bytes are claim-checked into the object store; the letter keeps the key (the video).
                video = envelope.dead_letter.key.decode()
                self.dead_letters[video] = envelope.dead_letter.reason

    def accounted(self) -> int:
        """Videos whose journey ended: embedded, or dead-lettered by the preprocessor."""
        with self.lock:
            return len(self.embedded_thumbnails | set(self.dead_letters))

    def drained(self) -> bool:
        with self.lock:
            frames_done = self.frames <= self.embedded_frames
            quiet = time.monotonic() - self.last_change > QUIET_S
        return bool(self.discovered) and self.accounted() >= len(self.discovered) and frames_done and quiet


@dataclass
class StackDemoResult:
    counts: Counts
    trained: list[dict]
    evaluation: Report | None
    snapshot_id: str
    address: str
    sample: predictor_pb2.PredictPopularityResponse | None
    example: str
    seconds: float


class Services:
    """Service processes, each logging JSON into its own file; all stopped with SIGTERM at the end. `detached`
    processes get a process group of their own, so that they outlive the command that started them (`dev up`)."""

    def __init__(self, env: dict[str, str], logs: Path, *, detached: bool = False) -> None:
        self.env, self.logs, self.detached = env, logs, detached
        self.running: dict[str, subprocess.Popen] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`tubelens <args>` as `name`, with `env` over the shared settings."""
        with open(self.logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tubelens.cli", *args],
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.detached,
            )
        self.running[name] = process
        return process

    def run_to_end(self, name: str, *args: str, timeout: float = STAGE_TIMEOUT_S) -> None:
        code = self.start(name, *args).wait(timeout=timeout)
        self.running.pop(name)
        if code != 0:
            raise Unavailable(f"{name} exited {code}; its log: {self.logs / f'{name}.log'}\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])

    def logged(self, name: str, message: str) -> list[dict]:
        path = self.logs / f"{name}.log"
        found = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if f'"msg": "{message}"' in line:
                found.append(json.loads(line))
        return found

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise Unavailable(f"{name} exited {process.returncode}:\n{self.tail(name)}")

    def stop_all(self) -> None:
        for process in self.running.values():
            process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


def run_stack_demo(workdir: Path, videos: int, channels: int, console: Console, progress: Progress) -> StackDemoResult:
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    # Short and private: TorchServe's worker sockets live under it, and a Unix socket path has ~100 characters.
    state_dir = Path(tempfile.mkdtemp(prefix="tubelens-stack-"))
    catalogue = Catalogue.generate(
        SEED,
        channels,
        math.ceil(videos / channels),
        now=datetime.now(UTC).replace(microsecond=0),
        upcoming_fraction=0.0,
        faults=InputFaults(counts=dict.fromkeys(BadInput, 1)),
    )
    task = progress.add_task("local stack: broker, S3, TorchServe", total=1)
    state = stack.up(state_dir, torchserve=True)
    progress.update(task, completed=1)
    try:
        with FakeYouTube(catalogue, tick=False) as youtube:
            env = {**service_env(state.env, youtube.env(), workdir), "TUBELENS_TRAINER__SEED": str(SEED)}
            services = Services(env, workdir / "logs")
            try:
                return _pipeline(services, env, progress, started)
            finally:
                services.stop_all()
    finally:
        stack.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def _pipeline(services: Services, env: dict[str, str], progress: Progress, started: float) -> StackDemoResult:
    counts = Counts()
    bus = KafkaBus(
        KafkaSettings(bootstrap=env["TUBELENS_KAFKA__BOOTSTRAP"], session_timeout_ms=int(SESSION_TIMEOUT_MS))
    )
    topics = [
        events.VIDEOS_DISCOVERED, events.THUMBNAILS_STORED, events.FRAMES_EXTRACTED, events.EMBEDDINGS_COMPUTED,
        dlq_topic(events.VIDEOS_DISCOVERED),
    ]  # fmt: skip
    observer = Worker(bus, topics, "demo-stack-observer", counts.handle, service="demo")
    watching = observer.start_thread()
    try:
        crawl = progress.add_task("crawler (process)", total=1)
        services.run_to_end("crawler", "crawler", "run", "--once")
        progress.update(crawl, completed=1)
        services.start("preprocessor", "preprocessor", "run")
        services.start("embedding", "embedding", "run")
        _wait_drained(services, counts, progress)
        train = progress.add_task("trainer (process)", total=1)
        services.run_to_end("trainer", "trainer", "run")
        progress.update(train, completed=1)
        serve = progress.add_task("predictor over TorchServe (process)", total=1)
        # FindSimilar goes to the embedding service, wherever it listens.
        services.env["TUBELENS_PREDICTOR__API__EMBEDDING_ADDRESS"] = wait_listening(
            services, "embedding", "embedder listening"
        )
        # The predictor serves the tasks the trainer promoted, and is asked once they are loaded and warm.
        promoted = [line["task"] for line in services.logged("trainer", "model trained") if line["promoted"]]
        services.start("predictor", "predictor", "run", env={"TUBELENS_PREDICTOR__TASKS": json.dumps(promoted)})
        address = wait_listening(services, "predictor", "predictor listening")
        with PredictorClient(address) as client:
            client.wait_until_ready(timeout_s=STAGE_TIMEOUT_S)
        progress.update(serve, completed=1)
    finally:
        observer.stop()
        watching.join()
        bus.close()
    trained = services.logged("trainer", "model trained")
    [snapshot] = [line["snapshot_id"] for line in services.logged("trainer", "snapshot taken")][-1:] or [""]
    video_id = min(counts.embedded_thumbnails)
    sample = sample_call(address, video_id, "")
    evaluation = _evaluate(env, snapshot, progress) if snapshot else None
    return StackDemoResult(
        counts, trained, evaluation, snapshot, address, sample, client_example(address, video_id),
        time.perf_counter() - started,
    )  # fmt: skip


def _wait_drained(services: Services, counts: Counts, progress: Progress) -> None:
    task = progress.add_task("preprocessor + embedding (processes)", total=None)
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not counts.drained():
        services.check_alive()
        if time.monotonic() > deadline:
            raise Unavailable(f"the pipeline did not drain within {STAGE_TIMEOUT_S:.0f}s; logs in {services.logs}")
        progress.update(task, total=len(counts.discovered) or None, completed=counts.accounted())
        time.sleep(0.5)
    progress.update(task, total=len(counts.discovered), completed=counts.accounted())


def wait_listening(services: Services, name: str, message: str) -> str:
    """The loopback address a service logged `message` with (its "port"), once it has."""
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        services.check_alive()
        found = services.logged(name, message)
        if found:
            return f"127.0.0.1:{found[-1]['port']}"
        time.sleep(0.2)
    raise Unavailable(f"{name} did not start listening within {STAGE_TIMEOUT_S:.0f}s:\n{services.tail(name)}")


def _evaluate(env: dict[str, str], snapshot_id: str, progress: Progress) -> Report:
    task = progress.add_task("evaluation (trainer's snapshot, from S3)", total=1)
    settings = TubelensSettings(_env_file=None, **_settings_from(env))
    store = open_store(settings)
    table = load_snapshot(store, snapshot_id).table
    report = evaluate_all(table, seed=SEED, quiet=True, store=store)
    progress.update(task, completed=1)
    return report


def _settings_from(env: dict[str, str]) -> dict:
    return {
        "bus": "kafka",
        "objects": "s3",
        "kafka": {"bootstrap": env["TUBELENS_KAFKA__BOOTSTRAP"]},
        "s3": {
            "endpoint": env["TUBELENS_S3__ENDPOINT"],
            "access_key": env["TUBELENS_S3__ACCESS_KEY"],
            "secret_key": env["TUBELENS_S3__SECRET_KEY"],
        },
    }


def service_env(stack_env: dict[str, str], youtube_env: dict[str, str], workdir: Path) -> dict[str, str]:
    """What every service process gets: this environment, the stack's addresses, the stand-in's settings
    (`FakeYouTube.env`), loopback gRPC and state under `workdir`. Ports are 0 (any free one) unless overridden."""
    return {
        **os.environ,
        **stack_env,
        **youtube_env,
        "TUBELENS_ENV_FILE": str(workdir / "no.env"),  # everything comes from here, not from a stack.env elsewhere
        "TUBELENS_KAFKA__SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
        "TUBELENS_METRICS_PORT": "0",
        "TUBELENS_CRAWLER__STATE_PATH": str(workdir / "crawler.sqlite"),
        "TUBELENS_EMBEDDING__GRPC_HOST": "127.0.0.1",
        "TUBELENS_EMBEDDING__GRPC_PORT": "0",
        "TUBELENS_TRAINER__IDLE_S": "3",
        "TUBELENS_PREDICTOR__WORKDIR": str(workdir / "predictor"),
        "TUBELENS_PREDICTOR__API__GRPC_HOST": "127.0.0.1",
        "TUBELENS_PREDICTOR__API__GRPC_PORT": "0",
    }


def report_stack(result: StackDemoResult, workdir: Path, console: Console) -> None:
    counts = result.counts
    table = Table(title="tubelens demo --stack: every service a process of its own, over the local stack")
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, count in (
        ("videos discovered", len(counts.discovered)),
        ("thumbnails stored", len(counts.thumbnails)),
        ("videos with frames and audio", len(counts.frames)),
        ("thumbnails embedded and indexed", len(counts.embedded_thumbnails)),
        ("videos with frames embedded", len(counts.embedded_frames)),
        ("dead-lettered", len(counts.dead_letters)),
        ("dataset snapshot", result.snapshot_id),
        ("seconds", f"{result.seconds:.1f}"),
    ):
        table.add_row(what, str(count))
    console.print(table)
    for video_id, reason in sorted(counts.dead_letters.items()):
        console.print(f"DLQ {video_id}: {reason[:140]}")
    if result.evaluation is not None:
        result.evaluation.render(console)
    models = Table(title="models the trainer process registered (promoted = served by default)")
    for column in ("task", "version", "promoted"):
        models.add_column(column)
    for line in result.trained:
        models.add_row(line["task"], line["version"], "yes" if line["promoted"] else "no")
    console.print(models)
    if result.sample is not None:
        popularity = result.sample.popularity
        console.print(
            f"predictor process (TorchServe behind it) at {result.address}: PredictPopularity answered by "
            f"{result.sample.model.name} {result.sample.model.version}: {popularity.expected_views:,.0f} views expected"
        )
    console.print(f"service logs in {workdir / 'logs'}; the stack was stopped")
    kinds = Counter(reason.split(":")[0] for reason in counts.dead_letters.values())
    if kinds:
        console.print("dead letters by cause: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
