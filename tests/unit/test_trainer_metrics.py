"""Metrics against values worked out by hand, and bootstrap intervals that behave like intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tubelens.trainer import metrics as m


def test_macro_scores_count_a_never_predicted_class_as_zero() -> None:
    # Truth 0 0 1 1 2 2, prediction 0 0 1 0 1 1: class 2 is never predicted.
    # precision 2/3, 1/3, 0; recall 1, 1/2, 0; F1 0.8, 0.4, 0.
    precision, recall, f1 = m.macro_scores([0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 1, 1])
    assert precision == pytest.approx(1 / 3)
    assert recall == pytest.approx(1 / 2)
    assert f1 == pytest.approx(0.4)


def test_macro_scores_leave_out_classes_absent_from_truth_and_prediction() -> None:
    with_absent_label = m.macro_scores(["a", "a", "b"], ["a", "b", "b"], labels=["a", "b", "never"])
    assert with_absent_label == pytest.approx(m.macro_scores(["a", "a", "b"], ["a", "b", "b"]))
    assert with_absent_label[2] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_confusion_rows_are_truth_and_columns_prediction() -> None:
    confusion = m.confusion_matrix(["a", "a", "a", "b"], ["b", "b", "a", "b"], labels=["a", "b"])
    assert confusion.tolist() == [[1, 2], [0, 1]]


def test_confusion_keeps_the_given_label_order_and_appends_unexpected_values() -> None:
    assert m.label_order(["x", "b"], ["a", "y"], labels=["b", "a"]) == ["b", "a", "x", "y"]
    confusion = m.confusion_matrix(["unseen"], ["a"], labels=["a"])
    assert confusion.tolist() == [[0, 0], [1, 0]]


def test_accuracy_and_top_k_accuracy() -> None:
    assert m.accuracy([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    scores = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    truth = ["b", "a", "c"]  # ranks of the true label: 2nd, 3rd, 3rd
    assert m.top_k_accuracy(truth, scores, ["a", "b", "c"], k=1) == 0.0
    assert m.top_k_accuracy(truth, scores, ["a", "b", "c"], k=2) == pytest.approx(1 / 3)
    assert m.top_k_accuracy(truth, scores, ["a", "b", "c"], k=3) == 1.0


def test_regression_errors_by_hand() -> None:
    truth, predicted = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 1.0]  # errors 1, 0, 0, 3
    assert m.mae(truth, predicted) == 1.0
    assert m.rmse(truth, predicted) == pytest.approx(math.sqrt(10 / 4))


def test_r2_of_a_perfect_and_of_a_mean_predictor() -> None:
    truth = np.array([3.0, 5.0, 4.0, 8.0])
    assert m.r2(truth, truth) == 1.0
    assert m.r2(truth, np.full(4, truth.mean())) == 0.0
    assert m.r2(truth, truth[::-1]) < 0
    assert math.isnan(m.r2([2.0, 2.0], [1.0, 3.0]))  # nothing to explain


def test_spearman_uses_average_ranks_for_ties() -> None:
    # Ranks of x: 1, 2.5, 2.5, 4; of y: 1, 3, 2, 4. Centred: (-1.5, 0, 0, 1.5) and (-1.5, 0.5, -0.5, 1.5):
    # covariance 4.5, sums of squares 4.5 and 5, so rho = 4.5 / sqrt(22.5) = 3 / sqrt(10).
    assert m.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert m.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert m.spearman([1, 2, 3], [9, 9, 9]) == 0.0  # a constant ranks nothing


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)

    def interval(n: int) -> tuple[float, m.Interval]:
        truth = rng.integers(0, 2, n)
        predicted = np.where(rng.random(n) < 0.7, truth, 1 - truth)
        result = m.classification_metrics(truth, predicted, seed=1)
        return result.accuracy, result.accuracy_ci

    small_estimate, small = interval(100)
    large_estimate, large = interval(10_000)
    assert small.contains(small_estimate) and large.contains(large_estimate)
    assert large.width < small.width / 5  # ~ 1 / sqrt(n): ten times narrower for a hundred times the rows
    assert large.contains(0.7) and small.resamples == m.RESAMPLES and small.level == 0.95


def test_bootstrap_is_seeded() -> None:
    truth = np.arange(50, dtype=np.float64)
    predicted = truth + np.random.default_rng(2).normal(0, 10, 50)
    first = m.regression_metrics(truth, predicted, seed=4)
    assert m.regression_metrics(truth, predicted, seed=4) == first
    assert m.regression_metrics(truth, predicted, seed=5).spearman_ci != first.spearman_ci
    assert first.spearman_ci.contains(first.spearman) and first.mae_ci.contains(first.mae)


def test_batched_macro_f1_matches_the_one_at_a_time_definition() -> None:
    rng = np.random.default_rng(7)
    truth, predicted = rng.integers(0, 4, (5, 30)), rng.integers(0, 4, (5, 30))
    batched = m._macro_f1_statistic(4)(truth, predicted)
    one_by_one = [m.macro_scores(t, p)[2] for t, p in zip(truth, predicted, strict=True)]
    np.testing.assert_allclose(batched, one_by_one)


def test_ordinal_classification_reports_rank_agreement() -> None:
    labels = ["low", "mid", "high"]
    near_miss = m.classification_metrics(["low", "mid", "high"], ["mid", "high", "high"], labels=labels, ordinal=True)
    far_miss = m.classification_metrics(["low", "mid", "high"], ["high", "low", "high"], labels=labels, ordinal=True)
    assert near_miss.accuracy == far_miss.accuracy and near_miss.spearman > far_miss.spearman
    assert m.classification_metrics(["a"], ["a"]).spearman is None


def test_results_serialize_to_json_with_nan_as_null() -> None:
    regression = m.regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], resamples=50)
    document = json.loads(regression.to_json())
    assert document["r2"] is None and document["mae"] == pytest.approx(2 / 3)
    assert document["mae_ci"]["resamples"] == 50
    classification = json.loads(
        m.classification_metrics(
            [0, 1, 1], [0, 1, 0], labels=[0, 1], scores=np.eye(2)[[0, 1, 0]], k=1, resamples=50
        ).to_json()
    )
    assert classification["labels"] == ["0", "1"] and classification["confusion"] == [[1, 0], [1, 1]]
    assert classification["top_k"] == 1 and classification["top_k_accuracy"] == pytest.approx(2 / 3)
