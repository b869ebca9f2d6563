"""Honest evaluation: every model beside its baselines, on the time and held-out-channel splits first, with 95 %
bootstrap intervals on the headline numbers.

Tasks:
- `popularity_bucket`: seven log10 view buckets. Models: multimodal (the default: thumbnail + title + metadata),
  image-only. Baselines: majority class, metadata-only. The buckets are read off the popularity regressor's
  predictive distribution (a ridge regression of log10 views, spread = its validation residuals), the model the
  trainer registers, rather than a separate softmax: buckets are ranges of one number.
- `popularity_regression`: log10 views (or log10 views per subscriber). Models: multimodal, image-only, all ridge
  regressions with the penalty chosen on "val". Baselines: channel mean, metadata-only (the same ridge on metadata).
- `channel`: which channel uploaded a thumbnail. Model: image. Baseline: majority class. It is skipped on the
  held-out-channel split, where no test channel was ever seen in training.
- `genre`: the YouTube category, from frame and audio sequences (`genre.py`, seed 003). Models: two-stream, and the
  frames-only and audio-only ablations. Baseline: majority class. Only videos with both sequences take part; they
  are read from the object store, so without one (or with too few such videos in a part) the task is skipped.

Each split column's "val" rows stop training early and its "test" rows are scored, nothing else. Random splits
flatter every model (ARCHITECTURE.md, "What real data says"), so reports list them last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from io import StringIO
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tubelens.modelkit.features import (
    IMAGE,
    LOG10_VIEWS,
    MULTIMODAL,
    Features,
    bucket_labels,
    channel_labels,
    features,
    regression_target,
    split_masks,
)
from tubelens.modelkit.schema import BUCKET_NAMES, SPLITS
from tubelens.objects import ObjectStore
from tubelens.trainer.baselines import CHANNEL_MEAN, MAJORITY, METADATA_ONLY, ChannelMean, MajorityClass
from tubelens.trainer.genre import (
    GAP_K,
    TWO_STREAM,
    VARIANTS,
    GenreInputs,
    GenreTrainConfig,
    genre_labels,
    load_genre_inputs,
    train_genre,
)
from tubelens.trainer.heads import Regressor, RidgeConfig, TrainConfig, TrainOutcome, train_classifier, train_ridge
from tubelens.trainer.metrics import (
    RESAMPLES,
    ClassificationMetrics,
    Interval,
    RegressionMetrics,
    classification_metrics,
    jsonable,
    regression_metrics,
)

POPULARITY_BUCKET = "popularity_bucket"
POPULARITY_REGRESSION = "popularity_regression"
CHANNEL = "channel"
GENRE = "genre"
TASKS = (POPULARITY_BUCKET, POPULARITY_REGRESSION, CHANNEL, GENRE)
SPLIT_ORDER = ("split_time", "split_channel", "split_random")
SPLIT_NAMES = {
    "split_time": "time split (train oldest, test newest)",
    "split_channel": "held-out channels",
    "split_random": "random split (flatters every model)",
}
MODEL = "model"
BASELINE = "baseline"
# The default popularity model first; image-only is reported beside it, never instead of it.
POPULARITY_MODELS = (MULTIMODAL, IMAGE)
BUCKET_TOP_K = 2  # the true bucket among the two likeliest: a near miss on an ordinal scale
CHANNEL_TOP_K = 3
GENRE_TOP_K = 3
GENRE_GAP_K = GAP_K
HELD_OUT_CHANNELS = (
    "skipped: the held-out-channel split keeps every channel's videos in one part, so no test video's channel was "
    "seen in training and there is no channel to recognize"
)
NO_STORE = "skipped: genre reads each video's frame and audio sequences from the object store, and none was given"

Metrics = ClassificationMetrics | RegressionMetrics


@dataclass
class ModelResult:
    name: str  # a feature set for heads ("multimodal", "image", "metadata"), else the baseline's name
    role: str  # MODEL or BASELINE
    metrics: Metrics
    train_seconds: float
    epochs: int | None = None  # heads only: epochs run before early stopping
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = "classification" if isinstance(self.metrics, ClassificationMetrics) else "regression"
        data["metrics"] = self.metrics.to_dict()
        return jsonable(data)


@dataclass
class TaskReport:
    task: str
    split_column: str
    seed: int
    rows: dict[str, int]  # per part of the split (genre: the videos with frames and audio, once they are loaded)
    results: list[ModelResult] = field(default_factory=list)
    skipped: str = ""  # why nothing was run, when nothing was
    target: str = ""  # regression only
    train_config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def result(self, name: str) -> ModelResult:
        return next(result for result in self.results if result.name == name)

    def to_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in asdict(self).items() if key != "results"}
        data["results"] = [result.to_dict() for result in self.results]
        return jsonable(data)


@dataclass
class Report:
    seed: int
    rows: int
    tasks: list[TaskReport]
    seconds: float

    def task(self, task: str, split_column: str) -> TaskReport:
        return next(item for item in self.tasks if item.task == task and item.split_column == split_column)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rows": self.rows,
            "split_order": list(SPLIT_ORDER),
            "seconds": self.seconds,
            "tasks": [task.to_dict() for task in self.tasks],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self, console: Console) -> None:
        for task in self.tasks:
            render_task(task, console)
        console.print(f"seed {self.seed}, {self.rows} videos, {self.seconds:.1f} s")

    def to_text(self, width: int = 132) -> str:
        buffer = StringIO()
        self.render(Console(file=buffer, width=width, color_system=None, force_terminal=False))
        return buffer.getvalue()


def evaluate_all(
    table: pa.Table,
    *,
    seed: int = 0,
    config: TrainConfig | None = None,
    resamples: int = RESAMPLES,
    quiet: bool = True,
    store: ObjectStore | None = None,
    genre_config: GenreTrainConfig | None = None,
) -> Report:
    """Every task on every split, time and held-out channels first. `store` holds the frame and audio sequences the
    genre task reads (loaded once for all splits); without it that task is reported as skipped."""
    started = time.perf_counter()
    genre_config = genre_config or GenreTrainConfig()
    genre_inputs = load_genre_inputs(store, table, max_steps=genre_config.max_steps) if store is not None else None
    options = {"seed": seed, "config": config, "resamples": resamples, "quiet": quiet, "genre_config": genre_config}
    tasks = [
        evaluate_task(table, task, split, genre_inputs=genre_inputs, **options)
        for split in SPLIT_ORDER
        for task in TASKS
    ]
    return Report(seed, len(table), tasks, time.perf_counter() - started)


def evaluate_task(
    table: pa.Table,
    task: str,
    split_column: str,
    *,
    seed: int = 0,
    config: TrainConfig | None = None,
    target: str = LOG10_VIEWS,
    resamples: int = RESAMPLES,
    quiet: bool = True,
    store: ObjectStore | None = None,
    genre_inputs: GenreInputs | None = None,
    genre_config: GenreTrainConfig | None = None,
) -> TaskReport:
    """One task on one split: its models and baselines trained on "train", stopped on "val", scored on "test".

    The genre task reads `genre_inputs` when given (evaluate_all loads them once for every split), else loads them
    from `store`; with neither it is skipped."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    started = time.perf_counter()
    masks = split_masks(table, split_column)
    config = replace(config or TrainConfig(), seed=seed)
    genre_config = replace(genre_config or GenreTrainConfig(), seed=seed)
    if task == GENRE and genre_inputs is None and store is not None:
        genre_inputs = load_genre_inputs(store, table, max_steps=genre_config.max_steps)
    report = TaskReport(
        task,
        split_column,
        seed,
        rows=_rows_per_part(masks, genre_inputs if task == GENRE else None),
        target=target if task == POPULARITY_REGRESSION else "",
        train_config=asdict(genre_config if task == GENRE else config),
    )
    report.skipped = skip_reason(table, task, split_column, masks, genre_inputs=genre_inputs)
    if not report.skipped:
        run = _Run(task, split_column, table, masks, config, resamples, seed, quiet, genre_inputs, genre_config)
        report.results = _RUNNERS[task](run, target)
    report.seconds = time.perf_counter() - started
    return report


