"""The ridge regressor behind the popularity model: a validated penalty, block-scaled embeddings, and a predictive
distribution (interval and view-bucket probabilities) read off the validation residuals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tubelens.modelkit import ts_handler
from tubelens.modelkit.features import Standardizer
from tubelens.modelkit.schema import BUCKET_NAMES
from tubelens.trainer.heads import (
    Regressor,
    RidgeConfig,
    bucket_probabilities,
    bucket_thresholds,
    load_head,
    train_ridge,
)

META, EMBED = 4, 256


def _data(seed: int, rows: int, *, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Four metadata columns on their own scales plus a 256-d unit-norm embedding block, one direction of which
    moves the target (log10 views around 4)."""
    rng = np.random.default_rng(seed)
    meta = rng.standard_normal((rows, META)) * np.array([1.0, 10.0, 0.1, 100.0])
    embedding = rng.standard_normal((rows, EMBED))
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    y = 4 + 0.5 * meta[:, 0] + 0.03 * meta[:, 1] + 20 * embedding[:, 0] + rng.normal(0, noise, rows)
    return np.column_stack([meta, embedding]).astype(np.float32), y


def _fit(seed: int = 0, rows: int = 600, **options) -> tuple[Regressor, np.ndarray, np.ndarray]:
    x, y = _data(seed, rows + 400)
    train, val, test = slice(0, rows), slice(rows, rows + 200), slice(rows + 200, rows + 400)
    spans = options.pop("shared_scale_spans", ((META, META + EMBED),))
    head = train_ridge(
        x[train], y[train], x[val], y[val], target="log10_views", feature_set="test",
        shared_scale_spans=spans, quiet=True, **options,
    )  # fmt: skip
    return head, x[test], y[test]


def test_ridge_recovers_a_linear_signal_with_residuals_near_the_noise() -> None:
    head, x, y = _fit()
    errors = head.predict(x) - y
    assert np.sqrt(np.mean(errors**2)) < 0.45  # noise is 0.3; an unfitted model would be off by about 1.6
    assert 0.2 < head.sigma < 0.5
    assert head.config.ridge_lambda in RidgeConfig().lambdas


def test_the_penalty_grows_when_there_is_little_data_and_much_noise() -> None:
    plenty, _, _ = _fit(rows=600)
    x, y = _data(3, 260, noise=3.0)
    scarce = train_ridge(
        x[:60], y[:60], x[60:160], y[60:160], target="log10_views", feature_set="test",
        shared_scale_spans=((META, META + EMBED),), quiet=True,
    )  # fmt: skip
    assert scarce.config.ridge_lambda > plenty.config.ridge_lambda


def test_embedding_blocks_share_one_scale_and_metadata_columns_keep_their_own() -> None:
    x, _ = _data(1, 500)
    standardizer = Standardizer.fit(x, shared_scale_spans=((META, META + EMBED),))
    assert len(set(standardizer.scale[META:].tolist())) == 1
    assert len(set(standardizer.scale[:META].tolist())) == META
    scaled = standardizer.transform(x)[:, META:]
    assert np.mean(np.sum(scaled.astype(np.float64) ** 2, axis=1)) == pytest.approx(1.0, rel=1e-4)


def test_bucket_thresholds_are_the_log10_bucket_edges_of_views_plus_one() -> None:
    thresholds = bucket_thresholds("log10_views")
    assert len(thresholds) == len(BUCKET_NAMES) - 1
    assert thresholds[0] == pytest.approx(math.log10(1001))
    assert bucket_thresholds("log10_views_per_subscriber") == []


def test_bucket_probabilities_sum_to_one_and_peak_at_the_predicted_bucket() -> None:
    probabilities = bucket_probabilities(np.array([2.0, 4.5, 9.0]), 0.3, bucket_thresholds("log10_views"))
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert probabilities.argmax(axis=1).tolist() == [0, 2, 6]
    # Half a decade from the nearest edge with sigma 0.3: most mass, but not all, in the bucket.
    assert 0.9 < probabilities[1, 2] < 0.99


def test_bucket_probabilities_need_a_log10_views_target() -> None:
    with pytest.raises(ValueError, match="log10-views"):
        bucket_probabilities(np.array([1.0]), 0.3, [])


def test_predicted_buckets_and_interval_follow_the_prediction() -> None:
    head, x, y = _fit()
    low, high = head.interval(x)
    predicted = head.predict(x)
    np.testing.assert_allclose(high - predicted, predicted - low)
    assert 0.85 < np.mean((y >= low) & (y <= high)) <= 1.0  # a 95 % interval covers most of the held-out rows
    buckets = head.predict_bucket(x)
    assert set(buckets) <= set(BUCKET_NAMES)


def test_a_saved_ridge_head_loads_back_with_its_distribution(tmp_path: Path) -> None:
    head, x, _ = _fit()
    head.save(tmp_path / "head")
    loaded = load_head(tmp_path / "head")
    assert isinstance(loaded, Regressor)
    np.testing.assert_array_equal(loaded.predict(x), head.predict(x))
    np.testing.assert_array_equal(loaded.bucket_probabilities(x), head.bucket_probabilities(x))
    assert loaded.config.ridge_lambda == head.config.ridge_lambda


def test_ridge_is_deterministic() -> None:
    first, x, _ = _fit()
    second, _, _ = _fit()
    np.testing.assert_array_equal(first.predict(x), second.predict(x))


def test_ridge_needs_validation_rows() -> None:
    x, y = _data(0, 50)
    with pytest.raises(ValueError, match="validation rows"):
        train_ridge(x, y, x[:0], y[:0], target="log10_views", feature_set="test", quiet=True)


def test_a_regressor_without_a_spread_says_so(tmp_path: Path) -> None:
    head, x, _ = _fit()
    head.config.residual_sigma = 0.0
    with pytest.raises(ValueError, match="train_ridge"):
        head.bucket_probabilities(x)


def test_per_dimension_block_scaling_gives_unit_variance_per_dimension_on_average() -> None:
    x, _ = _data(2, 500)
    standardizer = Standardizer.fit(x, shared_scale_spans=((META, META + EMBED),), per_dimension=True)
    scaled = standardizer.transform(x)[:, META:].astype(np.float64)
    assert np.mean(np.var(scaled, axis=0)) == pytest.approx(1.0, rel=1e-3)
    assert len(set(standardizer.scale[META:].tolist())) == 1  # one scale: the block's geometry is kept


def test_a_clamped_column_is_held_to_its_training_range_in_training_and_serving(tmp_path: Path) -> None:
    head, x, _ = _fit(clamp={"age": 0})
    [rule] = head.config.clamp
    assert rule["name"] == "age" and rule["low"] < 0 < rule["high"]
    outside = x[:3].copy()
    outside[:, 0] = [rule["low"] - 50, rule["high"] + 50, 0.0]
    at_edges = outside.copy()
    at_edges[:, 0] = [rule["low"], rule["high"], 0.0]
    # Past the training range the prediction is the edge's, not a linear extrapolation of the slope.
    np.testing.assert_array_equal(head.predict(outside), head.predict(at_edges))

    head.save(tmp_path / "head")
    served = ts_handler.HeadService(tmp_path / "head")
    [rows] = served.answer([{"features": outside.tolist()}])
    np.testing.assert_allclose([row["prediction"] for row in rows], head.predict(outside), rtol=0, atol=1e-9)
    assert [row.get("clamped", []) for row in rows] == [["age"], ["age"], []]
