"""Trained heads packaged as TorchServe archives, kept in the model registry, served by a real TorchServe and answering
exactly as the heads do in process; promotion only for a candidate that beats production on the same held-out rows."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tubelens.devtools.servers import ServerProcess, start_torchserve
from tubelens.errors import Conflict, InvalidInput, NotFound
from tubelens.modelkit import ts_handler
from tubelens.modelkit.registry import ModelRegistry, RegistryEntry, model_trained_event, package_head
from tubelens.modelkit.schema import BUCKET_NAMES
from tubelens.objects import LocalObjectStore
from tubelens.trainer.heads import (
    Classifier,
    Regressor,
    TrainConfig,
    build_module,
    load_head,
    train_classifier,
    train_ridge,
)

LABELS = ["low", "mid", "high"]
FEATURES = 5
TOLERANCE = 1e-5


@dataclass
class Trained:
    classifier: Classifier
    regressor: Regressor
    head_dirs: dict[str, Path]
    rows: np.ndarray  # unseen rows to ask both ways


def _data(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Columns on different scales, so that a handler forgetting the standardization would answer differently.
    x = (rng.normal(size=(rows, FEATURES)) * [1, 10, 100, 0.1, 3] + [0, 5, -50, 1, 0]).astype(np.float32)
    score = x[:, 0] + x[:, 1] / 10 - x[:, 2] / 100
    buckets = np.digitize(score, [-0.7, 0.7])
    return x, np.asarray(LABELS, dtype=object)[buckets], 3 + score + rng.normal(0, 0.1, rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    x, labels, target = _data(seed=1, rows=240)
    config = TrainConfig(hidden=8, max_epochs=40, patience=5, seed=2)
    classifier = train_classifier(
        x[:180], labels[:180], x[180:], labels[180:], labels=LABELS, feature_set="metadata", config=config, quiet=True
    )
    # The popularity model's kind: a ridge regressor with a predictive spread.
    regressor = train_ridge(
        x[:180], target[:180], x[180:], target[180:], target="log10_views", feature_set="metadata", quiet=True
    )
    root = tmp_path_factory.mktemp("heads")
    head_dirs = {"buckets": root / "buckets", "views": root / "views"}
    classifier.save(head_dirs["buckets"])
    regressor.save(head_dirs["views"])
    return Trained(classifier, regressor, head_dirs, _data(seed=9, rows=7)[0])


def _registry(root: Path) -> ModelRegistry:
    store = LocalObjectStore(root, "registry")
    store.ensure_bucket()
    return ModelRegistry(store)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return _registry(tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def served(
    trained: Trained, registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, dict[str, Path]]]:
    """Both heads packaged, published, fetched back from the registry into a model store, and one TorchServe."""
    root = tmp_path_factory.mktemp("served")
    model_store = root / "model-store"
    fetched = {}
    for task, head_dir in trained.head_dirs.items():
        mar = package_head(head_dir, task=task, version="1.0", out_dir=root / "archives")
        registry.publish(task, "1.0", mar, {"accuracy": 0.5}, "20260101T000000Z-abcd0123", "test", f"# {task}\n")
        fetched[task] = registry.fetch_archive(task, "1.0", model_store)
    (root / "ts").mkdir()
    server = start_torchserve(root / "ts", model_store=model_store)
    try:
        yield server, fetched
    finally:
        server.stop()


def _request(method: str, url: str, body: object | None = None) -> tuple[int, object]:
    # A JSON content type on an empty management POST makes TorchServe read the (absent) body as the request.
    data, headers = (None, {}) if body is None else (json.dumps(body).encode(), {"Content-Type": "application/json"})
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _register(server: ServerProcess, archive: Path, *, batch_size: int = 1) -> None:
    url = (
        f"http://127.0.0.1:{server.ports['management']}/models?url={archive.name}&initial_workers=1"
        f"&synchronous=true&batch_size={batch_size}&max_batch_delay=200"
    )
    status, body = _request("POST", url)
    assert status == 200, body


def _predict(server: ServerProcess, task: str, rows: np.ndarray) -> tuple[int, object]:
    url = f"http://127.0.0.1:{server.ports['inference']}/predictions/{task}"
    return _request("POST", url, {"features": rows.tolist()})


@pytest.fixture(scope="module")
def registered(served: tuple[ServerProcess, dict[str, Path]]) -> ServerProcess:
    server, fetched = served
    _register(server, fetched["buckets"], batch_size=4)
    _register(server, fetched["views"])
    return server


def test_the_served_classifier_answers_as_the_head_does_in_process(trained: Trained, registered: ServerProcess) -> None:
    status, answers = _predict(registered, "buckets", trained.rows)

    assert status == 200, answers
    expected = trained.classifier.predict_proba(trained.rows)
    assert len(answers) == len(trained.rows)
    assert all(answer["labels"] == LABELS for answer in answers)
    probabilities = np.array([answer["probabilities"] for answer in answers])
    assert np.abs(probabilities - expected).max() <= TOLERANCE
    assert [answer["label"] for answer in answers] == list(trained.classifier.predict(trained.rows))


def test_the_served_regressor_answers_in_target_units_as_the_head_does(
    trained: Trained, registered: ServerProcess
) -> None:
    status, answers = _predict(registered, "views", trained.rows)

    assert status == 200, answers
    served = np.array([answer["prediction"] for answer in answers])
    assert np.abs(served - trained.regressor.predict(trained.rows)).max() <= TOLERANCE
    assert served.min() > 0.5  # original units (log10 views around 3), not the standardized target
    assert all(answer["sigma"] == trained.regressor.sigma for answer in answers)
    assert all(answer["buckets"] == list(BUCKET_NAMES) for answer in answers)
    buckets = np.array([answer["bucket_probabilities"] for answer in answers])
    assert np.abs(buckets - trained.regressor.bucket_probabilities(trained.rows)).max() <= TOLERANCE
    low, high = trained.regressor.interval(trained.rows)
    assert np.abs(np.array([answer["interval"] for answer in answers]) - np.column_stack([low, high])).max() <= 1e-4


def test_concurrent_requests_batched_together_each_get_their_own_rows(
    trained: Trained, registered: ServerProcess
) -> None:
    parts = [trained.rows[i : i + 1 + i % 2] for i in range(4)]
    with ThreadPoolExecutor(len(parts)) as pool:
        results = list(pool.map(lambda rows: _predict(registered, "buckets", rows), parts))

    for rows, (status, answers) in zip(parts, results, strict=True):
        assert status == 200, answers
        probabilities = np.array([answer["probabilities"] for answer in answers])
        assert np.abs(probabilities - trained.classifier.predict_proba(rows)).max() <= TOLERANCE


def test_a_malformed_request_is_a_client_error(registered: ServerProcess) -> None:
    status, body = _predict(registered, "views", np.zeros((2, FEATURES + 1)))

    assert status == 400, body
    assert f"{FEATURES} features" in json.dumps(body)


def test_the_handler_rebuilds_the_same_network_as_the_trainer(trained: Trained) -> None:
    for head in (trained.classifier, trained.regressor):
        config = head.config.to_dict()
        ours = {name: tensor.shape for name, tensor in build_module(head.config).state_dict().items()}
        theirs = {name: tensor.shape for name, tensor in ts_handler.build_network(config).state_dict().items()}
        assert ours == theirs
    linear = {**trained.regressor.config.to_dict(), "train": {"hidden": 0, "dropout": 0.0}}
    assert isinstance(ts_handler.build_network(linear), torch.nn.Linear)


def test_the_handler_answers_a_batch_of_requests_in_order(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts_handler, "_service", None)
    context = SimpleNamespace(system_properties={"model_dir": str(trained.head_dirs["views"])})
    assert ts_handler.handle(None, context) is None
    requests = [{"body": {"features": trained.rows[:3].tolist()}}, {"data": json.dumps({"features": [[0.0] * 5]})}]
    requests[1]["data"] = requests[1]["data"].encode()

    answers = ts_handler.handle(requests, context)

    reloaded = load_head(trained.head_dirs["views"])
    assert [len(answer) for answer in answers] == [3, 1]
    assert answers[0][2]["prediction"] == pytest.approx(float(reloaded.predict(trained.rows[2:3])[0]), abs=TOLERANCE)
    assert answers[1][0]["prediction"] == pytest.approx(float(reloaded.predict(np.zeros((1, 5)))[0]), abs=TOLERANCE)


# --- the registry ----------------------------------------------------------------------------------------------------


@pytest.fixture
def archive(trained: Trained, tmp_path: Path) -> Path:
    return package_head(trained.head_dirs["buckets"], task="buckets", version="0", out_dir=tmp_path / "archives")


@pytest.fixture
def fresh(tmp_path: Path) -> ModelRegistry:
    return _registry(tmp_path / "objects")


def _publish(registry: ModelRegistry, version: str, mar: Path, accuracy: float) -> RegistryEntry:
    return registry.publish("buckets", version, mar, {"accuracy": accuracy}, "snap-1", "abc123", f"# buckets {version}")


def test_a_published_version_is_stored_whole_and_listed(fresh: ModelRegistry, archive: Path) -> None:
    entry = _publish(fresh, "2", archive, 0.7)
    _publish(fresh, "10", archive, 0.8)

    prefix = "models/buckets/2"
    assert fresh.store.get(f"{prefix}/model.mar") == archive.read_bytes()
    assert json.loads(fresh.store.get(f"{prefix}/metrics.json")) == {"accuracy": 0.7}
    assert fresh.store.get(f"{prefix}/model_card.md").decode() == "# buckets 2"
    assert json.loads(fresh.store.get(f"{prefix}/entry.json")) == entry.to_dict()
    assert fresh.versions("buckets") == ["2", "10"]  # in publishing order, not string order
    assert fresh.versions("views") == []
    assert fresh.entry("buckets", "2") == entry


def test_versions_are_immutable(fresh: ModelRegistry, archive: Path, tmp_path: Path) -> None:
    first = _publish(fresh, "1", archive, 0.7)
    assert _publish(fresh, "1", archive, 0.7) == first  # a retried publish changes nothing

    other = tmp_path / "other.mar"
    other.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(Conflict):
        _publish(fresh, "1", other, 0.9)
    with pytest.raises(InvalidInput):
        _publish(fresh, "../escape", archive, 0.9)


def test_the_first_version_becomes_production(fresh: ModelRegistry, archive: Path) -> None:
    _publish(fresh, "1", archive, 0.6)
    assert fresh.production("buckets") is None

    promoted = fresh.promote_if_better(
        "buckets", "1", metric="accuracy", higher_is_better=True, held_out_metrics_of_production=None
    )

    assert promoted
    assert fresh.production("buckets").version == "1"
    assert json.loads(fresh.store.get("models/buckets/production.json"))["version"] == "1"


def test_a_first_version_that_does_not_beat_its_baselines_is_not_promoted(fresh: ModelRegistry, archive: Path) -> None:
    _publish(fresh, "1", archive, 0.6)
    kwargs = {"metric": "accuracy", "higher_is_better": True, "held_out_metrics_of_production": None}

    assert not fresh.promote_if_better("buckets", "1", **kwargs, baselines={"majority_accuracy": 0.6})  # a tie
    assert not fresh.promote_if_better("buckets", "1", **kwargs, baselines={"majority_accuracy": 0.4, "b": 0.7})
    assert fresh.production("buckets") is None

    assert fresh.promote_if_better("buckets", "1", **kwargs, baselines={"majority_accuracy": 0.4})
    reason = json.loads(fresh.store.get("models/buckets/production.json"))["reason"]
    assert "beats its baselines" in reason and "majority_accuracy 0.4" in reason


def test_only_a_candidate_that_beats_production_on_the_same_rows_is_promoted(
    fresh: ModelRegistry, archive: Path
) -> None:
    for version, accuracy in (("1", 0.6), ("2", 0.55), ("3", 0.65)):
        _publish(fresh, version, archive, accuracy)
    fresh.promote("buckets", "1")

    def promote(version: str, production_accuracy: float) -> bool:
        return fresh.promote_if_better(
            "buckets",
            version,
            metric="accuracy",
            higher_is_better=True,
            held_out_metrics_of_production={"accuracy": production_accuracy},
        )

    assert not promote("2", 0.6)  # worse
    assert fresh.production("buckets").version == "1"
    assert not promote("3", 0.65)  # a tie is not better
    # Production re-scored on version 3's held-out rows does worse there, so 3 wins.
    assert promote("3", 0.62)
    assert fresh.production("buckets").version == "3"
    assert json.loads(fresh.store.get("models/buckets/production.json"))["previous_version"] == "1"
    with pytest.raises(InvalidInput):
        fresh.promote_if_better(
            "buckets", "2", metric="accuracy", higher_is_better=True, held_out_metrics_of_production=None
        )


def test_lower_is_better_metrics_promote_the_smaller_error(fresh: ModelRegistry, archive: Path) -> None:
    fresh.publish("views", "1", archive, {"rmse": 0.4}, "snap", "abc", "")
    fresh.publish("views", "2", archive, {"rmse": 0.3}, "snap", "abc", "")
    fresh.promote("views", "1")

    kwargs = {"metric": "rmse", "higher_is_better": False}
    assert not fresh.promote_if_better("views", "2", **kwargs, held_out_metrics_of_production={"rmse": 0.25})
    assert fresh.promote_if_better("views", "2", **kwargs, held_out_metrics_of_production={"rmse": 0.35})
    with pytest.raises(InvalidInput):
        fresh.promote_if_better("views", "1", metric="r2", higher_is_better=True, held_out_metrics_of_production={})


def test_a_fetched_archive_is_the_published_one(fresh: ModelRegistry, archive: Path, tmp_path: Path) -> None:
    _publish(fresh, "1", archive, 0.6)

    fetched = fresh.fetch_archive("buckets", "1", tmp_path / "fetched")

    assert fetched.read_bytes() == archive.read_bytes()
    with pytest.raises(NotFound):
        fresh.fetch_archive("buckets", "9", tmp_path / "fetched")


def test_the_model_trained_event_describes_the_entry(fresh: ModelRegistry, archive: Path) -> None:
    entry = fresh.publish(
        "buckets", "2", archive, {"accuracy": 0.7, "f1": {"value": 0.6, "low": 0.5}, "n": 40, "split": "time"},
        "snap-7", "abc123", "",
    )  # fmt: skip

    event = model_trained_event(entry, promoted=True, replaces="1")

    assert (event.task, event.version, event.promoted, event.replaces_version) == ("buckets", "2", True, "1")
    assert event.archive.key == "models/buckets/2/model.mar"
    assert event.archive.sha256 == entry.archive.sha256 != ""
    assert event.archive.size_bytes == archive.stat().st_size
    assert dict(event.metrics) == {"accuracy": 0.7, "f1.value": 0.6, "f1.low": 0.5, "n": 40.0}
    assert (event.dataset_snapshot_id, event.code_version) == ("snap-7", "abc123")
    assert event.trained_at.ToDatetime().isoformat() == entry.published_at.removesuffix("+00:00")
    assert model_trained_event(entry, promoted=False, replaces=None).replaces_version == ""


def test_packaging_a_directory_without_a_head_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="head.pt"):
        package_head(tmp_path, task="buckets", version="1", out_dir=tmp_path / "out")
