"""Feature matrices from a dataset snapshot (a pyarrow Table of `schema.SCHEMA`), and the targets they predict.

A feature set is a list of blocks, each a function from the table to a float32 matrix:

- `image`: the frozen thumbnail embedding (1280-d, L2-normalized).
- `metadata`: what is known about a video without looking at it, in `METADATA_FEATURES` order.

`multimodal` is every block together and is the default popularity model; image-only is reported beside it. A new
modality (the MiniLM title embedding is next) joins by adding its function to `BLOCKS` and its name to the
`multimodal` entry of `FEATURE_SETS`; heads, baselines and evaluation pick it up from there.

Never features: the labels and anything derived from views (`views`, `log10_views`, `view_bucket`,
`views_per_subscriber`, `views_24h`), the channel id (it would let a popularity head memorize channels, and is the
channel task's label), and collection artifacts such as the search query that found a video, which predict views on
real data for reasons that do not carry over to a new upload.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tubelens.trainer.schema import BUCKET_NAMES, EMBEDDING_DIM, SPLITS

IMAGE = "image"
METADATA = "metadata"
MULTIMODAL = "multimodal"

TITLE_CUES = (
    "title_chars",
    "title_exclamations",  # the clickbait cues are generic typography, not a topic vocabulary
    "title_questions",
    "title_caps_word_share",  # share of words of two or more letters written all in capitals
    "title_has_digit",  # "7 things", "2026": listicles and dated titles
)
METADATA_FEATURES = (
    "log10_subscribers",  # the channel's reach: the strongest single predictor of views on real data
    "log10_age_hours",  # views accumulate with age, and each label is read at one, varying, age
    "log10_duration_seconds",  # shorts, regular uploads and long streams draw differently
    *TITLE_CUES,
)

LOG10_VIEWS = "log10_views"
LOG10_VIEWS_PER_SUBSCRIBER = "log10_views_per_subscriber"
REGRESSION_TARGETS = (LOG10_VIEWS, LOG10_VIEWS_PER_SUBSCRIBER)

_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class Features:
    """A float32 matrix (rows follow the table) and the (block, width) pairs its columns come in."""

    matrix: np.ndarray
    blocks: list[tuple[str, int]]
    feature_set: str


@dataclass(frozen=True, eq=False)
class Standardizer:
    """Per-column mean and scale, fitted on the training rows only so that val and test stay unseen."""

    mean: np.ndarray
    scale: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Standardizer):
            return NotImplemented
        return np.array_equal(self.mean, other.mean) and np.array_equal(self.scale, other.scale)

    @classmethod
    def fit(cls, matrix: np.ndarray) -> Standardizer:
        mean = matrix.mean(axis=0, dtype=np.float64).astype(np.float32)
        scale = matrix.std(axis=0, dtype=np.float64).astype(np.float32)
        # A column constant in training carries nothing to learn; scale 1 keeps it finite instead of dividing by 0.
        scale[scale < 1e-8] = 1.0
        return cls(mean, scale)

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        return ((matrix - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        # float32 -> Python float is exact, so a saved and reloaded standardizer transforms bit for bit the same.
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        return cls(np.asarray(data["mean"], dtype=np.float32), np.asarray(data["scale"], dtype=np.float32))


def image_features(table: pa.Table) -> np.ndarray:
    column = table.column("thumbnail_embedding").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(len(table), EMBEDDING_DIM)


def metadata_features(table: pa.Table) -> np.ndarray:
    """One row of `METADATA_FEATURES` per video."""
    subscribers = _numbers(table, "subscribers")
    age_hours = np.maximum(_numbers(table, "age_seconds"), 0) / 3600
    duration = np.maximum(_numbers(table, "duration_seconds"), 0)
    cues = np.array([title_cues(title or "") for title in table.column("title").to_pylist()], dtype=np.float64)
    columns = [
        np.log10(np.maximum(subscribers, 0) + 1),
        np.log10(age_hours + 1),
        np.log10(duration + 1),
        cues.reshape(len(table), len(TITLE_CUES)),
    ]
    return np.column_stack(columns).astype(np.float32)


def title_cues(title: str) -> tuple[float, ...]:
    """The `TITLE_CUES` of one title: length, '!' count, '?' count, all-caps word share, digit presence."""
    words = _WORD.findall(title)
    shouted = sum(1 for word in words if word.isupper())
    return (
        float(len(title)),
        float(title.count("!")),
        float(title.count("?")),
        shouted / len(words) if words else 0.0,
        float(any(character.isdigit() for character in title)),
    )


BLOCKS: dict[str, Callable[[pa.Table], np.ndarray]] = {IMAGE: image_features, METADATA: metadata_features}
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    IMAGE: (IMAGE,),
    METADATA: (METADATA,),
    MULTIMODAL: (IMAGE, METADATA),
}


def features(table: pa.Table, feature_set: str) -> Features:
    """The matrix of one named feature set, its blocks side by side in `FEATURE_SETS` order."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; expected one of {sorted(FEATURE_SETS)}")
    matrices = [BLOCKS[block](table) for block in FEATURE_SETS[feature_set]]
    blocks = [(block, matrix.shape[1]) for block, matrix in zip(FEATURE_SETS[feature_set], matrices, strict=True)]
    return Features(np.concatenate(matrices, axis=1), blocks, feature_set)


# --- targets and labels (never features) ---------------------------------------------------------------------------


def bucket_labels(table: pa.Table) -> np.ndarray:
    """Each video's view bucket by name (`schema.BUCKET_NAMES`, lowest first: the classes are ordinal)."""
    buckets = table.column("view_bucket").to_numpy(zero_copy_only=False)
    return np.asarray(BUCKET_NAMES, dtype=object)[buckets.astype(np.int64)]


def channel_labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("channel").to_pylist(), dtype=object)


def regression_target(table: pa.Table, target: str = LOG10_VIEWS) -> np.ndarray:
    """log10(views + 1), or log10 of views per subscriber: log10((views + 1) / max(subscribers, 1)).

    Views per subscriber asks how well a video did for its channel's size; the log keeps a viral outlier from
    dominating the loss, and the +1 keeps a video with no views finite.
    """
    if target == LOG10_VIEWS:
        return np.log10(np.maximum(_numbers(table, "views"), 0) + 1)
    if target == LOG10_VIEWS_PER_SUBSCRIBER:
        views = np.maximum(_numbers(table, "views"), 0) + 1
        return np.log10(views) - np.log10(np.maximum(_numbers(table, "subscribers"), 1))
    raise ValueError(f"unknown regression target {target!r}; expected one of {REGRESSION_TARGETS}")


def split_masks(table: pa.Table, split_column: str) -> dict[str, np.ndarray]:
    """A boolean row mask per part ("train", "val", "test") of one split column."""
    parts = np.asarray(table.column(split_column).to_pylist(), dtype=object)
    return {part: parts == part for part in SPLITS}


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, nulls as 0 (an unknown count or duration adds nothing)."""
    column = pc.fill_null(table.column(name).combine_chunks(), 0)
    return column.to_numpy(zero_copy_only=False).astype(np.float64)
