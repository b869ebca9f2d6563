"""One training run: a head per task on a dataset snapshot, packaged into the registry, promoted only when it beats
production on the same held-out rows, announced on `models.trained`.

Each task trains on its split's train rows (val for early stopping or the ridge penalty) and is judged on its test
rows. `popularity` is one model for both questions a caller asks: a ridge regressor of log10 views whose validation
residuals give it a spread, so view buckets, expected views and an interval all come from it. It is judged on
the time split (train older, test newer: what a deployed model faces), channels on the random split (the held-out
channel split has no known channel to name), genre on the held-out-channel split (a new channel's category must come
from what its videos show and sound like, not from having seen the channel). Genre reads each video's frame and
audio sequences from the registry's object store, where the pipeline stored them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tubelens import events
from tubelens.bus import Producer
from tubelens.errors import InvalidInput
from tubelens.modelkit.features import (
    IMAGE,
    LOG10_VIEWS,
    METADATA,
    METADATA_FEATURES,
    MULTIMODAL,
    Features,
    bucket_labels,
    channel_labels,
    features,
    regression_target,
    split_masks,
)
from tubelens.modelkit.registry import (
    ModelRegistry,
    RegistryEntry,
    model_trained_event,
    package_finetuned,
    package_head,
)
from tubelens.modelkit.schema import BUCKET_NAMES
from tubelens.modelkit.ts_image_handler import CONFIG_FILE as FINETUNED_CONFIG
from tubelens.objects import ObjectStore
from tubelens.trainer.baselines import CHANNEL_MEAN, MAJORITY, ChannelMean, MajorityClass
from tubelens.trainer.finetune import FineTuneConfig, FineTuned, fine_tune, load_finetuned, load_thumbnails
from tubelens.trainer.genre import (
    GAP_K,
    GENRE,
    GenreInputs,
    GenreModel,
    GenreTrainConfig,
    genre_labels,
    load_genre,
    load_genre_inputs,
    train_genre,
)
from tubelens.trainer.heads import (
    CONFIG_FILE,
    Head,
    Regressor,
    RidgeConfig,
    TrainConfig,
    load_head,
    train_classifier,
    train_ridge,
)
from tubelens.trainer.metrics import classification_metrics, regression_metrics
from tubelens.trainer.provenance import code_version

SERVICE = "trainer"
AGE_FEATURE = "log10_age_hours"
log = logging.getLogger(__name__)
GENRE_FEATURES = "frames + audio"


@dataclass(frozen=True)
class TaskSpec:
    feature_set: str
    split_column: str
    metric: str  # the one promotion compares
    higher_is_better: bool


POPULARITY = "popularity"
CHANNEL_FINETUNED = "channel_finetuned"
SPECS = {
    POPULARITY: TaskSpec(MULTIMODAL, "split_time", "mae", False),
    "channel": TaskSpec(IMAGE, "split_random", "accuracy", True),
    # Macro-F1, not accuracy: a held-out test set is a few channels, so its genres are lopsided and accuracy would
    # reward naming the commonest one; macro-F1 counts a genre the model never gets right however rare it is.
    GENRE: TaskSpec(GENRE_FEATURES, "split_channel", "macro_f1", True),
    # The CNN itself fine-tuned on the thumbnails' pixels: a GPU Job in production, minutes on a CPU. Its own task,
    # so it is promoted over earlier fine-tuned versions; the frozen-embedding `channel` head stays the cheap default.
    CHANNEL_FINETUNED: TaskSpec("thumbnail pixels", "split_random", "accuracy", True),
}
# What a plain `tubelens trainer run` trains: every task but the one that wants a GPU.
DEFAULT_TASKS = [task for task in SPECS if task != CHANNEL_FINETUNED]

Model = Head | GenreModel | FineTuned
# Besides the table, what a task trains on: genre's frame and audio sequences, the fine-tuned CNN's thumbnails.
TaskInputs = GenreInputs | list[bytes] | None


@dataclass(frozen=True)
class TrainingResult:
    entry: RegistryEntry
    promoted: bool
    replaced: str
    metrics: dict[str, float]


def task_inputs(task: str, table: pa.Table, store: ObjectStore) -> TaskInputs:
    """What `task` needs from the object store besides the table; loaded once per run, so the candidate and
    production are judged on the same inputs."""
    if task == GENRE:
        return load_genre_inputs(store, table)
    if task == CHANNEL_FINETUNED:
        return load_thumbnails(store, table)
    return None


def train_head(
    table: pa.Table, task: str, *, seed: int, inputs: TaskInputs = None, finetune: FineTuneConfig | None = None
) -> Model:
    """The task's model on its split's train rows, stopped early on its val rows; `inputs` from `task_inputs`;
    `finetune` sizes the fine-tuning run (default: `FineTuneConfig` with the run's seed)."""
    spec = _spec(task)
    masks = split_masks(table, spec.split_column)
    train, val = masks["train"], masks["val"]
    _require_rows(task, spec, train, val)
    if task == GENRE:
        return _train_genre(table, _required(inputs, task), spec, train, val, seed)
    if task == CHANNEL_FINETUNED:
        config = replace(finetune or FineTuneConfig(), seed=seed)
        return _fine_tune(table, _required(inputs, task), train, val, config)
    built = features(table, spec.feature_set)
    x = built.matrix
    if task == POPULARITY:
        y = regression_target(table, LOG10_VIEWS)
        return train_ridge(
            x[train], y[train], x[val], y[val],
            target=LOG10_VIEWS, feature_set=spec.feature_set, shared_scale_spans=built.embedding_spans,
            config=RidgeConfig(seed=seed), quiet=True, description=task, clamp=_age_column(built),
        )  # fmt: skip
    options = {"feature_set": spec.feature_set, "config": TrainConfig(seed=seed), "quiet": True, "description": task}
    y, labels = _class_labels(table, task)
    spans = built.embedding_spans
    return train_classifier(x[train], y[train], x[val], y[val], labels=labels, shared_scale_spans=spans, **options)


def _age_column(built: Features) -> dict[str, int]:
    """The log-age column of the metadata block, if the feature set has one: the popularity head clamps it."""
    offset = 0
    for block, width in built.blocks:
        if block == METADATA:
            return {AGE_FEATURE: offset + METADATA_FEATURES.index(AGE_FEATURE)}
        offset += width
    return {}


def _require_rows(task: str, spec: TaskSpec, train: np.ndarray, val: np.ndarray) -> None:
    """A clean, skippable InvalidInput when the split cannot train (no rows) or choose (no validation rows)."""
    for part, mask in (("train", train), ("validation", val)):
        if not mask.any():
            why = (
                " (a catalogue without publish dates has one date block: every row trains)"
                if "time" in spec.split_column
                else ""
            )
            raise InvalidInput(f"{task}: the snapshot's {spec.split_column} has no {part} rows{why}")


def baseline_scores(table: pa.Table, task: str, *, inputs: TaskInputs = None) -> dict[str, float]:
    """Each baseline's value of the task's promotion metric on the task's test rows, the rows the candidate is
    judged on: a model is promoted only when it beats them all (`ModelRegistry.promote_if_better`).

    Popularity: the channel's mean training log10 views (the global mean for an unseen channel) and the global mean.
    Classifiers: the commonest training label for every row."""
    spec = _spec(task)
    masks = split_masks(table, spec.split_column)
    train, test = masks["train"], masks["test"]
    if task == POPULARITY:
        y = regression_target(table, LOG10_VIEWS)
        channels = channel_labels(table)
        channel_mean = ChannelMean.fit(channels[train], y[train]).predict(channels[test])
        global_mean = np.full(int(test.sum()), float(y[train].mean()))
        return {
            f"{CHANNEL_MEAN}_{spec.metric}": getattr(
                regression_metrics(y[test], channel_mean, resamples=0), spec.metric
            ),
            f"global_mean_{spec.metric}": getattr(regression_metrics(y[test], global_mean, resamples=0), spec.metric),
        }
    if task == GENRE:
        truth = genre_labels(table)
        rows = _part(_required(inputs, task), test, spec, "test").rows
        train_truth, test_truth = truth[train], truth[rows]
    else:
        labels = channel_labels(table)
        train_truth, test_truth = labels[train], labels[test]
    majority = MajorityClass.fit(train_truth).predict(len(test_truth))
    known = sorted(set(train_truth.tolist()) | set(test_truth.tolist()))
    result = classification_metrics(test_truth, majority, labels=known, resamples=0)
    return {f"{MAJORITY}_{spec.metric}": float(getattr(result, spec.metric))}


def held_out_metrics(head: Model, table: pa.Table, task: str, *, inputs: TaskInputs = None) -> dict[str, float]:
    """The model's metrics on the task's test rows: the numbers promotion compares."""
    spec = _spec(task)
    test = split_masks(table, spec.split_column)["test"]
    if not test.any():
        raise InvalidInput(f"{task}: the snapshot's {spec.split_column} has no test rows to judge a model on")
    if isinstance(head, GenreModel):
        return _genre_metrics(head, table, _part(_required(inputs, task), test, spec, "test"))
    y, labels = _class_labels(table, task)
    if isinstance(head, FineTuned):
        thumbnails = _required(inputs, task)
        predicted = head.predict([thumbnails[row] for row in np.flatnonzero(test)])
    else:
        x = features(table, spec.feature_set).matrix[test]
        if isinstance(head, Regressor):
            return _popularity_metrics(head, table, x, test)
        predicted = head.predict(x)
    result = classification_metrics(y[test], predicted, labels=labels, resamples=200)
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
    finetune: FineTuneConfig | None = None,
    skip_unsupported: bool = False,
    require_beating_baselines: bool = True,
) -> list[TrainingResult]:
    """Train, judge, publish and (on a win) promote each task. With `skip_unsupported`, a task this snapshot cannot
    support (InvalidInput: no validation video of a trained genre, no media at all) is logged and skipped so that
    the others still train; the run fails only when no task could be trained."""
    if table.num_rows == 0:
        raise InvalidInput(f"snapshot {snapshot_id} has no complete videos to train on")
    results, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="tubelens-train-") as tmp:
        for task in tasks:
            run = _Run(table, snapshot_id, registry, producer, seed, finetune, require_beating_baselines)
            try:
                results.append(_train_and_register(run, task, Path(tmp) / task))
            except InvalidInput as exc:
                if not skip_unsupported:
                    raise
                skipped[task] = exc.message
                log.warning("task skipped", extra={"task": task, "snapshot_id": snapshot_id, "reason": exc.message})
    producer.flush()
    if skipped and not results:
        raise InvalidInput(f"no task could be trained on {snapshot_id}: {skipped}")
    return results


