"""What the report shows: plain values the demo fills in, so that rendering never reaches into a service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VideoPoint:
    """One held-out video of the popularity model (the time split's test rows)."""

    video_id: str
    title: str
    channel_title: str
    actual_log10_views: float  # log10(views + 1)
    predicted_log10_views: float
    sigma: float  # the model's predictive spread in log10 views


@dataclass(frozen=True)
class Match:
    video_id: str
    title: str
    score: float  # cosine similarity
    near_duplicate: bool
    jpeg: bytes  # the thumbnail


@dataclass(frozen=True)
class SimilarExample:
    video_id: str
    title: str
    jpeg: bytes
    matches: list[Match]


@dataclass(frozen=True)
class ConceptClouds:
    """Seed 002: ImageNet concepts seen in frames or thumbnails of popular against unpopular videos."""

    popular: list[tuple[str, float]]  # (concept label, weight): how often or how strongly it was seen
    unpopular: list[tuple[str, float]]
    definition: str  # e.g. "top vs bottom quartile of views per subscriber, 150 videos each"


@dataclass(frozen=True)
class Heatmap:
    """Which regions of a thumbnail drive its popularity prediction, by occlusion (see `occlusion_grid`)."""

    video_id: str
    title: str
    jpeg: bytes
    grid: np.ndarray  # float [rows, cols]: predicted log10 views with the cell visible minus with it occluded
    baseline_log10_views: float  # the prediction for the whole thumbnail


@dataclass(frozen=True)
class ReportData:
    title: str
    generated_at: datetime
    seed: int
    snapshot_id: str
    pipeline: list[tuple[str, int]]  # what was processed, e.g. ("videos discovered", 200)
    dead_letters: list[tuple[str, str]]  # (video id, reason) of every dead-lettered input
    evaluation: dict[str, Any]  # tubelens.trainer.evaluate.Report.to_dict()
    popularity: list[VideoPoint]
    similar: list[SimilarExample]
    concepts: ConceptClouds
    heatmaps: list[Heatmap]
    models: list[dict[str, Any]]  # registered versions: {"task", "version", "promoted", "metrics": {...}}
    predictor: dict[str, str]  # {"address": "127.0.0.1:PORT", "example": "<a client snippet>"}; may be {}
