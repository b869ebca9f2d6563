"""Model inputs from a request, built by the trainer's own feature code so that serving can never drift from training.

A request becomes a one-row-per-image table of the snapshot schema, and `tubelens.modelkit.features.features` turns it
into exactly the columns the head was trained on. What the caller leaves out is imputed with the training mean of its
column (read from the head's standardizer), which the standardized head sees as "average": an unknown subscriber
count neither helps nor hurts, where a 0 would claim a channel nobody follows.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tubelens.errors import InvalidInput
from tubelens.modelkit.features import METADATA, METADATA_FEATURES, features
from tubelens.modelkit.schema import SCHEMA

HEAD_CONFIG = "head.json"


@dataclass(frozen=True)
class HeadInfo:
    """What the predictor needs to know of a served head: its feature set, input width and training means."""

    feature_set: str
    input_dim: int
    mean: np.ndarray  # the standardizer's per-column mean over the training rows
    config: dict[str, Any]

    @classmethod
    def from_archive(cls, archive: Path) -> HeadInfo:
        """Read `head.json` out of a .mar (a zip) without unpacking it."""
        with zipfile.ZipFile(archive) as mar:
            names = [name for name in mar.namelist() if Path(name).name == HEAD_CONFIG]
            if not names:
                raise InvalidInput(
                    f"{archive.name} holds no {HEAD_CONFIG}: not a head archive", field="model.version"
                )
            config = json.loads(mar.read(names[0]))
        mean = np.asarray(config.get("standardizer", {}).get("mean", []), dtype=np.float32)
        return cls(config.get("feature_set", ""), int(config.get("input_dim", 0)), mean, config)

    def metadata_offset(self, widths: list[tuple[str, int]]) -> int | None:
        """Where the metadata block starts in this head's feature rows, or None if it has none."""
        offset = 0
        for block, width in widths:
            if block == METADATA:
                return offset
            offset += width
        return None


@dataclass(frozen=True)
class VideoFacts:
    """One video as a request describes it; None = the caller did not say."""

    title: str
    subscribers: int | None
    age_seconds: int
    duration_seconds: int | None


def facts_for(
    title: str,
    *,
    subscribers: int | None,
    published_at: datetime | None,
    horizon_s: int,
    now: datetime | None = None,
) -> VideoFacts:
    """A video as a caller describes it, with the age the prediction is for: since `published_at` when given, else
    the configured horizon."""
    age = horizon_s
    if published_at is not None:
        age = int(((now or datetime.now(UTC)) - published_at).total_seconds())
        if age < 0:
            raise InvalidInput("context.published_at is in the future", field="context.published_at")
        age = max(age, 3600)  # a video minutes old has too few views to be worth a prediction: say its first hour
    return VideoFacts(title, subscribers, age, None)


def feature_rows(head: HeadInfo, embeddings: np.ndarray, facts: VideoFacts) -> list[list[float]]:
    """One feature row per thumbnail embedding, all sharing the video's facts, in the head's feature order."""
    rows = [_row(embedding, facts) for embedding in embeddings]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    built = features(table, head.feature_set)
    matrix = built.matrix
    if matrix.shape[1] != head.input_dim:
        raise InvalidInput(
            f"the head expects {head.input_dim} features but {head.feature_set!r} gives {matrix.shape[1]}: "
            "it was trained with another feature definition",
            field="model",
        )
    offset = head.metadata_offset(built.blocks)
    if offset is not None:
        _impute_unknown(matrix, offset, head.mean, facts)
    return matrix.tolist()


def image_rows(embeddings: np.ndarray) -> list[list[float]]:
    """Rows for heads on the image block alone (the channel classifier)."""
    return np.asarray(embeddings, dtype=np.float32).tolist()


def _row(embedding: np.ndarray, facts: VideoFacts) -> dict[str, Any]:
    return {
        "title": facts.title,
        "subscribers": facts.subscribers or 0,
        "age_seconds": facts.age_seconds,
        "duration_seconds": facts.duration_seconds or 0,
        "thumbnail_embedding": np.asarray(embedding, dtype=np.float32).tolist(),
    }


def _impute_unknown(matrix: np.ndarray, offset: int, mean: np.ndarray, facts: VideoFacts) -> None:
    unknown = []
    if facts.subscribers is None:
        unknown.append("log10_subscribers")
    if facts.duration_seconds is None:
        unknown.append("log10_duration_seconds")
    for name in unknown:
        column = offset + METADATA_FEATURES.index(name)
        if column < len(mean):
            matrix[:, column] = mean[column]
