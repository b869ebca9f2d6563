"""The swap drill on a real TorchServe: 8 clients ask for 60 s while the default version is swapped twice (1 -> 2 ->
1); each request resolves its version the way the predictor's core does and holds it until answered. Not one request
may fail, and every answer must come from the version its request resolved. Prints the drill's row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.predictorkit import WARMUP, Heads, SwapDrill, local_registry, publish_versions, train_heads
from tubelens.devtools.servers import LOOPBACK, ServerProcess, start_torchserve
from tubelens.predictor.models import ModelManager
from tubelens.predictor.runtime import CallBudget
from tubelens.predictor.torchserve import TorchServeRuntime

TASK = "views"
CLIENTS = 8
SECONDS = 60.0
THINK_S = 0.005  # between resolving and asking, as the core's head read and embedding take


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> Heads:
    return train_heads(tmp_path_factory.mktemp("heads"))


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    store = tmp_path_factory.mktemp("store")
    server = start_torchserve(tmp_path_factory.mktemp("ts"), model_store=store)
    try:
        yield server, store
    finally:
        server.stop()


def test_eight_clients_for_a_minute_across_two_swaps_on_torchserve_fail_no_request(
    heads: Heads, torchserve: tuple[ServerProcess, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, store = torchserve
    registry = local_registry(tmp_path / "objects")
    publish_versions(registry, heads, TASK)
    runtime = TorchServeRuntime(
        f"http://{LOOPBACK}:{server.ports['inference']}",
        f"http://{LOOPBACK}:{server.ports['management']}",
        store,
        budget=CallBudget(attempts=3, deadline_s=30),
        pool_size=CLIENTS * 2,
        load_timeout_s=120,
    )
    try:
        manager = ModelManager(registry, runtime, tmp_path / "predictor", lambda task: WARMUP)
        manager.start([TASK])
        drill = SwapDrill(manager, registry, heads, TASK, clients=CLIENTS, think_s=THINK_S)

        drill.run(("2", "1"), seconds=SECONDS)

        with capsys.disabled():
            print(
                f"\nswap drill | {CLIENTS} clients, {SECONDS:g} s, swaps 1->2->1 on TorchServe | "
                f"requests {drill.requests} | failed {len(drill.failures)} | versions {sorted(drill.versions_seen)}"
            )
        assert drill.swaps == ["swapped", "swapped"]
        assert drill.failures == []
        assert drill.versions_seen == {"1", "2"}
        assert runtime.loaded() == [(TASK, "1")]  # version 2 unloaded once its last request ended
    finally:
        runtime.close()
