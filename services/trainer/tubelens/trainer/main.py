"""`tubelens trainer run --task T [--task T ...]`: catch up on the events, take a snapshot, train, register.

On demand today; the schedule and "after N new labelled videos" triggers come next.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

from pydantic import BaseModel, Field

from tubelens.bus import Message, Worker, open_bus, retry_policy
from tubelens.lifecycle import on_stop_signals
from tubelens.logs import configure_logging
from tubelens.objects import open_store
from tubelens.settings import TubelensSettings, load_settings
from tubelens.trainer.dataset import CONSUMED_TOPICS, DatasetBuilder
from tubelens.trainer.registry import ModelRegistry
from tubelens.trainer.train import SPECS, run_training

log = logging.getLogger(__name__)


class TrainerSettings(BaseModel):
    seed: int = 0
    idle_s: float = Field(default=5.0, gt=0, description="caught up once no event arrived for this long")


class TrainerServiceSettings(TubelensSettings):
    service: str = "trainer"
    trainer: TrainerSettings = TrainerSettings()


class _CatchUp:
    """Feeds the dataset builder and remembers when the last event arrived."""

    def __init__(self, builder: DatasetBuilder) -> None:
        self.builder = builder
        self.last_event = time.monotonic()

    def __call__(self, message: Message) -> None:
        self.builder.handler(message)
        self.last_event = time.monotonic()


def run(args: argparse.Namespace) -> int:
    settings = load_settings(TrainerServiceSettings)
    configure_logging(settings.service, settings.log_level)
    tasks = args.task or list(SPECS)
    bus, store = open_bus(settings), open_store(settings)
    producer = bus.producer()
    catch_up = _CatchUp(DatasetBuilder(store))
    worker = Worker(
        bus,
        list(CONSUMED_TOPICS),
        "trainer",
        catch_up,
        service=settings.service,
        producer=producer,
        retry=retry_policy(settings),
    )
    stopped = threading.Event()
    on_stop_signals(stopped.set)
    thread = worker.start_thread()
    while not stopped.wait(0.5) and time.monotonic() - catch_up.last_event < settings.trainer.idle_s:
        if not worker.assignment():  # still joining the group: nothing could have arrived yet
            catch_up.last_event = time.monotonic()
    worker.stop()
    thread.join()
    if stopped.is_set():
        return 0
    snapshot = catch_up.builder.snapshot(seed=settings.trainer.seed)
    log.info("snapshot taken", extra={"snapshot_id": snapshot.id, "rows": snapshot.table.num_rows})
    results = run_training(
        snapshot.table, snapshot.id, tasks, registry=ModelRegistry(store), producer=producer, seed=settings.trainer.seed
    )
    for result in results:
        log.info(
            "model trained",
            extra={
                "task": result.entry.task,
                "version": result.entry.version,
                "promoted": result.promoted,
                "metrics": result.metrics,
            },
        )
    producer.close()
    bus.close()
    return 0
