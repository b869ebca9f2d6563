"""What the demo's HTML report shows, gathered from the run: the evaluation, the served popularity model's predictions
on the held-out videos of the time split, similar thumbnails from the index, concepts of popular and unpopular
videos, and occlusion heatmaps computed through the served model.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from PIL import Image

from tubelens.devtools.demo_serving import Serving, popularity_predictor
from tubelens.devtools.report import (
    ConceptClouds,
    Heatmap,
    Match,
    ReportData,
    SimilarExample,
    VideoPoint,
    occlusion_grid,
)
from tubelens.embedding.index import SimilarityIndex
from tubelens.modelkit.features import features, regression_target, split_masks
from tubelens.objects import ObjectStore
from tubelens.predictor.assemble import VideoFacts

SIMILAR_QUERIES = 4
SIMILAR_MATCHES = 5
HEATMAPS = 3
CLOUD_WORDS = 40


def popularity_points(table: pa.Table, serving: Serving) -> list[VideoPoint]:
    """The served popularity model on the time split's test rows: what a deployed model faces (newest videos)."""
    test = split_masks(table, "split_time")["test"]
    rows = table.filter(pa.array(test))
    if rows.num_rows == 0:
        return []
    manager, core = serving.app.manager, serving.app.core
    version = manager.default_version("popularity")
    if version is None:
        return []
    head = core.head_info("popularity", version)
    matrix = _features_of(rows, head.feature_set)
    answers = manager.predict("popularity", {"features": matrix.tolist()}, version=version).rows
    actual = regression_target(rows)
    titles, channels = rows.column("title").to_pylist(), rows.column("channel_title").to_pylist()
    return [
        VideoPoint(video_id, title or "", channel or "", float(truth), float(answer["prediction"]), answer["sigma"])
        for video_id, title, channel, truth, answer in zip(
            rows.column("video_id").to_pylist(), titles, channels, actual, answers, strict=True
        )
    ]


def similar_examples(table: pa.Table, index: SimilarityIndex, store: ObjectStore) -> list[SimilarExample]:
    """A few queries spread over the channels, each with its nearest thumbnails in the index."""
    by_id = _rows_by_id(table)
    queries = _spread(table, SIMILAR_QUERIES)
    examples = []
    for video_id in queries:
        if video_id not in index:
            continue
        matches = [
            Match(
                m.video_id, by_id[m.video_id]["title"] or "", m.score, m.near_duplicate, _jpeg(store, by_id[m.video_id])
            )
            for m in index.query_id(video_id, SIMILAR_MATCHES)
            if m.video_id in by_id
        ]
        examples.append(
            SimilarExample(video_id, by_id[video_id]["title"] or "", _jpeg(store, by_id[video_id]), matches)
        )
    return examples


def concept_clouds(table: pa.Table) -> ConceptClouds:
    """Seed 002: the ImageNet concepts of the top and bottom quartiles by views per subscriber, so that a channel's
    size does not decide which videos count as popular."""
    ratio = np.asarray(table.column("views_per_subscriber").to_pylist(), dtype=np.float64)
    if len(ratio) < 8:
        return ConceptClouds([], [], "too few videos for quartiles")
    low, high = np.quantile(ratio, [0.25, 0.75])
    concepts = table.column("top_concepts").to_pylist()
    popular = _weights(concept for i, row in enumerate(concepts) if ratio[i] >= high for concept in row or [])
    unpopular = _weights(concept for i, row in enumerate(concepts) if ratio[i] <= low for concept in row or [])
    count_high, count_low = int((ratio >= high).sum()), int((ratio <= low).sum())
    definition = (
        f"top vs bottom quartile of views per subscriber ({count_high} and {count_low} videos); a concept weighs "
        "the frames (or thumbnails) it was the top label of, times its probability"
    )
    return ConceptClouds(popular, unpopular, definition)


