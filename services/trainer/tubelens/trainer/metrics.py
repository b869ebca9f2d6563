"""Metrics with their uncertainty: every headline number comes with a seeded percentile-bootstrap 95 % interval.

Classification: accuracy, macro precision/recall/F1, a confusion matrix (rows = truth, columns = prediction, in a
stated label order), top-k accuracy, Global Average Precision (YouTube-8M's GAP@k, for genre), and for ordinal labels
(view buckets) the rank agreement of predicted and true class. Regression: MAE, RMSE, R², Spearman. Intervals come
with accuracy and macro-F1, and with MAE and Spearman.

The statistics are written over the last axis so that one function computes both the point estimate (1-D input) and
all bootstrap replicates at once (2-D input, one resample per row); a thousand resamples then cost a few array passes.
Only numpy and scipy: the trainer image carries no scikit-learn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

RESAMPLES = 1000
LEVEL = 0.95
# Rows of resampled indices materialized at once: bounds memory at CHUNK * n values per array.
_CHUNK = 100


@dataclass(frozen=True)
class Interval:
    """A percentile-bootstrap confidence interval."""

    low: float
    high: float
    level: float = LEVEL
    resamples: int = RESAMPLES

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class ClassificationMetrics:
    n: int
    labels: list[str]
    accuracy: float
    accuracy_ci: Interval
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro_f1_ci: Interval
    confusion: list[list[int]]  # rows = truth, columns = prediction, both in `labels` order
    top_k: int | None = None
    top_k_accuracy: float | None = None
    # Ordinal labels only: Spearman between predicted and true class position, so that a miss by one bucket
    # counts for less than a miss by five.
    spearman: float | None = None
    spearman_ci: Interval | None = None
    # Global Average Precision over each row's gap_k best-scoring labels (`gap`), where scores were given.
    gap_k: int | None = None
    gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class RegressionMetrics:
    n: int
    mae: float
    mae_ci: Interval
    rmse: float
    r2: float
    spearman: float
    spearman_ci: Interval

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def jsonable(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become null (JSON has neither), numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- classification ------------------------------------------------------------------------------------------------


def label_order(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> list:
    """The given labels in their order, then any other value seen in truth or prediction, sorted."""
    order = list(labels) if labels is not None else []
    known = set(order)
    extra = {value for value in [*np.asarray(y_true).tolist(), *np.asarray(y_pred).tolist()] if value not in known}
    return order + sorted(extra, key=str)


def encode(values: Sequence, labels: Sequence) -> np.ndarray:
    """Each value's position in `labels`; -1 for a value not among them."""
    position = {label: index for index, label in enumerate(labels)}
    return np.fromiter((position.get(value, -1) for value in np.asarray(values).tolist()), dtype=np.int64)


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    return float(_accuracy(np.asarray(y_true), np.asarray(y_pred)))


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> np.ndarray:
    """Counts with rows = true label and columns = predicted label, both in `label_order` order."""
    order = label_order(y_true, y_pred, labels)
    return _confusions(encode(y_true, order), encode(y_pred, order), len(order))


