"""The predictor's model layer without a model server: real archives run by the in-process runtime, routed and
swapped by the ModelManager exactly as they are over TorchServe."""

from __future__ import annotations

import json
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from tests.predictorkit import (
    FEATURES,
    LABELS,
    TOLERANCE,
    WARMUP,
    Heads,
    SwapDrill,
    body,
    broken_archive,
    local_registry,
    predictions,
    publish_versions,
    train_heads,
    wait_for,
)
from tubelens import events
from tubelens.bus import Message
from tubelens.errors import ConfigError, Conflict, InvalidInput, NotFound, Unavailable
from tubelens.modelkit.registry import ModelRegistry, model_trained_event
from tubelens.predictor.catalogue import Catalogue
from tubelens.predictor.core import PredictorCore
from tubelens.predictor.factory import open_runtime
from tubelens.predictor.inprocess import InProcessRuntime
from tubelens.predictor.models import NO_PRODUCTION, ModelManager, SwapFailed
from tubelens.predictor.readiness import ModelState, Readiness
from tubelens.predictor.runtime import Body, CallBudget, ModelServerError, Transient, with_retries
from tubelens.predictor.settings import PredictorServiceSettings, PredictorSettings, RuntimeKind
from tubelens.predictor.swap import swap_handler
from tubelens.settings import load_settings
from tubelens.v1 import events_pb2

TASK = "views"


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> Heads:
    return train_heads(tmp_path_factory.mktemp("heads"))


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[InProcessRuntime]:
    runtime = InProcessRuntime(tmp_path / "in-process")
    yield runtime
    runtime.close()


@pytest.fixture
def registry(tmp_path: Path, heads: Heads) -> ModelRegistry:
    registry = local_registry(tmp_path / "objects")
    publish_versions(registry, heads, TASK)
    return registry


@pytest.fixture
def manager(registry: ModelRegistry, runtime: InProcessRuntime, tmp_path: Path) -> ModelManager:
    manager = ModelManager(registry, runtime, tmp_path / "predictor", {TASK: WARMUP})
    manager.start([TASK, "genre"])
    return manager


def _promoted(registry: ModelRegistry, version: str, *, promote: bool = True) -> events_pb2.ModelTrained:
    """The trainer's side of a promotion: the registry's production pointer moves, then the event says so."""
    previous = registry.production(TASK)
    if promote:
        registry.promote(TASK, version)
    return model_trained_event(registry.entry(TASK, version), promoted=promote, replaces=previous)


def _swaps(outcome: str) -> float:
    return REGISTRY.get_sample_value("tubelens_predictor_model_swaps_total", {"task": TASK, "outcome": outcome}) or 0.0


# --- the runtime ----------------------------------------------------------------------------------------------------


def test_in_process_answers_equal_the_trained_heads(heads: Heads, runtime: InProcessRuntime) -> None:
    runtime.load(TASK, "1", heads.archives["1"], warmup=WARMUP)
    runtime.load("buckets", "1", heads.classifier_archive)

    served = predictions(runtime.predict(TASK, "1", body(heads.rows)))
    answers = runtime.predict("buckets", "1", body(heads.rows))

    assert np.abs(served - heads.expected("1")).max() <= TOLERANCE
    assert [answer["label"] for answer in answers] == list(heads.classifier.predict(heads.rows))
    assert all(answer["labels"] == LABELS for answer in answers)
    probabilities = np.array([answer["probabilities"] for answer in answers])
    assert np.abs(probabilities - heads.classifier.predict_proba(heads.rows)).max() <= TOLERANCE
    assert runtime.platform == "in-process"


def test_a_request_the_handler_rejects_is_invalid_input_with_its_message(
    heads: Heads, runtime: InProcessRuntime
) -> None:
    runtime.load(TASK, "1", heads.archives["1"])

    with pytest.raises(InvalidInput, match=f"each row needs {FEATURES} features"):
        runtime.predict(TASK, "1", body(np.zeros((2, FEATURES + 1))))
    with pytest.raises(InvalidInput, match="expected a JSON object"):
        runtime.predict(TASK, "1", {"rows": [[1.0] * FEATURES]})
    with pytest.raises(InvalidInput, match="not JSON"):
        runtime.predict(TASK, "1", {"features": {1.0, 2.0}})
    assert predictions(runtime.predict(TASK, "1", body(heads.rows))).shape == (len(heads.rows),)  # still serving


