"""Feature matrices from a dataset snapshot (a pyarrow Table of `schema.SCHEMA`), and the targets they predict.

A feature set is a list of blocks, each a function from the table to a float32 matrix:

- `image`: the frozen thumbnail embedding (1280-d, L2-normalized).
- `title`: the frozen MiniLM embedding of the title text (384-d, L2-normalized; `tubelens.modelkit.text`). On real
  data it lifts a metadata model's R² from about 0.57 to 0.64, and alone it ranks views where the image does not
  (ARCHITECTURE.md, "What real data says"). Titles are encoded on first use and kept in `TITLE_VECTORS`, a cache by
  title string, so that every feature set, task and split encodes each title once; feature sets without this block
  never load the text model.
- `metadata`: what is known about a video without looking at it, in `METADATA_FEATURES` order.

`multimodal` (thumbnail + title text + channel statistics) is every block together and is the default popularity
model; image-only is reported beside it. A new modality joins by adding its function to `BLOCKS` and its name to the
`multimodal` entry of `FEATURE_SETS`; heads, baselines and evaluation pick it up from there.

Never features: the labels and anything derived from views (`views`, `log10_views`, `view_bucket`,
`views_per_subscriber`, `views_24h`), the channel id (it would let a popularity head memorize channels, and is the
channel task's label), and collection artifacts such as the search query that found a video, which predict views on
real data for reasons that do not carry over to a new upload.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tubelens.modelkit.schema import BUCKET_NAMES, EMBEDDING_DIM, SPLITS
from tubelens.modelkit.text import TextEncoder, default_text_encoder

IMAGE = "image"
TITLE = "title"
METADATA = "metadata"
MULTIMODAL = "multimodal"
# Blocks that are one learnt vector each (unit-norm, every dimension on one scale) rather than named quantities.
EMBEDDING_BLOCKS = frozenset({"image", "title"})
# ~1.5 KiB a title: 100,000 titles hold a large snapshot's every split in about 150 MiB.
TITLE_CACHE_SIZE = 100_000

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

    @property
    def embedding_spans(self) -> tuple[tuple[int, int], ...]:
        """The [start, stop) columns of each embedding block: scaled as a whole by `Standardizer.fit`."""
        spans, start = [], 0
        for block, width in self.blocks:
            if block in EMBEDDING_BLOCKS:
                spans.append((start, start + width))
            start += width
        return tuple(spans)


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
    def fit(
        cls, matrix: np.ndarray, *, shared_scale_spans: tuple[tuple[int, int], ...] = (), per_dimension: bool = False
    ) -> Standardizer:
        """Centre every column; scale each column by its own spread, except the columns of each [start, stop) span,
        which share one scale, so that no near-constant embedding dimension gets blown up. The shared scale is the
        RMS norm of the span's centred rows (the block weighs as much as one metadata column: what a penalty shared
        across blocks needs), or with `per_dimension` that norm over the square root of the span's width (each
        dimension has unit variance on average: what gradient descent with one learning rate needs)."""
        mean = matrix.mean(axis=0, dtype=np.float64).astype(np.float32)
        scale = matrix.std(axis=0, dtype=np.float64).astype(np.float32)
        for start, stop in shared_scale_spans:
            centred = matrix[:, start:stop].astype(np.float64) - mean[start:stop]
            norm = np.sqrt(np.mean(np.sum(centred**2, axis=1))) if len(centred) else 1.0
            scale[start:stop] = norm / np.sqrt(stop - start) if per_dimension else norm
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


class TitleVectors:
    """Title string -> its unit vector, least recently used dropped first past `max_titles`; thread-safe.

    `encoder` is called only when a title is missing, so a cache that is never asked never loads a model.
    """

    def __init__(
        self, encoder: Callable[[], TextEncoder] = default_text_encoder, *, max_titles: int = TITLE_CACHE_SIZE
    ) -> None:
        self._encoder = encoder
        self.max_titles = max_titles
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0  # titles encoded: distinct titles not in the cache when asked

    def __len__(self) -> int:
        return len(self._vectors)

    def __call__(self, titles: Sequence[str]) -> np.ndarray:
        """A float32 `[len(titles), 384]` matrix, rows in order; each missing distinct title is encoded once."""
        with self._lock:
            missing = list(dict.fromkeys(title for title in titles if title not in self._vectors))
            if missing:
                self._vectors.update(zip(missing, self._encoder().encode(missing), strict=True))
            self.misses += len(missing)
            self.hits += len(titles) - len(missing)
            matrix = np.zeros((len(titles), TextEncoder.dim), dtype=np.float32)
            for row, title in enumerate(titles):
                matrix[row] = self._vectors[title]
                self._vectors.move_to_end(title)
            # Evict after the matrix is built: a call with more distinct titles than fit still gets all of them.
            while len(self._vectors) > self.max_titles:
                self._vectors.popitem(last=False)
        return matrix

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()
            self.hits = self.misses = 0


TITLE_VECTORS = TitleVectors()


def title_features(table: pa.Table) -> np.ndarray:
    """The MiniLM embedding of each row's title (a missing title is the empty one)."""
    return TITLE_VECTORS([title or "" for title in table.column("title").to_pylist()])


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


BLOCKS: dict[str, Callable[[pa.Table], np.ndarray]] = {
    IMAGE: image_features,
    TITLE: title_features,
    METADATA: metadata_features,
}
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    IMAGE: (IMAGE,),
    TITLE: (TITLE,),
    METADATA: (METADATA,),
    MULTIMODAL: (IMAGE, TITLE, METADATA),
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
