"""One training run: a head per task on a dataset snapshot, packaged into the registry, promoted only when it beats
production on the same held-out rows, announced on `models.trained`.

Each task trains on its split's train rows (val for early stopping) and is judged on its test rows: popularity on
the time split (train older, test newer: what a deployed model faces), channels on the random split (the held-out
channel split has no known channel to name).
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tubelens import events
from tubelens.bus import Producer
from tubelens.errors import InvalidInput
from tubelens.trainer.features import (
    IMAGE,
    LOG10_VIEWS,
    MULTIMODAL,
    bucket_labels,
    channel_labels,
    features,
    regression_target,
    split_masks,
)
from tubelens.trainer.heads import (
    Classifier,
    Head,
    TrainConfig,
    load_head,
    train_classifier,
    train_regressor,
)
from tubelens.trainer.metrics import classification_metrics, regression_metrics
from tubelens.trainer.registry import ModelRegistry, RegistryEntry, model_trained_event, package_head
from tubelens.trainer.schema import BUCKET_NAMES

CODE_VERSION = "tubelens-trainer 0.1.0"
SERVICE = "trainer"


@dataclass(frozen=True)
class TaskSpec:
    feature_set: str
    split_column: str
    metric: str  # the one promotion compares
    higher_is_better: bool


SPECS = {
    "popularity_bucket": TaskSpec(MULTIMODAL, "split_time", "macro_f1", True),
    "popularity_regression": TaskSpec(MULTIMODAL, "split_time", "mae", False),
    "channel": TaskSpec(IMAGE, "split_random", "accuracy", True),
}


@dataclass(frozen=True)
class TrainingResult:
    entry: RegistryEntry
    promoted: bool
    replaced: str
    metrics: dict[str, float]


def train_head(table: pa.Table, task: str, *, seed: int) -> Head:
    spec = _spec(task)
    x = features(table, spec.feature_set).matrix
    masks = split_masks(table, spec.split_column)
    train, val = masks["train"], masks["val"]
    options = {"feature_set": spec.feature_set, "config": TrainConfig(seed=seed), "quiet": True, "description": task}
    if task == "popularity_regression":
        y = regression_target(table, LOG10_VIEWS)
        return train_regressor(x[train], y[train], x[val], y[val], target=LOG10_VIEWS, **options)
    y, labels = _class_labels(table, task)
    return train_classifier(x[train], y[train], x[val], y[val], labels=labels, **options)


def held_out_metrics(head: Head, table: pa.Table, task: str) -> dict[str, float]:
    """The head's metrics on the task's test rows: the numbers promotion compares."""
    spec = _spec(task)
    test = split_masks(table, spec.split_column)["test"]
    if not test.any():
        raise InvalidInput(f"{task}: the snapshot's {spec.split_column} has no test rows to judge a model on")
    x = features(table, spec.feature_set).matrix[test]
    if not isinstance(head, Classifier):
        result = regression_metrics(regression_target(table, LOG10_VIEWS)[test], head.predict(x), resamples=200)
        return {"mae": result.mae, "rmse": result.rmse, "r2": result.r2, "spearman": result.spearman}
    y, labels = _class_labels(table, task)
    result = classification_metrics(y[test], head.predict(x), labels=labels, resamples=200)
    return {
        "accuracy": result.accuracy,
        "macro_f1": result.macro_f1,
        "macro_precision": result.macro_precision,
        "macro_recall": result.macro_recall,
    }


def run_training(
    table: pa.Table,
    snapshot_id: str,
    tasks: list[str],
    *,
    registry: ModelRegistry,
    producer: Producer,
    seed: int = 0,
) -> list[TrainingResult]:
    if table.num_rows == 0:
        raise InvalidInput(f"snapshot {snapshot_id} has no complete videos to train on")
    results = []
    with tempfile.TemporaryDirectory(prefix="tubelens-train-") as tmp:
        for task in tasks:
            results.append(_train_and_register(table, snapshot_id, task, registry, producer, seed, Path(tmp) / task))
    producer.flush()
    return results


def _train_and_register(table, snapshot_id, task, registry, producer, seed, workdir: Path) -> TrainingResult:
    spec = _spec(task)
    head = train_head(table, task, seed=seed)
    metrics = held_out_metrics(head, table, task)
    head.save(workdir / "head")
    version = f"{snapshot_id}-s{seed}"
    mar = package_head(workdir / "head", task=task, version=version, out_dir=workdir / "archive")
    entry = registry.publish(task, version, mar, metrics, snapshot_id, CODE_VERSION, _model_card(task, spec, metrics))
    production = registry.production(task)
    production_metrics = (
        held_out_metrics(_head_of(registry, production, workdir / "production"), table, task)
        if production is not None and production.version != version
        else None
    )
    promoted = registry.promote_if_better(
        task,
        version,
        metric=spec.metric,
        higher_is_better=spec.higher_is_better,
        held_out_metrics_of_production=production_metrics,
        held_out_metrics_of_candidate=metrics,
    )
    replaced = production.version if promoted and production is not None else ""
    events.publish(producer, model_trained_event(entry, promoted, replaced or None), key=task, service=SERVICE)
    return TrainingResult(entry, promoted, replaced, metrics)


def _head_of(registry: ModelRegistry, entry: RegistryEntry, workdir: Path) -> Head:
    """Production's head, from its archive, to be judged on this snapshot's held-out rows."""
    archive = registry.fetch_archive(entry.task, entry.version, workdir)
    with zipfile.ZipFile(archive) as mar:
        mar.extractall(workdir / "head")
    return load_head(workdir / "head")


def _class_labels(table: pa.Table, task: str) -> tuple[np.ndarray, list[str]]:
    if task == "popularity_bucket":
        return bucket_labels(table), list(BUCKET_NAMES)
    labels = channel_labels(table)
    return labels, sorted(set(labels.tolist()))


def _spec(task: str) -> TaskSpec:
    if task not in SPECS:
        raise InvalidInput(f"unknown task {task!r}; known: {', '.join(SPECS)}", field="task")
    return SPECS[task]


def _model_card(task: str, spec: TaskSpec, metrics: dict[str, float]) -> str:
    lines = [f"# {task}", "", f"Features: {spec.feature_set}. Judged on the test rows of {spec.split_column}.", ""]
    lines += [f"- {name}: {value:.4f}" for name, value in metrics.items()]
    return "\n".join(lines) + "\n"
