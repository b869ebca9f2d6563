"""Reading `Report.to_dict()` (tubelens.trainer.evaluate) for the page: which numbers, in which order, which best.

Only the dict is read, never the trainer's classes, so a report can be drawn from a saved `metrics.json` by a
process without the trainer installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_SPLIT_ORDER = ("split_time", "split_channel", "split_random")
SPLIT_TITLES = {
    "split_time": "time split (train oldest, test newest)",
    "split_channel": "held-out channels",
    "split_random": "random split (flatters every model)",
}
SPLIT_SHORT = {"split_time": "time split", "split_channel": "held-out channels", "split_random": "random split"}
TASK_TITLES = {
    "popularity_bucket": "view buckets",
    "popularity_regression": "log10 views (regression)",
    "channel": "channel",
    "genre": "genre",
}
MODEL = "model"
BASELINE = "baseline"
# The number each task is judged by. Ranking views right matters more than hitting them (the architecture's real-
# data numbers are Spearman); bucket and genre classes are unbalanced, so macro-F1 rather than accuracy.
HEADLINE = {
    "popularity_bucket": "macro_f1",
    "popularity_regression": "spearman",
    "channel": "accuracy",
    "genre": "macro_f1",
}
DIGITS = 3


@dataclass(frozen=True)
class Column:
    key: str  # the metric's key in a result's "metrics"
    header: str
    interval: str | None = None  # the key of its 95 % interval, when it has one
    higher_is_better: bool = True


CLASSIFICATION = (
    Column("accuracy", "accuracy", "accuracy_ci"),
    Column("macro_f1", "macro-F1", "macro_f1_ci"),
)
REGRESSION = (
    Column("mae", "MAE", "mae_ci", higher_is_better=False),
    Column("rmse", "RMSE", higher_is_better=False),
    Column("r2", "R²"),
    Column("spearman", "Spearman", "spearman_ci"),
)


def split_order(evaluation: dict[str, Any]) -> list[str]:
    """The evaluation's own split order (time, held-out channels, random), then any other split it holds."""
    order = list(evaluation.get("split_order") or DEFAULT_SPLIT_ORDER)
    seen = [task.get("split_column", "") for task in evaluation.get("tasks", [])]
    return order + sorted({split for split in seen if split not in order})


def tasks_of_split(evaluation: dict[str, Any], split: str) -> list[dict[str, Any]]:
    return [task for task in evaluation.get("tasks", []) if task.get("split_column") == split]


def find_task(evaluation: dict[str, Any], task: str, split: str) -> dict[str, Any] | None:
    return next((item for item in tasks_of_split(evaluation, split) if item.get("task") == task), None)