@dataclass(frozen=True)
class _Run:
    table: pa.Table
    snapshot_id: str
    registry: ModelRegistry
    producer: Producer
    seed: int
    finetune: FineTuneConfig | None
    require_beating_baselines: bool = True


def _train_and_register(run: _Run, task: str, workdir: Path) -> TrainingResult:
    spec = _spec(task)
    table, snapshot_id, registry, producer, seed = run.table, run.snapshot_id, run.registry, run.producer, run.seed
    inputs = task_inputs(task, table, registry.store)
    head = train_head(table, task, seed=seed, inputs=inputs, finetune=run.finetune)
    metrics = held_out_metrics(head, table, task, inputs=inputs)
    baselines = baseline_scores(table, task, inputs=inputs)
    # The entry says why it was or was not promoted: the baselines' scores on the same rows and the verdict.
    metrics |= {f"baseline_{name}": value for name, value in baselines.items()}
    metrics["beats_baselines"] = float(_beats(metrics[spec.metric], baselines, spec.higher_is_better))
    head.save(workdir / "head")
    version = f"{snapshot_id}-s{seed}"
    package = package_finetuned if task == CHANNEL_FINETUNED else package_head
    mar = package(workdir / "head", task=task, version=version, out_dir=workdir / "archive")
    entry = registry.publish(task, version, mar, metrics, snapshot_id, code_version(), _model_card(task, spec, metrics))
    production = registry.production(task)
    production_metrics = (
        held_out_metrics(_head_of(registry, production, workdir / "production"), table, task, inputs=inputs)
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
        # Off (TUBELENS_TRAINER__REQUIRE_BEATING_BASELINES=false): the verdict is still recorded and logged.
        baselines=baselines if run.require_beating_baselines else None,
    )
    if not metrics["beats_baselines"]:
        log.warning(
            "candidate not promoted: it does not beat its baselines on the held-out rows",
            extra={"task": task, "version": version, spec.metric: metrics[spec.metric], **baselines},
        )
    replaced = production.version if promoted and production is not None else ""
    events.publish(
        producer,
        model_trained_event(entry, promoted, replaced or None),
        key=task,
        service=SERVICE,
        cause=f"trained/{entry.version}",  # one event per registered version
    )
    return TrainingResult(entry, promoted, replaced, metrics)


