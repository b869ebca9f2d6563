"""Real model versions for the predictor's tests: small heads trained on the spot, packaged with `package_head` and
published into a registry on a local object store, exactly as the trainer publishes them.

Two versions of one regressor differ in their weights (version 2 learned a target 2 higher), so every answer says
which version gave it. A classifier rides along for the label-and-probabilities contract.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tubelens.modelkit.registry import ModelRegistry, RegistryEntry, model_trained_event, package_head
from tubelens.objects import LocalObjectStore
from tubelens.trainer.heads import Classifier, Regressor, TrainConfig, train_classifier, train_regressor

FEATURES = 5
LABELS = ["low", "mid", "high"]
TOLERANCE = 1e-5
VERSIONS = ("1", "2")
VERSION_SHIFT = 2.0  # version 2's target is version 1's plus this
SNAPSHOT = "20260101T000000Z-abcd0123"
WARMUP = {"features": [[0.0] * FEATURES]}


@dataclass
class Heads:
    regressors: dict[str, Regressor]  # by version
    classifier: Classifier
    archives: dict[str, Path]  # the regressor's archive of each version
    classifier_archive: Path
    rows: np.ndarray  # unseen rows to ask
    held_out_mae: dict[str, float]

    def expected(self, version: str, rows: np.ndarray | None = None) -> np.ndarray:
        """What version `version` answers in process for `rows` (default: the probe rows)."""
        return self.regressors[version].predict(self.rows if rows is None else rows)

    def version_of(self, answer: list[dict[str, Any]]) -> str:
        """Which version's outputs `answer` (the rows of a request for the probe rows) are; AssertionError if none."""
        served = predictions(answer)
        for version in self.regressors:
            if served.shape == (len(self.rows),) and np.abs(served - self.expected(version)).max() <= TOLERANCE:
                return version
        raise AssertionError(f"an answer of no known version: {answer}")


def body(rows: np.ndarray) -> dict[str, Any]:
    return {"features": np.asarray(rows).tolist()}


def predictions(answer: list[dict[str, Any]]) -> np.ndarray:
    return np.array([row["prediction"] for row in answer], dtype=np.float64)


def _data(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Columns on different scales, so that a handler forgetting the standardization would answer differently.
    x = (rng.normal(size=(rows, FEATURES)) * [1, 10, 100, 0.1, 3] + [0, 5, -50, 1, 0]).astype(np.float32)
    score = x[:, 0] + x[:, 1] / 10 - x[:, 2] / 100
    return x, 3 + score + rng.normal(0, 0.1, rows)


def train_heads(root: Path) -> Heads:
    """Two versions of a regressor and a classifier, saved and packaged under `root`."""
    x, target = _data(seed=1, rows=240)
    config = TrainConfig(hidden=8, max_epochs=40, patience=5, seed=2)
    regressors, archives, maes = {}, {}, {}
    for number, version in enumerate(VERSIONS):
        y = target + VERSION_SHIFT * number
        regressors[version] = train_regressor(
            x[:180], y[:180], x[180:], y[180:], target="log10_views", feature_set="metadata", config=config, quiet=True
        )
        maes[version] = float(np.abs(regressors[version].predict(x[180:]) - y[180:]).mean())
        archives[version] = _package(regressors[version], root / f"views-{version}", "views", version)
    buckets = np.asarray(LABELS, dtype=object)[np.digitize(target - 3, [-0.7, 0.7])]
    classifier = train_classifier(
        x[:180], buckets[:180], x[180:], buckets[180:], labels=LABELS, feature_set="metadata", config=config, quiet=True
    )
    classifier_archive = _package(classifier, root / "buckets-1", "buckets", "1")
    return Heads(regressors, classifier, archives, classifier_archive, _data(seed=9, rows=4)[0], maes)


def _package(head: Regressor | Classifier, directory: Path, task: str, version: str) -> Path:
    head.save(directory / "head")
    return package_head(directory / "head", task=task, version=version, out_dir=directory / "archive")


def broken_archive(heads: Heads, root: Path, version: str) -> Path:
    """A well-formed archive whose handler cannot load: the classifier's weights under the regressor's head.json."""
    head_dir = root / f"broken-{version}"
    heads.regressors["1"].save(head_dir)
    heads.classifier.save(root / "classifier")
    shutil.copyfile(root / "classifier" / "head.pt", head_dir / "head.pt")
    return package_head(head_dir, task="views", version=version, out_dir=root / f"broken-{version}-archive")


def local_registry(root: Path) -> ModelRegistry:
    store = LocalObjectStore(root, "registry")
    store.ensure_bucket()
    return ModelRegistry(store)


def publish_versions(registry: ModelRegistry, heads: Heads, task: str) -> dict[str, RegistryEntry]:
    """Both versions of the regressor published as `task`; version 1 promoted to production."""
    entries = {
        version: registry.publish(
            task, version, archive, {"mae": heads.held_out_mae[version]}, SNAPSHOT, "test", f"# {task} {version}\n"
        )
        for version, archive in heads.archives.items()
    }
    registry.promote(task, VERSIONS[0], reason="first version")
    return entries


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Block until `condition()` holds; AssertionError naming `what` if it never does (a hang guard, not a timing
    assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout_s:g}s")
        time.sleep(0.01)


@dataclass
class SwapDrill:
    """Clients asking a task the way the predictor's core does (resolve the default version, work on the request,
    then ask that version) while its default is swapped back and forth; every answer must come from the version the
    request resolved, and no request may fail.

    `think_s` is the work between resolving and asking (the core reads the version's head config and embeds the
    pictures there): the window in which a swap that unloaded the old version too early failed requests."""

    manager: Any  # a tubelens.predictor.models.ModelManager
    registry: ModelRegistry
    heads: Heads
    task: str
    clients: int = 8
    think_s: float = 0.002
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    versions_seen: set[str] = field(default_factory=set)
    swaps: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with self.manager.lease(self.task) as held:
                    time.sleep(self.think_s)
                    prediction = self.manager.predict(self.task, body(self.heads.rows), lease=held)
                answered = self.heads.version_of(prediction.rows)
                assert answered == held.version == prediction.version, (
                    f"resolved {held.version}, answered by {answered}"
                )
            except BaseException as exc:  # noqa: BLE001 - every failure is a finding of the drill
                with self._lock:
                    self.requests += 1
                    self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.requests += 1
                    self.versions_seen.add(answered)

    def swap_to(self, version: str) -> None:
        previous = self.registry.production(self.task)
        self.registry.promote(self.task, version, reason="drill")
        event = model_trained_event(self.registry.entry(self.task, version), promoted=True, replaces=previous)
        self.swaps.append(self.manager.on_model_trained(event))

    def run(self, versions: tuple[str, ...], *, seconds: float) -> None:
        """Traffic for `seconds` in all, with a swap to each of `versions` at even intervals within it."""
        stop = threading.Event()
        threads = [threading.Thread(target=self.client, args=(stop,), daemon=True) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        try:
            pause = seconds / (len(versions) + 1)
            for version in versions:
                stop.wait(pause)
                self.swap_to(version)
            stop.wait(pause)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