def ordered_results(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Models first, then baselines, each in the evaluation's order (the default model leads)."""
    results = task.get("results", [])
    return [r for r in results if r.get("role") != BASELINE] + [r for r in results if r.get("role") == BASELINE]


def columns(results: list[dict[str, Any]]) -> list[Column]:
    """The columns these results fill: top-k, GAP and Spearman appear only for the tasks that compute them."""
    if not results:
        return []
    if results[0].get("kind") == "regression":
        return list(REGRESSION)
    found = [result["metrics"] for result in results]
    extra = []
    top_k = next((m["top_k"] for m in found if m.get("top_k_accuracy") is not None), None)
    if top_k is not None:
        extra.append(Column("top_k_accuracy", f"top-{top_k}"))
    gap_k = next((m["gap_k"] for m in found if m.get("gap") is not None), None)
    if gap_k is not None:
        extra.append(Column("gap", f"GAP@{gap_k}"))
    if any(m.get("spearman") is not None for m in found):
        extra.append(Column("spearman", "Spearman (ordinal)", "spearman_ci"))
    return [*CLASSIFICATION, *extra]


def headline_key(task: dict[str, Any]) -> str:
    results = task.get("results", [])
    regression = bool(results) and results[0].get("kind") == "regression"
    return HEADLINE.get(task.get("task", ""), "spearman" if regression else "accuracy")


def value(result: dict[str, Any], key: str) -> float | None:
    """A finite metric value, or None for a metric the result lacks (or that JSON stored as null)."""
    number = result.get("metrics", {}).get(key)
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        return None
    return float(number)


def interval(result: dict[str, Any], key: str | None) -> tuple[float, float] | None:
    bounds = result.get("metrics", {}).get(key) if key else None
    if not isinstance(bounds, dict) or bounds.get("low") is None or bounds.get("high") is None:
        return None
    return float(bounds["low"]), float(bounds["high"])


def best(results: list[dict[str, Any]], column: Column) -> float | None:
    """The best value of a column as the page prints it (rounded), so that printed ties are all bold."""
    values = [round(v, DIGITS) for v in (value(r, column.key) for r in results) if v is not None]
    if len(values) < 2:
        return None
    return max(values) if column.higher_is_better else min(values)


def is_best(result: dict[str, Any], column: Column, best_value: float | None) -> bool:
    number = value(result, column.key)
    return best_value is not None and number is not None and round(number, DIGITS) == best_value


def fmt(number: float | None) -> str:
    return "—" if number is None else f"{number:.{DIGITS}f}"


def fmt_interval(bounds: tuple[float, float] | None) -> str:
    return "" if bounds is None else f"[{bounds[0]:.{DIGITS}f}, {bounds[1]:.{DIGITS}f}]"


def column_for(task: dict[str, Any], key: str) -> Column | None:
    return next((column for column in columns(task.get("results", [])) if column.key == key), None)


@dataclass(frozen=True)
class Headline:
    """One task's verdict on its most honest split: the default model's headline number against the best
    baseline's."""

    task: str
    split: str
    metric: str
    model: str
    model_value: float
    model_interval: tuple[float, float] | None
    baseline: str | None
    baseline_value: float | None
    verdict: str


def headlines(evaluation: dict[str, Any]) -> Iterator[Headline]:
    """Per task, the first split in split order where it ran (time before held-out channels before random)."""
    names = list(dict.fromkeys(task.get("task", "") for task in evaluation.get("tasks", [])))
    for name in names:
        for split in split_order(evaluation):
            task = find_task(evaluation, name, split)
            if task is not None and not task.get("skipped") and task.get("results"):
                found = headline(task)
                if found is not None:
                    yield found
                    break


def headline(task: dict[str, Any]) -> Headline | None:
    key = headline_key(task)
    column = column_for(task, key) or Column(key, key)
    models = [r for r in ordered_results(task) if r.get("role") != BASELINE and value(r, key) is not None]
    baselines = [r for r in ordered_results(task) if r.get("role") == BASELINE and value(r, key) is not None]
    if not models:
        return None
    model = models[0]
    sign = 1 if column.higher_is_better else -1
    rival = max(baselines, key=lambda r: sign * (value(r, key) or 0.0), default=None)
    rival_value = value(rival, key) if rival is not None else None
    bounds = interval(model, column.interval)
    return Headline(
        task=task.get("task", ""),
        split=task.get("split_column", ""),
        metric=column.header,
        model=model.get("name", ""),
        model_value=value(model, key) or 0.0,
        model_interval=bounds,
        baseline=rival.get("name") if rival is not None else None,
        baseline_value=rival_value,
        verdict=verdict(value(model, key) or 0.0, bounds, rival_value, column.higher_is_better),
    )


def verdict(model: float, bounds: tuple[float, float] | None, baseline: float | None, higher_is_better: bool) -> str:
    """Whether the model beats the best baseline, and whether its 95 % interval leaves the baseline out."""
    if baseline is None:
        return "no baseline to compare with"
    sign = 1 if higher_is_better else -1
    if sign * (model - baseline) <= 0:
        return "does not beat the best baseline"
    if bounds is not None and not (bounds[0] <= baseline <= bounds[1]):
        return "beats the best baseline, which lies outside its 95 % interval"
    return "beats the best baseline, but within its 95 % interval"