def _beats(score: float, baselines: dict[str, float], higher_is_better: bool) -> bool:
    return all(score > value if higher_is_better else score < value for value in baselines.values())


def _head_of(registry: ModelRegistry, entry: RegistryEntry, workdir: Path) -> Model:
    """Production's model, from its archive, to be judged on this snapshot's held-out rows."""
    archive = registry.fetch_archive(entry.task, entry.version, workdir)
    with zipfile.ZipFile(archive) as mar:
        mar.extractall(workdir / "head")
    if (workdir / "head" / FINETUNED_CONFIG).is_file():
        return load_finetuned(workdir / "head")
    kind = json.loads((workdir / "head" / CONFIG_FILE).read_text())["kind"]
    return load_genre(workdir / "head") if kind == GENRE else load_head(workdir / "head")


def _train_genre(
    table: pa.Table, inputs: GenreInputs, spec: TaskSpec, train: np.ndarray, val: np.ndarray, seed: int
) -> GenreModel:
    """The two-stream genre model over the genres of its training videos."""
    genres = genre_labels(table)
    train_part, val_part = _part(inputs, train, spec, "train"), _part(inputs, val, spec, "val")
    y_train, y_val = genres[train_part.rows], genres[val_part.rows]
    labels = sorted(set(y_train.tolist()))
    if not set(y_val.tolist()) & set(labels):
        raise InvalidInput(f"{GENRE}: no val video in {spec.split_column} is of a genre seen in training")
    config = GenreTrainConfig(seed=seed)
    return train_genre(
        train_part, y_train, val_part, y_val, labels=labels, config=config, quiet=True, description=GENRE
    )