def _rows_per_part(masks: dict[str, np.ndarray], genre_inputs: GenreInputs | None) -> dict[str, int]:
    """Rows per part; for genre, once its sequences are loaded, the videos that have them."""
    if genre_inputs is None:
        return {part: int(masks[part].sum()) for part in SPLITS}
    return {part: int(masks[part][genre_inputs.rows].sum()) for part in SPLITS}


def skip_reason(
    table: pa.Table,
    task: str,
    split_column: str,
    masks: dict[str, np.ndarray],
    *,
    genre_inputs: GenreInputs | None = None,
) -> str:
    """Why a task cannot be measured on this split, or "" when it can."""
    if task == CHANNEL and split_column == "split_channel":
        return HELD_OUT_CHANNELS
    empty = [part for part in SPLITS if not masks[part].any()]
    if empty:
        return f"skipped: no {' or '.join(empty)} rows in {split_column}"
    if task == CHANNEL and len(set(channel_labels(table)[masks["train"]])) < 2:
        return "skipped: fewer than two channels in training"
    if task == GENRE:
        return _genre_skip_reason(table, split_column, masks, genre_inputs)
    return ""


def _genre_skip_reason(
    table: pa.Table, split_column: str, masks: dict[str, np.ndarray], genre_inputs: GenreInputs | None
) -> str:
    if genre_inputs is None:
        return NO_STORE
    empty = [part for part in SPLITS if not masks[part][genre_inputs.rows].any()]
    if empty:
        return f"skipped: no {' or '.join(empty)} videos with frames and audio in {split_column}"
    genres = genre_labels(table)
    trained = set(genres[genre_inputs.within(masks["train"]).rows])
    if len(trained) < 2:
        return "skipped: fewer than two genres among the training videos with frames and audio"
    if not any(genre in trained for genre in genres[genre_inputs.within(masks["val"]).rows]):
        return "skipped: no validation video with frames and audio is of a genre seen in training"
    return ""