def per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class; 0 where a class was never predicted (precision) or never true (recall)."""
    hits = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    predicted = confusion.sum(axis=-2)
    true = confusion.sum(axis=-1)
    precision = _ratio(hits, predicted)
    recall = _ratio(hits, true)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1


def macro_scores(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> tuple[float, float, float]:
    """Macro precision, recall and F1 over the classes that occur in truth or prediction.

    A class absent from both has no defined score; averaging a 0 for it in would punish a model for a test set that
    happens to lack a bucket.
    """
    order = label_order(y_true, y_pred, labels)
    confusion = _confusions(encode(y_true, order), encode(y_pred, order), len(order))
    precision, recall, f1 = per_class_scores(confusion)
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    return float(precision[present].mean()), float(recall[present].mean()), float(f1[present].mean())


def top_k_accuracy(y_true: Sequence, scores: np.ndarray, labels: Sequence, k: int) -> float:
    """Share of rows whose true label is among the k highest-scoring columns (`scores` columns follow `labels`)."""
    return float(_top_k_hits(encode(y_true, labels), np.asarray(scores), k).mean())


def gap(y_true: Sequence, scores: np.ndarray, labels: Sequence, k: int = 20) -> float:
    """Global Average Precision at k, as YouTube-8M scores it: each row's k highest-scoring labels (`scores` columns
    follow `labels`) are pooled over all rows and sorted by score, and the precision at each correct prediction in
    that one list is summed and divided by the number of true labels.

    Genre is single-label, so every row has exactly one true label and the divisor is the number of rows: a row
    whose true label is not among its k best (or not among `labels` at all) adds a positive that is never found.
    Unlike top-k accuracy, GAP also asks that confident answers be the right ones: a correct label scored low on one
    row ranks below wrong labels scored high on others. Ties keep row order, then each row's rank order (a stable
    sort), so the value is the same on every run. NaN for no rows.
    """
    if k < 1:
        raise ValueError(f"GAP needs k >= 1, got {k}")
    truth = encode(y_true, labels)
    scores = np.asarray(scores, dtype=np.float64)
    if len(truth) == 0:
        return math.nan
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    pooled_scores = np.take_along_axis(scores, best, axis=1).ravel()
    hits = (best == truth[:, None]).ravel()[np.argsort(-pooled_scores, kind="stable")]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision_at * hits) / len(truth))


# --- regression ----------------------------------------------------------------------------------------------------


def mae(y_true: Sequence, y_pred: Sequence) -> float:
    return float(_mae(np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)))


def rmse(y_true: Sequence, y_pred: Sequence) -> float:
    error = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return float(np.sqrt(np.mean(error**2)))


def r2(y_true: Sequence, y_pred: Sequence) -> float:
    """1 - SS_res / SS_tot: 1 for a perfect predictor, 0 for the test mean, negative for worse; NaN if y is constant."""
    truth = np.asarray(y_true, dtype=np.float64)
    residual = np.sum((truth - np.asarray(y_pred, dtype=np.float64)) ** 2)
    total = np.sum((truth - truth.mean()) ** 2)
    return float(1.0 - residual / total) if total > 0 else math.nan


def spearman(a: Sequence, b: Sequence) -> float:
    """Spearman's rho with average ranks for ties; 0 when either side is constant.

    A constant prediction (a majority class, a global mean) orders nothing, so it scores "no association" rather than
    NaN and sits in the same column as the models it is a baseline for.
    """
    return float(_spearman(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


# --- bootstrap -----------------------------------------------------------------------------------------------------


def bootstrap_interval(
    statistic: Callable[..., np.ndarray],
    *arrays: np.ndarray,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap: rows resampled with replacement, `statistic` computed over the last axis of each.

    `statistic` receives the arrays indexed by a (resamples, n) matrix and returns one value per resample.
    """
    n = len(arrays[0])
    if n == 0 or resamples == 0:  # no rows, or only the point value wanted: no interval
        return Interval(math.nan, math.nan, level, resamples)
    rng = np.random.default_rng(seed)
    replicates = []
    for start in range(0, resamples, _CHUNK):
        rows = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
        replicates.append(np.asarray(statistic(*(array[rows] for array in arrays)), dtype=np.float64))
    values = np.concatenate(replicates)
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high), level, resamples)


# --- the typed results ---------------------------------------------------------------------------------------------