def _genre_metrics(model: GenreModel, table: pa.Table, test: GenreInputs) -> dict[str, float]:
    truth = genre_labels(table)[test.rows]
    scores = model.predict_proba(test)
    result = classification_metrics(
        truth, model.predict(test), labels=model.labels, scores=scores, gap_k=GAP_K, resamples=200
    )
    return {
        "accuracy": result.accuracy,
        "macro_f1": result.macro_f1,
        "macro_precision": result.macro_precision,
        "macro_recall": result.macro_recall,
        "gap": float(result.gap),
    }


def _part(inputs: GenreInputs, mask: np.ndarray, spec: TaskSpec, part: str) -> GenreInputs:
    selected = inputs.within(mask)
    if len(selected) == 0:
        raise InvalidInput(f"{GENRE}: the snapshot's {spec.split_column} has no {part} videos with frames and audio")
    return selected


def _fine_tune(
    table: pa.Table, thumbnails: list[bytes], train: np.ndarray, val: np.ndarray, config: FineTuneConfig
) -> FineTuned:
    """The CNN fine-tuned end to end to name channels from thumbnails; on a GPU where the Job has one."""
    y, labels = _class_labels(table, CHANNEL_FINETUNED)
    train_rows, val_rows = np.flatnonzero(train), np.flatnonzero(val)
    return fine_tune(
        [thumbnails[row] for row in train_rows], y[train_rows],
        [thumbnails[row] for row in val_rows], y[val_rows],
        labels=labels, config=config, quiet=True,
    )  # fmt: skip


def _required(inputs: TaskInputs, task: str) -> Any:
    if inputs is None:
        raise InvalidInput(f"{task} needs inputs from the object store: pass task_inputs(task, table, store)")
    return inputs


def _popularity_metrics(head: Regressor, table: pa.Table, x: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Regression metrics in log10 views and the view-bucket metrics of the same predictions."""
    regression = regression_metrics(regression_target(table, LOG10_VIEWS)[test], head.predict(x), resamples=200)
    buckets = classification_metrics(
        bucket_labels(table)[test], head.predict_bucket(x), labels=list(BUCKET_NAMES), resamples=200
    )
    return {
        "mae": regression.mae,
        "rmse": regression.rmse,
        "r2": regression.r2,
        "spearman": regression.spearman,
        "bucket_accuracy": buckets.accuracy,
        "bucket_macro_f1": buckets.macro_f1,
        "sigma": head.sigma,
    }


def _class_labels(table: pa.Table, task: str) -> tuple[np.ndarray, list[str]]:
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
