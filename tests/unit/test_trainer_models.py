"""Heads on frozen embeddings against their baselines, on a synthetic snapshot whose truth is known.

The builder plants what the models should find: each channel's thumbnails sit around their own centre in embedding
space; within a channel they vary along a few latent directions (real embeddings have a low effective rank), and one
of those directions moves views. Views also grow with the channel's subscribers and the video's age, and nothing
else: titles carry typography but no signal. So a channel head should recognize channels, and a popularity model that
sees the image should rank newest videos better than one that sees only metadata or only the channel.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from tubelens.modelkit.features import (
    IMAGE,
    METADATA,
    METADATA_FEATURES,
    MULTIMODAL,
    TITLE,
    Standardizer,
    bucket_labels,
    features,
    metadata_features,
    regression_target,
    split_masks,
    title_cues,
)
from tubelens.modelkit.schema import BUCKET_EDGES, BUCKET_NAMES, EMBEDDING_DIM, SCHEMA
from tubelens.modelkit.text import TEXT_DIM
from tubelens.trainer import evaluate as ev
from tubelens.trainer.baselines import CHANNEL_MEAN, MAJORITY, METADATA_ONLY, ChannelMean, MajorityClass
from tubelens.trainer.heads import TrainConfig, load_head, train_classifier, train_regressor

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 60
LATENT = 16
WORDS = ("cat", "guitar", "ramen", "trip", "review", "build", "lesson", "race", "garden", "robot")


def synthetic_table(*, channels: int = 8, per_channel: int = 100, seed: int = 0, image_effect: float = 0.8) -> pa.Table:
    """A snapshot of `channels * per_channel` videos with the planted structure described above."""
    rng = np.random.default_rng(seed)
    n = channels * per_channel
    channel_of = np.repeat(np.arange(channels), per_channel)
    centres = _unit(rng.standard_normal((channels, EMBEDDING_DIM)))
    basis = np.linalg.qr(rng.standard_normal((EMBEDDING_DIM, LATENT)))[0]
    factors = rng.standard_normal((n, LATENT))
    noise = rng.standard_normal((n, EMBEDDING_DIM)) * 0.01
    embeddings = _unit(centres[channel_of] + 0.25 * factors @ basis.T + noise).astype(np.float32)

    subscribers = np.round(10 ** rng.uniform(3, 7, channels)).astype(np.int64)[channel_of]
    published = START + np.array([timedelta(seconds=float(s)) for s in rng.uniform(0, DAYS * 86400, n)])
    snapshot_at = START + timedelta(days=DAYS + 1)
    age_seconds = np.array([(snapshot_at - when).total_seconds() for when in published], dtype=np.int64)
    log_views = (
        0.7 * np.log10(subscribers)
        + 0.5 * np.log10(age_seconds / 3600)
        + image_effect * factors[:, 0]
        + rng.normal(0, 0.3, n)
    )
    views = np.round(10**log_views).astype(np.int64)
    return _table(rng, channel_of, embeddings, subscribers, published, age_seconds, views)


def _table(rng, channel_of, embeddings, subscribers, published, age_seconds, views) -> pa.Table:
    n = len(channel_of)
    channel_ids = [f"UC{number:03d}" for number in channel_of]
    order = np.argsort(published, kind="stable")
    time_parts = np.empty(n, dtype=object)
    time_parts[order] = np.where(np.arange(n) < 0.7 * n, "train", np.where(np.arange(n) < 0.85 * n, "val", "test"))
    by_channel = np.array(["train"] * 5 + ["val"] + ["test"] * 2, dtype=object)
    columns = {
        "video_id": [f"v{index:05d}" for index in range(n)],
        "channel_id": channel_ids,
        "channel_title": [f"Channel {number}" for number in channel_of],
        "title": [_title(rng) for _ in range(n)],
        "category_id": ["22"] * n,
        "published_at": list(published),
        "duration_seconds": rng.integers(30, 3600, n).astype(np.int32),
        "phash": np.zeros(n, dtype=np.uint64),
        "subscribers": subscribers,
        "views": views,
        "age_seconds": age_seconds,
        "views_24h": [None] * n,
        "log10_views": np.log10(views + 1.0),
        "view_bucket": np.searchsorted(BUCKET_EDGES, views, side="right").astype(np.int8),
        "views_per_subscriber": views / np.maximum(subscribers, 1),
        "channel": channel_ids,
        "genre": ["22"] * n,
        "thumbnail_embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), EMBEDDING_DIM),
        "thumbnail_key": [""] * n,
        "frames_vectors_key": [""] * n,
        "frame_count": np.zeros(n, dtype=np.int32),
        "audio_features_key": [""] * n,
        "audio_seconds": np.zeros(n, dtype=np.int32),
        "top_concepts": [[] for _ in range(n)],
        "split_random": rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.15, 0.15]),
        "split_channel": by_channel[channel_of % len(by_channel)],
        "split_time": time_parts,
    }
    return pa.table(columns, schema=SCHEMA)


def _title(rng: np.random.Generator) -> str:
    words = [str(word) for word in rng.choice(WORDS, size=rng.integers(2, 7))]
    if rng.random() < 0.3:
        words[0] = words[0].upper()
    return " ".join(words) + ("!" * int(rng.integers(0, 3)))


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synthetic_table()


@pytest.fixture(scope="module")
def report(table: pa.Table) -> ev.Report:
    return ev.evaluate_all(table, seed=0, resamples=300)


def _parts(table: pa.Table, split: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masks = split_masks(table, split)
    return values[masks["train"]], values[masks["val"]], values[masks["test"]]


# --- features ------------------------------------------------------------------------------------------------------


def test_metadata_features_are_named_and_finite(table: pa.Table) -> None:
    matrix = metadata_features(table)
    assert matrix.shape == (len(table), len(METADATA_FEATURES))
    assert matrix.dtype == np.float32 and np.isfinite(matrix).all()
    assert metadata_features(table.slice(0, 0)).shape == (0, len(METADATA_FEATURES))
    with pytest.raises(ValueError, match="unknown feature set"):
        features(table, "search_query")


def test_title_cues_count_typography_not_topics() -> None:
    # Words of two or more letters: WOW, this, is, AMAZING -> two of four shouted; "7" is a digit, "a" too short.
    assert title_cues("WOW this is AMAZING!! 7 a?") == (26.0, 2.0, 1.0, 0.5, 1.0)
    assert title_cues("") == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_features_never_see_the_labels(table: pa.Table) -> None:
    scrambled = table
    for name in ("views", "log10_views", "view_bucket", "views_per_subscriber", "channel"):
        column = table.column(name).to_numpy(zero_copy_only=False)
        index = table.schema.get_field_index(name)
        scrambled = scrambled.set_column(index, table.schema.field(name), pa.array(column[::-1]))
    for feature_set in (IMAGE, METADATA, MULTIMODAL):
        np.testing.assert_array_equal(features(table, feature_set).matrix, features(scrambled, feature_set).matrix)


def test_multimodal_is_image_title_and_metadata_side_by_side(table: pa.Table) -> None:
    multimodal = features(table, MULTIMODAL)
    assert multimodal.blocks == [(IMAGE, EMBEDDING_DIM), (TITLE, TEXT_DIM), (METADATA, len(METADATA_FEATURES))]
    parts = [features(table, block).matrix for block in (IMAGE, TITLE, METADATA)]
    np.testing.assert_array_equal(multimodal.matrix, np.hstack(parts))


def test_standardization_is_fitted_on_training_rows_only(table: pa.Table) -> None:
    x_train, x_val, _ = _parts(table, "split_time", features(table, METADATA).matrix)
    y_train, y_val, _ = _parts(table, "split_time", regression_target(table))
    head = train_regressor(x_train, y_train, x_val + 100, y_val, target="log10_views", feature_set=METADATA, quiet=True)
    np.testing.assert_allclose(head.config.standardizer.mean, x_train.mean(axis=0), rtol=1e-5)
    assert head.config.target_mean == pytest.approx(y_train.mean())


# --- baselines -----------------------------------------------------------------------------------------------------


def test_majority_class_predicts_the_most_frequent_label_and_breaks_ties_by_name() -> None:
    majority = MajorityClass.fit(["b", "a", "b", "c", "a"])
    assert majority.label == "a"
    assert list(majority.predict(2)) == ["a", "a"]
    np.testing.assert_allclose(majority.scores(1, ["c", "b", "z"]), [[0.2, 0.4, 0.0]])


def test_channel_mean_falls_back_to_the_global_mean_for_unseen_channels() -> None:
    baseline = ChannelMean.fit(["x", "x", "y"], [1.0, 3.0, 5.0])
    np.testing.assert_allclose(baseline.predict(["x", "y", "new"]), [2.0, 5.0, 3.0])
    assert baseline.seen_fraction(["x", "new", "new", "y"]) == 0.5


# --- heads ---------------------------------------------------------------------------------------------------------


def test_heads_save_and_load_back_predicting_identically(table: pa.Table, tmp_path: Path) -> None:
    x_train, x_val, x_test = _parts(table, "split_random", features(table, MULTIMODAL).matrix)
    y_train, y_val, _ = _parts(table, "split_random", bucket_labels(table))
    config = TrainConfig(hidden=32, dropout=0.1, max_epochs=5)
    classifier = train_classifier(
        x_train, y_train, x_val, y_val, labels=list(BUCKET_NAMES), feature_set=MULTIMODAL, config=config, quiet=True
    )
    classifier.save(tmp_path / "bucket")
    loaded = load_head(tmp_path / "bucket")
    assert loaded.config == classifier.config
    np.testing.assert_array_equal(loaded.predict_proba(x_test), classifier.predict_proba(x_test))
    assert list(loaded.predict(x_test)) == list(classifier.predict(x_test))
    assert json.loads((tmp_path / "bucket" / "head.json").read_text())["labels"] == list(BUCKET_NAMES)

    r_train, r_val, _ = _parts(table, "split_random", regression_target(table, "log10_views_per_subscriber"))
    regressor = train_regressor(
        x_train, r_train, x_val, r_val, target="log10_views_per_subscriber", feature_set=MULTIMODAL, quiet=True
    )
    regressor.save(tmp_path / "regression")
    np.testing.assert_array_equal(load_head(tmp_path / "regression").predict(x_test), regressor.predict(x_test))


def test_training_is_deterministic_for_a_seed(table: pa.Table) -> None:
    x_train, x_val, _ = _parts(table, "split_random", features(table, IMAGE).matrix)
    y_train, y_val, _ = _parts(table, "split_random", np.asarray(table.column("channel").to_pylist(), dtype=object))
    labels = sorted(set(y_train))

    def weights(seed: int) -> dict[str, torch.Tensor]:
        config = TrainConfig(hidden=16, dropout=0.2, max_epochs=8, seed=seed)
        head = train_classifier(
            x_train, y_train, x_val, y_val, labels=labels, feature_set=IMAGE, config=config, quiet=True
        )
        return head.module.state_dict()

    first, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_training_stops_early_on_the_validation_loss(table: pa.Table) -> None:
    x_train, x_val, _ = _parts(table, "split_time", features(table, IMAGE).matrix)
    y_train, y_val, _ = _parts(table, "split_time", regression_target(table))
    config = TrainConfig(patience=5)
    head = train_regressor(
        x_train, y_train, x_val, y_val, target="log10_views", feature_set=IMAGE, config=config, quiet=True
    )
    outcome = head.config.outcome
    assert outcome.epochs < config.max_epochs and outcome.epochs - outcome.best_epoch == config.patience


def test_training_without_validation_rows_is_refused(table: pa.Table) -> None:
    x = features(table, METADATA).matrix[:50]
    with pytest.raises(ValueError, match="validation"):
        train_regressor(x, np.ones(50), x[:0], np.ones(0), target="log10_views", feature_set=METADATA, quiet=True)


# --- evaluation ----------------------------------------------------------------------------------------------------


def test_channel_head_recognizes_channels_far_above_chance(report: ev.Report) -> None:
    task = report.task(ev.CHANNEL, "split_random")
    image, majority = task.result(IMAGE), task.result(MAJORITY)
    assert image.metrics.accuracy >= 0.9 and image.metrics.accuracy_ci.low > 3 / 8
    assert majority.metrics.accuracy < 0.25
    assert image.metrics.labels == [f"UC{number:03d}" for number in range(8)]


def test_multimodal_model_beats_its_baselines_on_the_time_split(report: ev.Report) -> None:
    regression = report.task(ev.POPULARITY_REGRESSION, "split_time")
    multimodal = regression.result(MULTIMODAL).metrics
    for baseline in (CHANNEL_MEAN, METADATA_ONLY):
        assert multimodal.spearman > regression.result(baseline).metrics.spearman_ci.high
        assert multimodal.mae < regression.result(baseline).metrics.mae_ci.low
    buckets = report.task(ev.POPULARITY_BUCKET, "split_time")
    assert buckets.result(MULTIMODAL).metrics.spearman > buckets.result(MAJORITY).metrics.spearman_ci.high
    assert buckets.result(MULTIMODAL).metrics.spearman > buckets.result(METADATA_ONLY).metrics.spearman_ci.high
    assert buckets.result(MULTIMODAL).metrics.accuracy > buckets.result(MAJORITY).metrics.accuracy


def test_without_an_image_signal_the_thumbnail_adds_nothing_beyond_metadata() -> None:
    flat = synthetic_table(image_effect=0.0, per_channel=60, seed=1)
    regression = ev.evaluate_task(flat, ev.POPULARITY_REGRESSION, "split_time", seed=0, resamples=200)
    metadata = regression.result(METADATA_ONLY).metrics
    assert regression.result(MULTIMODAL).metrics.spearman < metadata.spearman_ci.high


def test_each_table_carries_models_then_baselines(report: ev.Report) -> None:
    roles = {
        ev.POPULARITY_BUCKET: [
            (MULTIMODAL, ev.MODEL),
            (IMAGE, ev.MODEL),
            (METADATA, ev.BASELINE),
            (MAJORITY, ev.BASELINE),
        ],
        ev.POPULARITY_REGRESSION: [
            (MULTIMODAL, ev.MODEL),
            (IMAGE, ev.MODEL),
            (METADATA, ev.BASELINE),
            (CHANNEL_MEAN, ev.BASELINE),
        ],
        ev.CHANNEL: [(IMAGE, ev.MODEL), (MAJORITY, ev.BASELINE)],
    }
    for task in report.tasks:
        if not task.skipped:
            assert [(result.name, result.role) for result in task.results] == roles[task.task]


def test_channel_task_is_skipped_on_held_out_channels_with_its_reason(report: ev.Report) -> None:
    skipped = [task for task in report.tasks if task.skipped and task.task != ev.GENRE]  # no store: genre is skipped
    assert [(task.task, task.split_column) for task in skipped] == [(ev.CHANNEL, "split_channel")]
    assert "no test video's channel was seen in training" in skipped[0].skipped and skipped[0].results == []
    assert "no test video's channel was seen in training" in report.to_text()


def test_channel_mean_is_the_global_mean_on_held_out_channels(table: pa.Table, report: ev.Report) -> None:
    result = report.task(ev.POPULARITY_REGRESSION, "split_channel").result(CHANNEL_MEAN)
    assert result.metrics.spearman == 0.0 and "this baseline is the global mean" in result.note
    y_train, _, y_test = _parts(table, "split_channel", regression_target(table))
    assert result.metrics.mae == pytest.approx(np.abs(y_test - y_train.mean()).mean())


def test_report_lists_honest_splits_first_and_serializes(report: ev.Report) -> None:
    assert [task.split_column for task in report.tasks[:: len(ev.TASKS)]] == [
        "split_time",
        "split_channel",
        "split_random",
    ]
    document = json.loads(report.to_json())
    assert document["seed"] == 0 and document["rows"] == 800 and document["seconds"] > 0
    first = document["tasks"][0]
    assert first["task"] == ev.POPULARITY_BUCKET and first["rows"] == {"train": 560, "val": 120, "test": 120}
    multimodal = first["results"][0]
    # The popularity model is ridge, solved in closed form: it reports no epochs.
    assert multimodal["kind"] == "classification" and multimodal["train_seconds"] > 0 and multimodal["epochs"] is None
    assert len(multimodal["metrics"]["confusion"]) == len(BUCKET_NAMES)
    assert multimodal["metrics"]["accuracy_ci"]["resamples"] == 300
    assert document["tasks"][1]["results"][0]["metrics"]["spearman_ci"]["low"] is not None


def test_evaluation_is_reproducible_for_a_seed(table: pa.Table, report: ev.Report) -> None:
    again = ev.evaluate_task(table, ev.POPULARITY_BUCKET, "split_time", seed=0, resamples=300)
    first = report.task(ev.POPULARITY_BUCKET, "split_time")
    assert [result.metrics for result in again.results] == [result.metrics for result in first.results]


def test_unknown_tasks_and_empty_parts_are_named(table: pa.Table) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        ev.evaluate_task(table, "no_such_task", "split_time")
    no_val = table.set_column(
        table.schema.get_field_index("split_time"), "split_time", pa.array(["train"] * 700 + ["test"] * 100)
    )
    skipped = ev.evaluate_task(no_val, ev.POPULARITY_REGRESSION, "split_time", seed=0)
    assert skipped.skipped == "skipped: no val rows in split_time" and skipped.results == []


def test_training_shows_progress_unless_quiet(
    table: pa.Table, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    x_train, x_val, _ = _parts(table, "split_random", features(table, METADATA).matrix)
    y_train, y_val, _ = _parts(table, "split_random", regression_target(table))
    config = replace(TrainConfig(), max_epochs=3)
    caplog.set_level(logging.INFO, logger="tubelens.trainer.heads")
    train_regressor(x_train, y_train, x_val, y_val, target="log10_views", feature_set=METADATA, config=config)
    # Off a terminal (as here) progress is log lines: the stage's start, then its end with counts and rate.
    lines = [record.getMessage() for record in caplog.records if record.name == "tubelens.trainer.heads"]
    assert lines[0] == "metadata regressor: started, 3 to do"
    assert "metadata regressor  best epoch" in lines[-1] and "/s" in lines[-1]
    caplog.clear()
    train_regressor(
        x_train, y_train, x_val, y_val, target="log10_views", feature_set=METADATA, config=config, quiet=True
    )
    assert capsys.readouterr().out == "" and not caplog.records


def test_standardizer_round_trips_through_json() -> None:
    matrix = np.random.default_rng(3).standard_normal((20, 4)).astype(np.float32)
    matrix[:, 2] = 7.0  # a constant column must stay finite
    fitted = Standardizer.fit(matrix)
    restored = Standardizer.from_dict(json.loads(json.dumps(fitted.to_dict())))
    np.testing.assert_array_equal(restored.transform(matrix), fitted.transform(matrix))
    assert np.isfinite(fitted.transform(matrix)).all()