def classification_metrics(
    y_true: Sequence,
    y_pred: Sequence,
    *,
    labels: Sequence | None = None,
    scores: np.ndarray | None = None,
    k: int | None = None,
    ordinal: bool = False,
    gap_k: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ClassificationMetrics:
    """Everything a classification table shows. `scores` (columns in `labels` order) enable top-k accuracy and, with
    `gap_k`, GAP@gap_k; `ordinal` (labels listed from lowest to highest) enables Spearman between predicted and true
    class."""
    order = label_order(y_true, y_pred, labels)
    truth, predicted = encode(y_true, order), encode(y_pred, order)
    confusion = _confusions(truth, predicted, len(order))
    precision, recall, f1 = macro_scores(y_true, y_pred, order)
    macro_f1_of = _macro_f1_statistic(len(order))
    result: dict[str, Any] = {
        "n": len(truth),
        "labels": [str(label) for label in order],
        "accuracy": float(_accuracy(truth, predicted)),
        "accuracy_ci": bootstrap_interval(_accuracy, truth, predicted, resamples=resamples, seed=seed),
        "macro_precision": precision,
        "macro_recall": recall,
        "macro_f1": f1,
        "macro_f1_ci": bootstrap_interval(macro_f1_of, truth, predicted, resamples=resamples, seed=seed),
        "confusion": confusion.tolist(),
    }
    if scores is not None and k is not None and labels is not None:
        result["top_k"] = k
        result["top_k_accuracy"] = float(_top_k_hits(encode(y_true, labels), np.asarray(scores), k).mean())
    if scores is not None and gap_k is not None and labels is not None:
        result["gap_k"] = gap_k
        result["gap"] = gap(y_true, scores, labels, gap_k)
    if ordinal:
        a, b = truth.astype(np.float64), predicted.astype(np.float64)
        result["spearman"] = float(_spearman(a, b))
        result["spearman_ci"] = bootstrap_interval(_spearman, a, b, resamples=resamples, seed=seed)
    return ClassificationMetrics(**result)


def regression_metrics(
    y_true: Sequence, y_pred: Sequence, *, resamples: int = RESAMPLES, seed: int = 0
) -> RegressionMetrics:
    truth = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(y_pred, dtype=np.float64)
    return RegressionMetrics(
        n=len(truth),
        mae=float(_mae(truth, predicted)),
        mae_ci=bootstrap_interval(_mae, truth, predicted, resamples=resamples, seed=seed),
        rmse=rmse(truth, predicted),
        r2=r2(truth, predicted),
        spearman=float(_spearman(truth, predicted)),
        spearman_ci=bootstrap_interval(_spearman, truth, predicted, resamples=resamples, seed=seed),
    )


# --- statistics over the last axis ---------------------------------------------------------------------------------


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.mean(truth == predicted, axis=-1) if truth.shape[-1] else np.asarray(math.nan)


def _confusions(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """One classes x classes matrix per row of the (..., n) index arrays, by a single bincount over offset codes."""
    leading = truth.shape[:-1]
    batches = int(np.prod(leading, dtype=np.int64))
    offsets = np.arange(batches, dtype=np.int64).reshape(*leading, 1) * classes * classes
    codes = offsets + truth * classes + predicted
    counts = np.bincount(codes.ravel(), minlength=batches * classes * classes)
    return counts.reshape(*leading, classes, classes)


def _macro_f1_statistic(classes: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        confusion = _confusions(truth, predicted, classes)
        f1 = per_class_scores(confusion)[2]
        present = (confusion.sum(axis=-2) + confusion.sum(axis=-1)) > 0
        return (f1 * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)

    return macro_f1


def _top_k_hits(truth: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    # Stable sort on negated scores: ties go to the earlier label, the same answer on every run.
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (best == truth[:, None]).any(axis=1)


def _mae(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(truth - predicted), axis=-1)


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of average ranks along the last axis; 0 where either side is constant."""
    ranked_a = stats.rankdata(a, axis=-1) if a.shape[-1] else a
    ranked_b = stats.rankdata(b, axis=-1) if b.shape[-1] else b
    centred_a = ranked_a - ranked_a.mean(axis=-1, keepdims=True)
    centred_b = ranked_b - ranked_b.mean(axis=-1, keepdims=True)
    spread = np.sqrt(np.sum(centred_a**2, axis=-1) * np.sum(centred_b**2, axis=-1))
    return _ratio(np.sum(centred_a * centred_b, axis=-1), spread)