def heatmaps(table: pa.Table, serving: Serving, store: ObjectStore) -> list[Heatmap]:
    """Occlusion maps through the served popularity model for the most, middle and least viewed test videos."""
    rows = table.filter(pa.array(split_masks(table, "split_time")["test"]))
    if rows.num_rows == 0 or serving.app.manager.default_version("popularity") is None:
        return []
    order = np.argsort(regression_target(rows))
    picks = sorted({int(order[-1]), int(order[len(order) // 2]), int(order[0])}, reverse=True)[:HEATMAPS]
    maps = []
    for position in picks:
        row = rows.slice(position, 1).to_pylist()[0]
        jpeg = _jpeg(store, row)
        facts = VideoFacts(row["title"] or "", int(row["subscribers"] or 0), int(row["age_seconds"] or 0), None)
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        grid, baseline = occlusion_grid(image, popularity_predictor(serving, facts))
        maps.append(Heatmap(row["video_id"], row["title"] or "", jpeg, grid, baseline))
    return maps


def report_data(
    *,
    snapshot_id: str,
    table: pa.Table,
    pipeline: list[tuple[str, int]],
    dead_letters: list[tuple[str, str]],
    evaluation: dict,
    models: list[dict],
    serving: Serving,
    index: SimilarityIndex,
    store: ObjectStore,
    example: str,
    seed: int,
) -> ReportData:
    return ReportData(
        title="tubelens demo",
        generated_at=datetime.now(UTC).replace(microsecond=0),
        seed=seed,
        snapshot_id=snapshot_id,
        pipeline=pipeline,
        dead_letters=dead_letters,
        evaluation=with_channel_titles(evaluation, table),
        popularity=popularity_points(table, serving),
        similar=similar_examples(table, index, store),
        concepts=concept_clouds(table),
        heatmaps=heatmaps(table, serving, store),
        models=models,
        predictor={"address": serving.address, "example": example},
    )


def with_channel_titles(evaluation: dict, table: pa.Table) -> dict:
    """The evaluation with channel ids shown as channel titles, for readers of the report (the labels stay ids in
    metrics.json, where they are keys); a title two channels share keeps its id beside it."""
    ids, names = table.column("channel_id").to_pylist(), table.column("channel_title").to_pylist()
    titles = dict(zip(ids, names, strict=True))
    shared = {title for title, count in Counter(titles.values()).items() if count > 1}
    shown = {cid: (f"{title} ({cid})" if title in shared or not title else title) for cid, title in titles.items()}
    copy = json.loads(json.dumps(evaluation))
    for task in copy.get("tasks", []):
        if task.get("task") != "channel":
            continue
        for result in task.get("results", []):
            metrics = result.get("metrics", {})
            if "labels" in metrics:
                metrics["labels"] = [shown.get(label, label) for label in metrics["labels"]]
    return copy


def _features_of(rows: pa.Table, feature_set: str) -> np.ndarray:
    return features(rows, feature_set).matrix


def _rows_by_id(table: pa.Table) -> dict[str, dict]:
    wanted = ["video_id", "title", "thumbnail_key"]
    return {row["video_id"]: row for row in table.select(wanted).to_pylist()}


def _spread(table: pa.Table, count: int) -> list[str]:
    """The first video (by id) of each of `count` channels: queries that show different looks."""
    firsts: dict[str, str] = {}
    ids, channels = table.column("video_id").to_pylist(), table.column("channel").to_pylist()
    for video_id, channel in sorted(zip(ids, channels, strict=True)):
        firsts.setdefault(channel, video_id)
    return [firsts[channel] for channel in sorted(firsts)[:count]]


def _jpeg(store: ObjectStore, row: dict) -> bytes:
    return store.get(row["thumbnail_key"]) if row.get("thumbnail_key") else b""


def _weights(concepts) -> list[tuple[str, float]]:
    weights: Counter[str] = Counter()
    for concept in concepts:
        weights[concept["label"]] += max(int(concept["count"] or 0), 1) * float(concept["score"] or 0.0)
    return [(label, round(weight, 4)) for label, weight in weights.most_common(CLOUD_WORDS)]
