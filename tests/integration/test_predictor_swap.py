"""Zero-downtime model swaps on a real TorchServe: while clients keep asking, a promoted version is loaded, the default
moves to it, and the old version is unloaded once its requests are done; not one request fails, and no client sees
the old version's answers again once it has seen the new one's. Once called directly, once through the bus."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.predictorkit import WARMUP, Heads, body, local_registry, publish_versions, train_heads, wait_for
from tubelens import events
from tubelens.bus import Message, Worker, dlq_topic
from tubelens.bus.memory import MemoryBus
from tubelens.devtools.servers import LOOPBACK, ServerProcess, start_torchserve
from tubelens.modelkit.registry import ModelRegistry, model_trained_event
from tubelens.predictor.models import ModelManager
from tubelens.predictor.runtime import CallBudget
from tubelens.predictor.swap import swap_handler
from tubelens.predictor.torchserve import TorchServeRuntime
from tubelens.v1 import events_pb2

CLIENTS = 4
ANSWERS_EACH_SIDE = 25  # per client, before the swap starts and after it is done
PACE_S = 0.005  # between one client's requests: leave the two cores some room for TorchServe's new worker


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> Heads:
    return train_heads(tmp_path_factory.mktemp("heads"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, heads: Heads) -> ModelRegistry:
    registry = local_registry(tmp_path_factory.mktemp("objects"))
    for task in ("views", "views_bus"):
        publish_versions(registry, heads, task)
    return registry


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator[ServerProcess]:
    server = start_torchserve(tmp_path_factory.mktemp("ts"), model_store=model_store)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def manager(
    torchserve: ServerProcess, model_store: Path, registry: ModelRegistry, tmp_path: Path
) -> Iterator[ModelManager]:
    runtime = TorchServeRuntime(
        f"http://{LOOPBACK}:{torchserve.ports['inference']}",
        f"http://{LOOPBACK}:{torchserve.ports['management']}",
        model_store,
        budget=CallBudget(attempts=3, deadline_s=30),
        load_timeout_s=120,
    )
    yield ModelManager(registry, runtime, tmp_path / "predictor", lambda task: WARMUP)
    runtime.close()


@dataclass
class Traffic:
    """Clients calling `manager.predict(task, ...)` in a loop, each recording (started, answered version) in order."""

    manager: ModelManager
    task: str
    heads: Heads
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[list[tuple[float, str]]] = field(default_factory=lambda: [[] for _ in range(CLIENTS)])
    failures: list[BaseException] = field(default_factory=list)

    def client(self, index: int) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                prediction = self.manager.predict(self.task, body(self.heads.rows))
                version = self.heads.version_of(prediction.rows)
                assert prediction.version == version, "the answer is not the version the manager says answered"
            except BaseException as exc:  # noqa: BLE001 - every failure is a finding of the test
                self.failures.append(exc)
            else:
                self.answers[index].append((started, version))
            time.sleep(PACE_S)

    def count(self, version: str) -> int:
        """The fewest answers of `version` any one client has had."""
        return min(sum(1 for _, answered in client if answered == version) for client in self.answers)

    def run_around(self, swap: Callable[[], None]) -> float:
        """Traffic before, during and after `swap()`; returns when the swap was done."""
        threads = [threading.Thread(target=self.client, args=(index,), daemon=True) for index in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: self.count("1") >= ANSWERS_EACH_SIDE or bool(self.failures), "traffic on version 1")
            swap()
            done = time.monotonic()
            wait_for(lambda: self.count("2") >= ANSWERS_EACH_SIDE or bool(self.failures), "traffic on version 2")
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()
        return done


def _described_versions(server: ServerProcess, path: str) -> list[str]:
    url = f"http://{LOOPBACK}:{server.ports['management']}/models/{path}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return [model["modelVersion"] for model in json.load(response)]


def _promote(registry: ModelRegistry, task: str) -> events_pb2.ModelTrained:
    """What the trainer does when version 2 beats version 1: move the production pointer, then tell."""
    registry.promote(task, "2", reason="better")
    return model_trained_event(registry.entry(task, "2"), promoted=True, replaces="1")


def _assert_clean_switch(traffic: Traffic, swap_done: float) -> None:
    assert traffic.failures == []
    for client in traffic.answers:
        versions = [version for _, version in client]
        switch = versions.index("2")
        # Version 1 until some instant, version 2 from then on: never back.
        assert versions[:switch] == ["1"] * switch and switch >= ANSWERS_EACH_SIDE
        assert versions[switch:] == ["2"] * (len(versions) - switch)
        assert all(version == "2" for started, version in client if started > swap_done)


def test_a_promoted_version_replaces_the_default_under_traffic_without_a_failed_request(
    heads: Heads, registry: ModelRegistry, manager: ModelManager, torchserve: ServerProcess
) -> None:
    task = "views"
    manager.start([task])
    assert _described_versions(torchserve, f"{task}/all") == ["1"]
    traffic = Traffic(manager, task, heads)
    outcomes: list[str] = []

    swap_done = traffic.run_around(lambda: outcomes.append(manager.on_model_trained(_promote(registry, task))))

    assert outcomes == ["swapped"]
    _assert_clean_switch(traffic, swap_done)
    assert manager.default_version(task) == "2"
    assert _described_versions(torchserve, f"{task}/all") == ["2"]  # the old version is gone from TorchServe
    assert _described_versions(torchserve, task) == ["2"]  # and version 2 is its default there too


def test_a_models_trained_event_on_the_bus_swaps_under_traffic(
    heads: Heads, registry: ModelRegistry, manager: ModelManager, torchserve: ServerProcess
) -> None:
    task, group = "views_bus", "predictor-test"
    manager.start([task])
    bus = MemoryBus()
    handled = threading.Event()
    swap = swap_handler(manager)

    def handle(message: Message) -> None:
        swap(message)
        handled.set()

    worker = Worker(bus, [events.MODELS_TRAINED], group, handle, service="predictor")
    thread = worker.start_thread()
    assert worker.ready.wait(30)
    traffic = Traffic(manager, task, heads)

    def publish_and_wait() -> None:
        producer = bus.producer()
        events.publish(producer, _promote(registry, task), key=task, service="trainer", cause="test")
        producer.flush()
        assert handled.wait(120), "the worker never handled the event"

    try:
        swap_done = traffic.run_around(publish_and_wait)
    finally:
        worker.stop()
        thread.join()

    _assert_clean_switch(traffic, swap_done)
    assert _described_versions(torchserve, f"{task}/all") == ["2"]
    assert bus.broker.read_all(dlq_topic(events.MODELS_TRAINED)) == []
    [message] = bus.broker.read_all(events.MODELS_TRAINED)
    assert bus.broker.committed(group)[(message.topic, message.partition)] == 1  # handled, then committed