@dataclass
class _Run:
    """What every model of one task on one split shares: the rows of each part, training config, features."""

    task: str
    split_column: str
    table: pa.Table
    masks: dict[str, np.ndarray]
    config: TrainConfig
    resamples: int
    seed: int
    quiet: bool
    genre_inputs: GenreInputs | None = None
    genre_config: GenreTrainConfig = field(default_factory=GenreTrainConfig)
    _features: dict[str, Features] = field(default_factory=dict)

    def built(self, feature_set: str) -> Features:
        if feature_set not in self._features:
            self._features[feature_set] = features(self.table, feature_set)
        return self._features[feature_set]

    def features(self, feature_set: str) -> np.ndarray:
        return self.built(feature_set).matrix

    def ridge(self, feature_set: str, target: str) -> tuple[Regressor, np.ndarray]:
        """The ridge regressor of `target` on one feature set's train rows (penalty chosen on val), and its test
        rows' features."""
        built = self.built(feature_set)
        x_train, x_val, x_test = self.parts(built.matrix)
        y_train, y_val, _ = self.parts(regression_target(self.table, target))
        head = train_ridge(
            x_train, y_train, x_val, y_val,
            target=target, feature_set=feature_set, shared_scale_spans=built.embedding_spans,
            config=RidgeConfig(seed=self.seed), quiet=self.quiet,
            description=f"{self.task} · {self.split_column} · {feature_set}",
        )  # fmt: skip
        return head, x_test

    def head_options(self, feature_set: str) -> dict[str, Any]:
        """How every head of this run is trained; its progress line names the task, split and features."""
        description = f"{self.task} · {self.split_column} · {feature_set}"
        return {"feature_set": feature_set, "config": self.config, "quiet": self.quiet, "description": description}

    def parts(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return values[self.masks["train"]], values[self.masks["val"]], values[self.masks["test"]]


def _popularity_buckets(run: _Run, _target: str) -> list[ModelResult]:
    labels = list(BUCKET_NAMES)
    y_train, _, y_test = run.parts(bucket_labels(run.table))
    results = []
    for feature_set in (*POPULARITY_MODELS, METADATA_ONLY):
        head, x_test = run.ridge(feature_set, LOG10_VIEWS)
        metrics = _bucket_metrics(run, y_test, head.predict_bucket(x_test), head.bucket_probabilities(x_test))
        results.append(_head_result(feature_set, metrics, head.config.outcome))
    seconds, majority = _timed(MajorityClass.fit, y_train)
    metrics = _bucket_metrics(run, y_test, majority.predict(len(y_test)), majority.scores(len(y_test), labels))
    results.append(ModelResult(MAJORITY, BASELINE, metrics, seconds))
    return results


def _popularity_regression(run: _Run, target: str) -> list[ModelResult]:
    y_train, _, y_test = run.parts(regression_target(run.table, target))
    results = []
    for feature_set in (*POPULARITY_MODELS, METADATA_ONLY):
        head, x_test = run.ridge(feature_set, target)
        metrics = regression_metrics(y_test, head.predict(x_test), resamples=run.resamples, seed=run.seed)
        results.append(_head_result(feature_set, metrics, head.config.outcome))
    channels_train, _, channels_test = run.parts(channel_labels(run.table))
    seconds, channel_mean = _timed(ChannelMean.fit, channels_train, y_train)
    metrics = regression_metrics(y_test, channel_mean.predict(channels_test), resamples=run.resamples, seed=run.seed)
    note = _channel_mean_note(channel_mean.seen_fraction(channels_test))
    results.append(ModelResult(CHANNEL_MEAN, BASELINE, metrics, seconds, note=note))
    return results


def _channel(run: _Run, _target: str) -> list[ModelResult]:
    y_train, y_val, y_test = run.parts(channel_labels(run.table))
    labels = sorted(set(y_train))
    x_train, x_val, x_test = run.parts(run.features(IMAGE))
    spans = run.built(IMAGE).embedding_spans
    head = train_classifier(
        x_train, y_train, x_val, y_val, labels=labels, shared_scale_spans=spans, **run.head_options(IMAGE)
    )
    known = set(labels)
    unseen = sum(label not in known for label in y_test)
    note = f"{unseen} test videos from channels unseen in training, counted as errors" if unseen else ""
    metrics = _channel_metrics(run, labels, y_test, head.predict(x_test), head.predict_proba(x_test))
    results = [_head_result(IMAGE, metrics, head.config.outcome, note=note)]
    seconds, majority = _timed(MajorityClass.fit, y_train)
    metrics = _channel_metrics(run, labels, y_test, majority.predict(len(y_test)), majority.scores(len(y_test), labels))
    results.append(ModelResult(MAJORITY, BASELINE, metrics, seconds))
    return results


def _genre(run: _Run, _target: str) -> list[ModelResult]:
    assert run.genre_inputs is not None, "skip_reason lets the genre task run only with its sequences loaded"
    parts = {part: run.genre_inputs.within(run.masks[part]) for part in SPLITS}
    genres = genre_labels(run.table)
    y_train, y_val, y_test = (genres[parts[part].rows] for part in SPLITS)
    labels = sorted(set(y_train))
    unseen = sum(label not in set(labels) for label in y_test)
    note = f"{unseen} test videos of genres unseen in training, counted as errors" if unseen else ""
    results = []
    for variant, streams in VARIANTS.items():
        description = f"{run.task} · {run.split_column} · {variant}"
        model = train_genre(
            parts["train"], y_train, parts["val"], y_val, labels=labels, streams=streams,
            config=run.genre_config, quiet=run.quiet, description=description,
        )  # fmt: skip
        test = parts["test"]
        metrics = _genre_metrics(run, labels, y_test, model.predict(test), model.predict_proba(test))
        outcome = model.config.outcome
        results.append(
            ModelResult(variant, MODEL, metrics, outcome.seconds, outcome.epochs, note if variant == TWO_STREAM else "")
        )
    seconds, majority = _timed(MajorityClass.fit, y_train)
    metrics = _genre_metrics(run, labels, y_test, majority.predict(len(y_test)), majority.scores(len(y_test), labels))
    results.append(ModelResult(MAJORITY, BASELINE, metrics, seconds))
    return results


def _timed(fit: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Seconds a baseline takes to fit, and the fitted baseline: its row's "train s"."""
    started = time.perf_counter()
    fitted = fit(*args)
    return time.perf_counter() - started, fitted


def _channel_mean_note(seen: float) -> str:
    if seen == 0:
        return "no test video's channel was seen in training: this baseline is the global mean"
    if seen == 1:
        return "every test video's channel was seen in training"
    return f"{seen:.0%} of test videos from a channel seen in training; the rest get the global mean"


_RUNNERS: dict[str, Callable[[_Run, str], list[ModelResult]]] = {
    POPULARITY_BUCKET: _popularity_buckets,
    POPULARITY_REGRESSION: _popularity_regression,
    CHANNEL: _channel,
    GENRE: _genre,
}


def _bucket_metrics(run: _Run, y_test: np.ndarray, predicted: np.ndarray, scores: np.ndarray) -> Metrics:
    return classification_metrics(
        y_test,
        predicted,
        labels=BUCKET_NAMES,
        scores=scores,
        k=BUCKET_TOP_K,
        ordinal=True,
        resamples=run.resamples,
        seed=run.seed,
    )


def _channel_metrics(
    run: _Run, labels: list[str], y_test: np.ndarray, predicted: np.ndarray, scores: np.ndarray
) -> Metrics:
    return classification_metrics(
        y_test, predicted, labels=labels, scores=scores, k=CHANNEL_TOP_K, resamples=run.resamples, seed=run.seed
    )


def _genre_metrics(
    run: _Run, labels: list[str], y_test: np.ndarray, predicted: np.ndarray, scores: np.ndarray
) -> Metrics:
    return classification_metrics(
        y_test,
        predicted,
        labels=labels,
        scores=scores,
        k=GENRE_TOP_K,
        gap_k=GENRE_GAP_K,
        resamples=run.resamples,
        seed=run.seed,
    )


def _head_result(feature_set: str, metrics: Metrics, outcome: TrainOutcome, note: str = "") -> ModelResult:
    role = BASELINE if feature_set == METADATA_ONLY else MODEL
    # Ridge is solved in closed form: no epochs to report.
    epochs = outcome.epochs if outcome.epochs > 0 else None
    return ModelResult(feature_set, role, metrics, outcome.seconds, epochs, note)


# --- rendering -----------------------------------------------------------------------------------------------------


def render_task(report: TaskReport, console: Console) -> None:
    heading = f"{report.task} · {SPLIT_NAMES.get(report.split_column, report.split_column)}"
    counts = " / ".join(f"{part} {report.rows[part]}" for part in SPLITS)
    if report.skipped:
        # Styled as text, not markup: the CLI's console prints markup verbatim so that paths and reasons stay intact.
        console.print(Text.assemble((heading, "bold"), f" ({counts}): {report.skipped}"))
        return
    table = Table(title=f"{heading}  ({counts})", title_justify="left")
    if isinstance(report.results[0].metrics, ClassificationMetrics):
        _classification_table(table, report.results)
    else:
        _regression_table(table, report.results)
    console.print(table)
    for result in report.results:
        if result.note:
            console.print(f"  {result.name}: {result.note}")


def _classification_table(table: Table, results: list[ModelResult]) -> None:
    first = results[0].metrics
    ordinal = first.spearman is not None
    ranked = first.gap is not None
    for header in ("model", "role", "accuracy [95% CI]", "macro-F1 [95% CI]", f"top-{first.top_k}"):
        table.add_column(header, justify="left" if header in ("model", "role") else "right")
    if ranked:
        table.add_column(f"GAP@{first.gap_k}", justify="right")
    if ordinal:
        table.add_column("Spearman [95% CI]", justify="right")
    table.add_column("train s", justify="right")
    table.add_column("epochs", justify="right")
    for result in results:
        metrics = result.metrics
        cells = [
            result.name,
            result.role,
            _with_interval(metrics.accuracy, metrics.accuracy_ci),
            _with_interval(metrics.macro_f1, metrics.macro_f1_ci),
            _number(metrics.top_k_accuracy),
        ]
        if ranked:
            cells.append(_number(metrics.gap))
        if ordinal:
            cells.append(_with_interval(metrics.spearman, metrics.spearman_ci))
        table.add_row(*cells, f"{result.train_seconds:.2f}", _number(result.epochs, "d"))


def _regression_table(table: Table, results: list[ModelResult]) -> None:
    for header in ("model", "role", "MAE [95% CI]", "RMSE", "R²", "Spearman [95% CI]", "train s", "epochs"):
        table.add_column(header, justify="left" if header in ("model", "role") else "right")
    for result in results:
        metrics = result.metrics
        table.add_row(
            result.name,
            result.role,
            _with_interval(metrics.mae, metrics.mae_ci),
            _number(metrics.rmse),
            _number(metrics.r2),
            _with_interval(metrics.spearman, metrics.spearman_ci),
            f"{result.train_seconds:.2f}",
            _number(result.epochs, "d"),
        )


def _with_interval(value: float | None, interval: Interval | None) -> str:
    if value is None or interval is None:
        return "—"
    return f"{value:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _number(value: float | int | None, spec: str = ".3f") -> str:
    return "—" if value is None or value != value else format(value, spec)