def test_without_torchserve_installed_the_handlers_own_bad_request_is_invalid_input(
    heads: Heads, runtime: InProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ts.utils.util", None)  # the embedded demo installs no TorchServe
    runtime.load(TASK, "1", heads.archives["1"])

    with pytest.raises(InvalidInput, match=f"each row needs {FEATURES} features"):
        runtime.predict(TASK, "1", body(np.zeros((1, FEATURES - 1))))


HANDLER = """
def handle(data, context):
    if data is None:
        return None
    request = data[0]["body"]
    if request.get("crash"):
        raise RuntimeError("the model fell over")
    context.set_response_status(400, "Bad Request", 0)
    return [{"code": 400, "type": "BadThing", "message": "no such thing: " + request["thing"]}]
"""


def _archive(path: Path, handler: str) -> Path:
    """A handler archive as torch-model-archiver lays it out: the handler file and MAR-INF/MANIFEST.json."""
    manifest = {"runtime": "python", "model": {"modelName": "t", "handler": "custom.py", "modelVersion": "1"}}
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        mar.writestr("custom.py", handler)
    return path


def test_a_handler_that_fails_a_request_by_status_or_by_crashing_gives_typed_errors(
    runtime: InProcessRuntime, tmp_path: Path
) -> None:
    runtime.load("custom", "1", _archive(tmp_path / "custom.mar", HANDLER))

    with pytest.raises(InvalidInput, match="no such thing: unicorn"):
        runtime.predict("custom", "1", {"thing": "unicorn"})
    with pytest.raises(ModelServerError, match="the handler failed: RuntimeError: the model fell over") as raised:
        runtime.predict("custom", "1", {"crash": True})
    assert raised.value.status == 500


def test_two_versions_of_one_task_answer_side_by_side(heads: Heads, runtime: InProcessRuntime) -> None:
    for version in ("1", "2"):
        runtime.load(TASK, version, heads.archives[version])

    assert runtime.loaded() == [(TASK, "1"), (TASK, "2")]
    for version in ("1", "2"):
        assert heads.version_of(runtime.predict(TASK, version, body(heads.rows))) == version

    runtime.unload(TASK, "1")

    assert heads.version_of(runtime.predict(TASK, "2", body(heads.rows))) == "2"
    with pytest.raises(NotFound, match="views 1"):
        runtime.predict(TASK, "1", body(heads.rows))
    with pytest.raises(NotFound):
        runtime.unload(TASK, "1")


def test_concurrent_requests_to_two_versions_each_get_their_own_answers(
    heads: Heads, runtime: InProcessRuntime
) -> None:
    for version in ("1", "2"):
        runtime.load(TASK, version, heads.archives[version])
    results: list[tuple[str, str]] = []

    def ask(version: str) -> None:
        for _ in range(20):
            results.append((version, heads.version_of(runtime.predict(TASK, version, body(heads.rows)))))

    threads = [threading.Thread(target=ask, args=(version,)) for version in ("1", "2", "1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 80
    assert all(asked == answered for asked, answered in results)


def test_an_archive_whose_handler_cannot_load_leaves_nothing_loaded(
    heads: Heads, runtime: InProcessRuntime, tmp_path: Path
) -> None:
    with pytest.raises(ModelServerError, match="failed to load"):
        runtime.load(TASK, "3", broken_archive(heads, tmp_path, "3"))

    assert runtime.loaded() == []
    assert not any((tmp_path / "in-process").iterdir())  # its unpacked files are gone too


def test_a_failing_call_is_retried_within_its_budget_then_unavailable() -> None:
    calls: list[float] = []

    def refused(left_s: float) -> None:
        calls.append(left_s)
        raise Transient("connection refused")

    with pytest.raises(Unavailable, match=r"3 attempt\(s\).*connection refused"):
        with_retries(refused, CallBudget(attempts=3, deadline_s=30, backoff_initial_s=0.001), "predict")
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(Unavailable, match="within 0.2s"):
        with_retries(refused, CallBudget(attempts=10_000, deadline_s=0.2, backoff_initial_s=0.01), "predict")
    assert 1 <= len(calls) < 10_000  # the deadline, not the attempts, ended it
    assert all(0 < left <= 0.2 for left in calls)  # each attempt got only the time left


# --- the manager ----------------------------------------------------------------------------------------------------


def test_the_manager_serves_each_tasks_production_version(
    heads: Heads, manager: ModelManager, registry: ModelRegistry
) -> None:
    answer = manager.predict(TASK, body(heads.rows))

    assert answer.version == "1"
    assert heads.version_of(answer.rows) == "1"
    statuses = {status.task: status for status in manager.status()}
    assert statuses[TASK].serving and statuses[TASK].version == "1"
    assert not statuses["genre"].serving and statuses["genre"].detail == NO_PRODUCTION
    [served] = manager.models()
    assert (served.task, served.version, served.is_default, served.platform) == (TASK, "1", True, "in-process")
    assert served.metrics == registry.entry(TASK, "1").metrics
    assert served.snapshot_id == registry.entry(TASK, "1").snapshot_id
    assert served.published_at == registry.entry(TASK, "1").published_at


def test_an_unknown_task_or_version_is_not_found_naming_what_is_loaded(heads: Heads, manager: ModelManager) -> None:
    with pytest.raises(NotFound, match=r"version '2' of 'views'.*loaded: views 1"):
        manager.predict(TASK, body(heads.rows), version="2")
    with pytest.raises(NotFound, match=rf"'genre' \({NO_PRODUCTION}\).*loaded: views 1"):
        manager.predict("genre", body(heads.rows))
    with pytest.raises(NotFound, match="'nope'"):
        manager.predict("nope", body(heads.rows))


def test_a_named_version_is_loaded_on_demand_beside_the_default(heads: Heads, manager: ModelManager) -> None:
    manager.load_version(TASK, "2")

    assert heads.version_of(manager.predict(TASK, body(heads.rows), version="2").rows) == "2"
    assert heads.version_of(manager.predict(TASK, body(heads.rows)).rows) == "1"
    assert [(m.version, m.is_default) for m in manager.models(TASK)] == [("1", True), ("2", False)]
    with pytest.raises(Conflict):
        manager.unload_version(TASK, "1")

    manager.unload_version(TASK, "2")

    assert manager.runtime.loaded() == [(TASK, "1")]


def test_a_bad_warmup_request_keeps_the_task_out_of_service(
    registry: ModelRegistry, runtime: InProcessRuntime, tmp_path: Path, heads: Heads
) -> None:
    manager = ModelManager(registry, runtime, tmp_path / "predictor", lambda task: {"features": [[1.0]]})
    manager.start([TASK])

    [status] = manager.status()
    assert not status.serving
    assert f"{FEATURES} features" in status.detail
    with pytest.raises(NotFound, match="failed to load"):
        manager.predict(TASK, body(heads.rows))
    assert runtime.loaded() == []


# --- swaps ----------------------------------------------------------------------------------------------------------


def test_a_promoted_version_replaces_the_default_and_the_old_one_is_unloaded(
    heads: Heads, manager: ModelManager, registry: ModelRegistry
) -> None:
    swapped = _swaps("swapped")

    outcome = manager.on_model_trained(_promoted(registry, "2"))

    assert outcome == "swapped"
    assert manager.default_version(TASK) == "2"
    answer = manager.predict(TASK, body(heads.rows))
    assert answer.version == "2" and heads.version_of(answer.rows) == "2"
    assert manager.runtime.loaded() == [(TASK, "2")]
    assert [(m.version, m.is_default) for m in manager.models()] == [("2", True)]
    assert _swaps("swapped") == swapped + 1
    info = "tubelens_predictor_default_version_info"
    assert REGISTRY.get_sample_value(info, {"task": TASK, "version": "2"}) == 1
    assert REGISTRY.get_sample_value(info, {"task": TASK, "version": "1"}) is None


def test_events_that_call_for_no_swap_change_nothing(
    heads: Heads, manager: ModelManager, registry: ModelRegistry
) -> None:
    not_promoted = _promoted(registry, "2", promote=False)
    assert manager.on_model_trained(not_promoted) == "ignored"
    assert manager.on_model_trained(_promoted(registry, "1")) == "noop"  # already the default
    # Promoted in the event, but the registry has not moved (or has moved on): a late redelivery must not roll back.
    stale = model_trained_event(registry.entry(TASK, "2"), promoted=True, replaces="1")
    assert manager.on_model_trained(stale) == "stale"
    elsewhere = events_pb2.ModelTrained(task="channel", version="9", promoted=True)
    assert manager.on_model_trained(elsewhere) == "ignored"  # a task this predictor does not serve

    assert manager.default_version(TASK) == "1"
    assert manager.runtime.loaded() == [(TASK, "1")]
    assert heads.version_of(manager.predict(TASK, body(heads.rows)).rows) == "1"


def test_a_swap_that_fails_to_load_leaves_the_old_default_serving(
    heads: Heads, manager: ModelManager, registry: ModelRegistry, tmp_path: Path
) -> None:
    registry.publish(TASK, "3", broken_archive(heads, tmp_path, "3"), {"mae": 0.1}, "snap", "test", "")
    failed = _swaps("failed")

    with pytest.raises(SwapFailed, match="to 3 failed, 1 still serves: views 3: the handler failed to load") as raised:
        manager.on_model_trained(_promoted(registry, "3"))

    assert not raised.value.retryable  # the archive stays broken: the worker dead-letters at once
    assert manager.default_version(TASK) == "1"
    assert manager.runtime.loaded() == [(TASK, "1")]
    assert heads.version_of(manager.predict(TASK, body(heads.rows)).rows) == "1"
    assert _swaps("failed") == failed + 1


class GatedRuntime(InProcessRuntime):
    """The in-process runtime, except that requests to one version wait at a gate the test opens."""

    def __init__(self, workdir: Path, gated_version: str) -> None:
        super().__init__(workdir)
        self.gated_version = gated_version
        self.entered = threading.Event()
        self.gate = threading.Event()

    def predict(self, task: str, version: str, body: Body) -> list[Body]:
        if version == self.gated_version:
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        return super().predict(task, version, body)


def test_the_old_version_is_unloaded_only_after_its_requests_in_flight_finish(
    heads: Heads, registry: ModelRegistry, tmp_path: Path
) -> None:
    runtime = GatedRuntime(tmp_path / "gated", gated_version="1")
    manager = ModelManager(registry, runtime, tmp_path / "predictor")
    manager.start([TASK])
    in_flight: dict[str, object] = {}
    request = threading.Thread(target=lambda: in_flight.update(answer=manager.predict(TASK, body(heads.rows))))
    request.start()
    assert runtime.entered.wait(60)
    swap = threading.Thread(target=manager.on_model_trained, args=(_promoted(registry, "2"),))
    swap.start()

    wait_for(lambda: manager.default_version(TASK) == "2", "the switch to version 2")
    # Switched: new requests go to version 2 while version 1 still holds a request, so it stays loaded.
    assert heads.version_of(manager.predict(TASK, body(heads.rows)).rows) == "2"
    assert (TASK, "1") in runtime.loaded()
    runtime.gate.set()
    request.join()
    swap.join()

    assert heads.version_of(in_flight["answer"].rows) == "1"  # the request in flight finished on its version
    assert runtime.loaded() == [(TASK, "2")]
    runtime.close()


def test_a_leased_version_answers_its_request_even_when_swapped_out_meanwhile(
    heads: Heads, manager: ModelManager, registry: ModelRegistry
) -> None:
    with manager.lease(TASK) as held:
        assert held.version == "1"
        manager_swap = threading.Thread(target=manager.on_model_trained, args=(_promoted(registry, "2"),))
        manager_swap.start()
        wait_for(lambda: manager.default_version(TASK) == "2", "the switch to version 2")
        # The default has moved and version 1 is no longer listed, but this request's lease keeps it loaded.
        assert [m.version for m in manager.models(TASK)] == ["2"]
        assert (TASK, "1") in manager.runtime.loaded()
        answer = manager.predict(TASK, body(heads.rows), lease=held)
        assert answer.version == "1" and heads.version_of(answer.rows) == "1"
        assert manager.leased_model(held).version == "1" and not manager.leased_model(held).is_default
    manager_swap.join()
    assert manager.runtime.loaded() == [(TASK, "2")]  # unloaded once the lease ended
    with pytest.raises(ValueError, match="a lease on views 2 cannot ask views 1"), manager.lease(TASK) as held:
        manager.predict(TASK, body(heads.rows), "1", lease=held)


def test_eight_clients_across_two_swaps_get_no_failed_request(
    heads: Heads, manager: ModelManager, registry: ModelRegistry
) -> None:
    drill = SwapDrill(manager, registry, heads, TASK, clients=8)

    drill.run(("2", "1"), seconds=3.0)

    assert drill.swaps == ["swapped", "swapped"]
    assert drill.failures == []
    assert drill.versions_seen == {"1", "2"} and drill.requests > 100
    assert manager.runtime.loaded() == [(TASK, "1")]


# --- the bus hook and the settings ----------------------------------------------------------------------------------


def _message(value: bytes) -> Message:
    return Message(events.MODELS_TRAINED, 0, 0, TASK.encode(), value)


def test_the_swap_handler_swaps_on_a_models_trained_message(
    heads: Heads, manager: ModelManager, registry: ModelRegistry
) -> None:
    envelope = events.wrap(_promoted(registry, "2"), producer="trainer")

    swap_handler(manager)(_message(events.encode(envelope)))

    assert manager.default_version(TASK) == "2"


def test_the_swap_handler_rejects_what_is_not_a_models_trained_event(manager: ModelManager) -> None:
    handle = swap_handler(manager)
    other = events.wrap(events_pb2.VideoDiscovered(video_id="v1"), producer="crawler")

    with pytest.raises(InvalidInput, match="not a tubelens.v1.Envelope"):
        handle(_message(b"\xff\x00 not protobuf"))
    with pytest.raises(InvalidInput, match="video_discovered, not model_trained"):
        handle(_message(events.encode(other)))
    with pytest.raises(InvalidInput, match="without task or version"):
        handle(_message(events.encode(events.wrap(events_pb2.ModelTrained(promoted=True), producer="trainer"))))
    assert manager.default_version(TASK) == "1"


@pytest.mark.usefixtures("clean_env")
def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_BUS", "memory")
    monkeypatch.setenv("TUBELENS_OBJECTS", "local")
    monkeypatch.setenv("TUBELENS_PREDICTOR__RUNTIME", "in-process")
    monkeypatch.setenv("TUBELENS_PREDICTOR__TASKS", '["popularity_bucket"]')
    monkeypatch.setenv("TUBELENS_PREDICTOR__DEADLINE_S", "2.5")
    monkeypatch.setenv("TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL", "http://ts:8081")

    settings = load_settings(PredictorServiceSettings).predictor

    assert settings.runtime is RuntimeKind.IN_PROCESS
    assert settings.tasks == ["popularity_bucket"]
    assert settings.deadline_s == 2.5
    assert settings.torchserve.management_url == "http://ts:8081"
    assert settings.torchserve.inference_url == ""  # unset: only the TorchServe runtime needs it


def test_the_torchserve_runtime_needs_its_addresses() -> None:
    settings = PredictorSettings(runtime=RuntimeKind.TORCHSERVE)
    with pytest.raises(ConfigError, match="TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL, .*MANAGEMENT_URL: required"):
        open_runtime(settings)


# --- readiness -------------------------------------------------------------------------------------------------------


def _readiness(manager: ModelManager, registry: ModelRegistry, workdir: Path, changes: list[bool]) -> Readiness:
    core = PredictorCore(
        manager,
        registry,
        embed=lambda images: np.zeros((len(images), 1280), np.float32),
        similar=lambda request: None,
        catalogue=Catalogue,
        load_array=lambda key: None,
        workdir=workdir,
    )
    return Readiness(core, on_change=changes.append)


def test_the_server_is_not_ready_while_a_served_task_has_no_warm_version(manager, registry, tmp_path: Path) -> None:
    changes: list[bool] = []
    readiness = _readiness(manager, registry, tmp_path, changes)  # serves TASK and genre; genre has no version
    assert not readiness.ready and changes == []
    readiness.warm_defaults()
    states = {state.task: state for state in readiness.states()}
    assert states[TASK].ready and not states["genre"].ready
    assert NO_PRODUCTION in states["genre"].detail
    assert not readiness.ready and changes == [False]
    with pytest.raises(NotFound) as unknown:
        readiness.model("nope", None)
    assert unknown.value.field == "model.name"


def test_readiness_turns_true_once_every_task_is_warm_and_survives_a_swap(registry, runtime, tmp_path: Path) -> None:
    manager = ModelManager(registry, runtime, tmp_path / "predictor", {TASK: WARMUP})
    manager.start([TASK])
    changes: list[bool] = []
    readiness = _readiness(manager, registry, tmp_path, changes)
    assert readiness.model(TASK, None) == ModelState(TASK, "1", False, "warming up")
    readiness.warm_defaults()
    assert readiness.ready and changes == [True] and readiness.model(TASK, None).ready

    assert manager.on_model_trained(_promoted(registry, "2")) == "swapped"
    assert readiness.ready, "a task that was warm stays ready while its new default warms: no flap on a swap"
    assert readiness.model(TASK, None) == ModelState(TASK, "2", False, "warming up")
    readiness.warm_defaults()
    assert readiness.model(TASK, "2").ready and changes == [True]
    assert readiness.model(TASK, "1") == ModelState(TASK, "1", False, "version '1' is not loaded")
