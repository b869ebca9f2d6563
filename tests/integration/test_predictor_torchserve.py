"""The TorchServe adapter against a real TorchServe on free ports: versions loaded through the management API answer
as they do in process, its failures come back typed, and a dead server is Unavailable within the call's budget."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.predictorkit import FEATURES, TOLERANCE, WARMUP, Heads, body, predictions, train_heads
from tubelens.devtools.servers import LOOPBACK, ServerProcess, start_torchserve
from tubelens.errors import InvalidInput, NotFound, Unavailable
from tubelens.predictor.inprocess import InProcessRuntime
from tubelens.predictor.runtime import CallBudget
from tubelens.predictor.torchserve import TorchServeRuntime

TASK = "views"


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> Heads:
    return train_heads(tmp_path_factory.mktemp("heads"))


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("ts")
    server = start_torchserve(root / "server", model_store=root / "store")
    try:
        yield server, root / "store"
    finally:
        server.stop()


def _runtime(server: ServerProcess, store: Path, budget: CallBudget = CallBudget()) -> TorchServeRuntime:  # noqa: B008
    return TorchServeRuntime(
        f"http://{LOOPBACK}:{server.ports['inference']}",
        f"http://{LOOPBACK}:{server.ports['management']}",
        store,
        budget=budget,
        load_timeout_s=120,
    )


@pytest.fixture(scope="module")
def runtime(torchserve: tuple[ServerProcess, Path], heads: Heads) -> Iterator[TorchServeRuntime]:
    """Version 1 loaded, as the module's tests find it."""
    runtime = _runtime(*torchserve)
    runtime.load(TASK, "1", heads.archives["1"], warmup=WARMUP)
    yield runtime
    runtime.close()


def test_a_loaded_version_answers_as_it_does_in_process(
    heads: Heads, runtime: TorchServeRuntime, tmp_path: Path
) -> None:
    in_process = InProcessRuntime(tmp_path)
    in_process.load(TASK, "1", heads.archives["1"])

    served = runtime.predict(TASK, "1", body(heads.rows))

    assert np.abs(predictions(served) - heads.expected("1")).max() <= TOLERANCE
    assert np.abs(predictions(served) - predictions(in_process.predict(TASK, "1", body(heads.rows)))).max() <= TOLERANCE
    assert (TASK, "1") in runtime.loaded()
    assert runtime.platform == "torchserve"
    in_process.close()


def test_a_request_the_handler_rejects_is_invalid_input_with_its_message(
    heads: Heads, runtime: TorchServeRuntime
) -> None:
    with pytest.raises(InvalidInput, match=f"each row needs {FEATURES} features"):
        runtime.predict(TASK, "1", body(np.zeros((2, FEATURES + 1))))
    with pytest.raises(InvalidInput, match="expected a JSON object"):
        runtime.predict(TASK, "1", {"rows": []})


def test_an_unknown_task_or_version_is_not_found(heads: Heads, runtime: TorchServeRuntime) -> None:
    with pytest.raises(NotFound, match="Model version: 9 does not exist"):
        runtime.predict(TASK, "9", body(heads.rows))
    with pytest.raises(NotFound, match="Model not found: nope"):
        runtime.predict("nope", "1", body(heads.rows))
    with pytest.raises(NotFound):
        runtime.unload(TASK, "9")


def test_an_archive_packaged_as_another_version_is_refused(heads: Heads, runtime: TorchServeRuntime) -> None:
    with pytest.raises(InvalidInput, match="packaged as version '1', not '7'"):
        runtime.load(TASK, "7", heads.archives["1"])

    assert runtime.versions(TASK) == ["1"]


def test_a_second_version_loads_beside_the_first_and_the_first_unloads(
    heads: Heads, torchserve: tuple[ServerProcess, Path]
) -> None:
    # A task of its own, so the module's shared version 1 of TASK stays as the other tests expect it.
    task, store = "views_unload", torchserve[1]
    runtime = _runtime(*torchserve)
    runtime.load(task, "1", heads.archives["1"])  # no warm-up request: waits for a READY worker instead
    runtime.load(task, "2", heads.archives["2"], warmup=WARMUP)

    assert runtime.versions(task) == ["1", "2"]
    for version in ("1", "2"):
        assert heads.version_of(runtime.predict(task, version, body(heads.rows))) == version

    runtime.set_default(task, "2")  # TorchServe refuses to delete its default version while others exist
    runtime.unload(task, "1")

    assert runtime.versions(task) == ["2"]
    assert not (store / f"{task}-1.mar").exists()
    assert heads.version_of(runtime.predict(task, "2", body(heads.rows))) == "2"
    with pytest.raises(NotFound):
        runtime.predict(task, "1", body(heads.rows))
    runtime.unload(task, "2")
    assert runtime.versions(task) == []
    runtime.close()


def test_a_dead_torchserve_is_unavailable_after_bounded_retries(heads: Heads, tmp_path: Path) -> None:
    server = start_torchserve(tmp_path / "server", model_store=tmp_path / "store")
    try:
        runtime = _runtime(server, tmp_path / "store", CallBudget(attempts=3, deadline_s=30, backoff_initial_s=0.01))
        runtime.load(TASK, "1", heads.archives["1"], warmup=WARMUP)
        assert heads.version_of(runtime.predict(TASK, "1", body(heads.rows))) == "1"  # a pooled connection is open
    finally:
        server.stop()
    assert not server.alive()

    with pytest.raises(Unavailable, match=r"no answer after 3 attempt\(s\)"):
        runtime.predict(TASK, "1", body(heads.rows))

    # With attempts to spare, the deadline is what ends the call.
    patient = _runtime(server, tmp_path / "store", CallBudget(attempts=10_000, deadline_s=1, backoff_initial_s=0.01))
    with pytest.raises(Unavailable, match=r"within 1s") as raised:
        patient.predict(TASK, "1", body(heads.rows))
    attempts = int(re.search(r"after (\d+) attempt", str(raised.value)).group(1))
    assert 1 < attempts < 10_000
    runtime.close()
    patient.close()
