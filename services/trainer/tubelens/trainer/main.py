"""`tubelens trainer run`: training runs on demand, on a stored snapshot, or as a long-running service.

- `--task T ...` (on demand): catch up on the events, take a snapshot, train, record the run, exit.
- `--snapshot ID`: train on a snapshot already in the object store, consuming no events. A Kubernetes Job runs this.
- `--serve`: consume the events continuously and start a run whenever the trigger fires (`triggers.py`: a schedule,
  or enough newly labelled videos, never closer than a minimum interval); /metrics; SIGTERM stops it cleanly.

Each run trains where `--executor` (TUBELENS_TRAINER__EXECUTOR) says: `local` in this process, `kubernetes` as a Job
on the snapshot this process wrote (`jobs.py`), which records the run itself. Every run, failed ones too, leaves
`runs/<run_id>.json` (`provenance.py`).

The dataset builder is an in-memory fold of the topics, so every start replays them from the beginning under a
consumer group of its own: a shared group's committed offsets would hand a second run only the events that arrived
since the first.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
from prometheus_client import Counter, Gauge, Histogram

from tubelens import events
from tubelens.bus import Bus, Message, Producer, Worker, counted, open_bus, retry_policy
from tubelens.errors import ConfigError, InvalidInput, NotFound, TubelensError, Unavailable
from tubelens.lifecycle import on_stop_signals
from tubelens.logs import configure_logging
from tubelens.metrics import serve_metrics
from tubelens.modelkit.registry import ModelRegistry
from tubelens.modelkit.snapshots import load_snapshot, manifest_key
from tubelens.objects import ObjectStore, open_store
from tubelens.settings import load_settings
from tubelens.trainer.dataset import CONSUMED_TOPICS, DatasetBuilder
from tubelens.trainer.jobs import (
    RUN_ID_ANNOTATION,
    JobSpec,
    JobWatchStopped,
    batch_api_from_environment,
    launch_and_watch,
    render_training_job,
)
from tubelens.trainer.provenance import (
    Outcome,
    RunRecord,
    TaskResult,
    Trigger,
    check_run_id,
    code_version,
    device_name,
    host_name,
    load_run,
    new_run_id,
    record_run,
    run_key,
    utc_iso,
)
from tubelens.trainer.settings import Executor, TrainerServiceSettings
from tubelens.trainer.train import DEFAULT_TASKS, SPECS, run_training
from tubelens.trainer.triggers import LabelledVideos, TrainingTrigger, TriggerPolicy

log = logging.getLogger(__name__)

RUNS = Counter(
    "tubelens_trainer_runs_total", "Training runs by what started them and how they ended", ["trigger", "outcome"]
)
LAST_RUN = Gauge("tubelens_trainer_last_run_timestamp_seconds", "Start of the last successful training run (unix time)")
LABELLED_SINCE_LAST_RUN = Gauge(
    "tubelens_trainer_labelled_videos_since_last_run", "Videos that became complete since the last successful run"
)
RUN_SECONDS = Histogram(
    "tubelens_trainer_run_duration_seconds",
    "Wall time of a training run, snapshot excluded",
    ["executor"],
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800),
)


@dataclass(frozen=True)
class RunRequest:
    """What one run trains, and why."""

    tasks: tuple[str, ...]
    seed: int
    trigger: Trigger
    run_id: str
    started: datetime


def run(args: argparse.Namespace) -> int:
    settings = load_settings(TrainerServiceSettings)
    configure_logging(settings.service, settings.log_level)
    tasks = _tasks(args.task)
    seed = settings.trainer.seed if args.seed is None else args.seed
    executor = Executor(args.executor or settings.trainer.executor)
    if args.snapshot is None and (args.run_id is not None or args.trigger is not None):
        raise InvalidInput("--run-id and --trigger describe a --snapshot run (what a training Job is given)")
    bus, store = open_bus(settings), open_store(settings)
    producer = counted(bus.producer(), settings.service)
    try:
        runner = Runner(settings, store, producer, executor)
        if args.snapshot is not None:
            return _train_stored_snapshot(runner, args, tasks, seed)
        if args.serve:
            return _serve(settings, bus, producer, runner, tasks, seed)
        return _on_demand(settings, bus, producer, runner, tasks, seed)
    finally:
        producer.close()
        bus.close()


def _tasks(asked: list[str] | None) -> tuple[str, ...]:
    tasks = tuple(dict.fromkeys(asked or DEFAULT_TASKS))  # repeated tasks train once
    unknown = [task for task in tasks if task not in SPECS]
    if unknown:
        raise InvalidInput(f"unknown task {', '.join(map(repr, unknown))}; known: {', '.join(SPECS)}", field="task")
    return tasks


# the three modes


def _train_stored_snapshot(runner: Runner, args: argparse.Namespace, tasks: tuple[str, ...], seed: int) -> int:
    started = _now()
    run_id = check_run_id(args.run_id) if args.run_id else new_run_id(started)
    request = RunRequest(tasks, seed, Trigger(args.trigger or Trigger.ON_DEMAND), run_id, started)
    runner.execute(request, args.snapshot)
    return 0


def _on_demand(
    settings: TrainerServiceSettings, bus: Bus, producer: Producer, runner: Runner, tasks: tuple[str, ...], seed: int
) -> int:
    feed = _Feed(DatasetBuilder(runner.store), LabelledVideos())
    worker = _worker(settings, bus, producer, feed, runner.store)
    stopped = threading.Event()
    on_stop_signals(stopped.set)
    thread = worker.start_thread()
    caught_up = _wait_until_caught_up(worker, feed, settings.trainer.idle_s, stopped)
    worker.stop()
    thread.join()
    if not caught_up:
        return 0
    started = _now()
    snapshot = feed.builder.snapshot(seed=seed)
    log.info("snapshot taken", extra={"snapshot_id": snapshot.id, "rows": snapshot.table.num_rows})
    runner.execute(
        RunRequest(tasks, seed, Trigger.ON_DEMAND, new_run_id(started), started), snapshot.id, snapshot.table
    )
    return 0


def _serve(
    settings: TrainerServiceSettings, bus: Bus, producer: Producer, runner: Runner, tasks: tuple[str, ...], seed: int
) -> int:
    trainer = settings.trainer
    metrics_server = serve_metrics(settings.metrics_port, service=settings.service)
    log.info("metrics listening", extra={"port": metrics_server.port})
    feed = _Feed(DatasetBuilder(runner.store), LabelledVideos())
    policy = TriggerPolicy(trainer.schedule_s, trainer.new_labels, trainer.min_interval_s)
    trigger = TrainingTrigger(policy, runner.store, labelled_count=feed.labelled.count)
    if trigger.state.last_run_at is not None:
        LAST_RUN.set(trigger.state.last_run_at.timestamp())
    log.info("serving", extra={"policy": vars(policy), "trigger_state": trigger.state.to_dict(), "tasks": tasks})
    worker = _worker(settings, bus, producer, feed, runner.store)
    stopped = runner.stop

    def stop() -> None:
        stopped.set()
        worker.stop()

    on_stop_signals(stop)
    thread = worker.start_thread()
    try:
        # Until the replay is done the count is climbing back to where it was: no decision is taken on it.
        if _wait_until_caught_up(worker, feed, trainer.idle_s, stopped):
            log.info("caught up", extra={"labelled_videos": feed.labelled.count()})
        while not stopped.wait(trainer.tick_s):
            worker.raise_if_dead()  # a dead consume loop ends the process (non-zero), it does not idle on
            decision = trigger.check()
            LABELLED_SINCE_LAST_RUN.set(decision.labelled_since_last_run)
            if decision.fire:
                log.info("training triggered", extra={"trigger": decision.reason, "why": decision.detail})
                _triggered_run(runner, trigger, feed.builder, decision.reason, tasks, seed)
    finally:
        worker.stop()
        thread.join()
        metrics_server.stop()
    return 0


def _triggered_run(
    runner: Runner,
    trigger: TrainingTrigger,
    builder: DatasetBuilder,
    reason: Trigger,
    tasks: tuple[str, ...],
    seed: int,
) -> None:
    """One run the trigger asked for. A failure is logged and counted, and the service carries on: the attempt was
    recorded first, so the next one waits out the minimum interval."""
    started, labelled = trigger.attempt_started()
    request = RunRequest(tasks, seed, reason, new_run_id(started), started)
    try:
        snapshot = builder.snapshot(seed=seed)
    except TubelensError as exc:
        runner.record_failure(request, "", exc)
        log.error("training run failed", extra={"run_id": request.run_id, "error": exc.message})
        return
    log.info("snapshot taken", extra={"snapshot_id": snapshot.id, "rows": snapshot.table.num_rows})
    try:
        runner.execute(request, snapshot.id, snapshot.table)
    except JobWatchStopped:
        return  # the Job runs on and records its own run
    except TubelensError as exc:
        log.error("training run failed", extra={"run_id": request.run_id, "error": exc.message})
        return
    trigger.run_succeeded(started, labelled)
    LABELLED_SINCE_LAST_RUN.set(trigger.check().labelled_since_last_run)


# consuming


class _Feed:
    """Folds each event into the dataset builder and the labelled-video count; remembers when the last arrived."""

    def __init__(self, builder: DatasetBuilder, labelled: LabelledVideos) -> None:
        self.builder = builder
        self.labelled = labelled
        self.last_event = time.monotonic()

    def __call__(self, message: Message) -> None:
        envelope = events.decode(message.value)  # a malformed message raises InvalidInput and is dead-lettered
        self.builder.handle(envelope)
        self.labelled.note(envelope)
        self.last_event = time.monotonic()


def _worker(
    settings: TrainerServiceSettings, bus: Bus, producer: Producer, feed: _Feed, store: ObjectStore
) -> Worker:
    # A group of its own on every start: the in-memory builder needs every event again (see the module docstring).
    group = f"trainer-{uuid.uuid4().hex[:12]}"
    return Worker(
        bus,
        list(CONSUMED_TOPICS),
        group,
        feed,
        service=settings.service,
        producer=producer,
        retry=retry_policy(settings),
        max_batch=settings.consumer.batch_size,
        claims=store,
        seen_ids=settings.consumer.seen_ids,
    )


def _wait_until_caught_up(worker: Worker, feed: _Feed, idle_s: float, stopped: threading.Event) -> bool:
    """True once no event arrived for `idle_s` after the worker joined its group; False when stopped first."""
    while not stopped.wait(0.5):
        worker.raise_if_dead()
        if not worker.assignment():  # still joining the group: nothing could have arrived yet
            feed.last_event = time.monotonic()
        elif time.monotonic() - feed.last_event >= idle_s:
            return True
    return False


# running


class Runner:
    """Trains a stored snapshot, in this process or as a Kubernetes Job, and records the run."""

    def __init__(
        self, settings: TrainerServiceSettings, store: ObjectStore, producer: Producer, executor: Executor
    ) -> None:
        self.settings = settings
        self.store = store
        self.producer = producer
        self.executor = executor
        self.stop = threading.Event()  # set on SIGTERM by --serve: a launcher stops watching its Job
        self.batch_api = None
        if executor is Executor.KUBERNETES:
            if not settings.trainer.kubernetes.image:
                raise ConfigError("TUBELENS_TRAINER__KUBERNETES__IMAGE: required when the executor is kubernetes")
            self.batch_api = batch_api_from_environment()

    def execute(self, request: RunRequest, snapshot_id: str, table: pa.Table | None = None) -> RunRecord:
        """Train `snapshot_id` (whose table the local executor loads unless given) and return the recorded run."""
        began = time.monotonic()
        try:
            if self.executor is Executor.LOCAL:
                record = self._train_here(request, snapshot_id, table)
            else:
                record = self._train_in_job(request, snapshot_id)
        except JobWatchStopped:
            raise
        except Exception as exc:
            self.record_failure(request, snapshot_id, exc)
            raise
        RUN_SECONDS.labels(self.executor.value).observe(time.monotonic() - began)
        RUNS.labels(record.trigger.value, Outcome.SUCCEEDED.value).inc()
        LAST_RUN.set(request.started.timestamp())
        _log_results(record)
        return record

    def record_failure(self, request: RunRequest, snapshot_id: str, exc: Exception) -> None:
        """Count the failure and record it, unless the Job already recorded its own outcome for this run."""
        RUNS.labels(request.trigger.value, Outcome.FAILED.value).inc()
        if self.executor is Executor.KUBERNETES and self.store.exists(run_key(request.run_id)):
            return
        error = exc.message if isinstance(exc, TubelensError) else f"{type(exc).__name__}: {exc}"
        record = self._record(request, snapshot_id, Outcome.FAILED, error=error)
        record_run(self.store, record)
        log.info("run recorded", extra={"run_id": record.run_id, "outcome": record.outcome, "error": error})

    def _train_here(self, request: RunRequest, snapshot_id: str, table: pa.Table | None) -> RunRecord:
        if table is None:
            table = load_snapshot(self.store, snapshot_id).table
        results = run_training(
            table,
            snapshot_id,
            list(request.tasks),
            registry=ModelRegistry(self.store),
            producer=self.producer,
            seed=request.seed,
            # A scheduled or default run still trains what the snapshot supports when one task cannot be trained.
            skip_unsupported=True,
            require_beating_baselines=self.settings.trainer.require_beating_baselines,
        )
        outcomes = tuple(TaskResult(r.entry.task, r.entry.version, r.promoted, r.replaced, r.metrics) for r in results)
        record = self._record(request, snapshot_id, Outcome.SUCCEEDED, results=outcomes)
        record_run(self.store, record)
        return record

    def _train_in_job(self, request: RunRequest, snapshot_id: str) -> RunRecord:
        """The Job records the run under the id it was given; the launcher reads it back."""
        kubernetes = self.settings.trainer.kubernetes
        if not self.store.exists(manifest_key(snapshot_id)):
            raise NotFound(f"no dataset snapshot {snapshot_id} in the object store", field="snapshot")
        spec = JobSpec(snapshot_id, request.tasks, kubernetes, request.seed, request.run_id, request.trigger.value)
        job = launch_and_watch(
            render_training_job(spec),
            kubernetes.namespace,
            self.batch_api,
            timeout_s=kubernetes.timeout_s,
            stop=self.stop,
        )
        # A Job found already created (a restarted launcher) carries the run id it was first given.
        run_id = (job.metadata.annotations or {}).get(RUN_ID_ANNOTATION, request.run_id)
        try:
            return load_run(self.store, run_id)
        except NotFound:
            raise Unavailable(f"training job {job.metadata.name} completed but recorded no run {run_id}") from None

    def _record(
        self,
        request: RunRequest,
        snapshot_id: str,
        outcome: Outcome,
        *,
        results: tuple[TaskResult, ...] = (),
        error: str = "",
    ) -> RunRecord:
        here = self.executor is Executor.LOCAL
        return RunRecord(
            run_id=request.run_id,
            trigger=request.trigger,
            tasks=request.tasks,
            seed=request.seed,
            snapshot_id=snapshot_id,
            code_version=code_version(),
            host=host_name(),
            device=device_name() if here else "",  # the Job's device is for the Job to record
            executor=self.executor.value,
            started_at=utc_iso(request.started),
            finished_at=utc_iso(_now()),
            outcome=outcome,
            error=error,
            results=results,
        )


def _log_results(record: RunRecord) -> None:
    for result in record.results:
        log.info(
            "model trained",
            extra={
                "run_id": record.run_id,
                "task": result.task,
                "version": result.version,
                "promoted": result.promoted,
                "metrics": result.metrics,
            },
        )
    log.info(
        "run recorded",
        extra={
            "run_id": record.run_id,
            "trigger": record.trigger,
            "snapshot_id": record.snapshot_id,
            "outcome": record.outcome,
            "code_version": record.code_version,
            "device": record.device,
        },
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
