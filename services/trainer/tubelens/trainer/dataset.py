"""Events in, versioned dataset snapshots out (the schema and layout are in `tubelens.modelkit.schema`).

`DatasetBuilder` folds the events of `CONSUMED_TOPICS` into one small record per video. Every fold is an upsert
keyed by video id that keeps the latest fact (stats by `observed_at`, everything else by the envelope's
`produced_at`), so a redelivered or reordered event changes nothing. `snapshot()` turns the complete records into
a Parquet table with labels and three leak-free splits, writes it with its manifest to the object store and
returns it; `tubelens.modelkit.snapshots.load_snapshot()` reads one back and checks it against its manifest.

Thumbnail vectors are fetched at snapshot time, not when their event arrives: the bus handler stays free of
object-store I/O (fast replays, no retries for a slow store mid-batch), a video that never becomes complete
costs no fetch, and a re-embedded thumbnail replaces a key rather than a downloaded array. The keys are
content-addressed, so fetched vectors are cached across snapshots and never go stale.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tubelens import events
from tubelens.bus import Message
from tubelens.errors import InvalidInput, NotFound
from tubelens.labels import view_bucket
from tubelens.modelkit.preprocess import PREFERRED_VARIANTS
from tubelens.modelkit.schema import (
    BUCKET_EDGES,
    BUCKET_NAMES,
    EMBEDDING_DIM,
    SCHEMA,
    SPLIT_COLUMNS,
    SPLITS,
)
from tubelens.modelkit.snapshots import Snapshot, manifest_key, parquet_key
from tubelens.objects import ObjectStore
from tubelens.trainer import splits
from tubelens.v1 import events_pb2

CONSUMED_TOPICS = (
    events.VIDEOS_DISCOVERED,
    events.VIDEOS_STATS,
    events.THUMBNAILS_STORED,
    events.FRAMES_EXTRACTED,
    events.EMBEDDINGS_COMPUTED,
)
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
FIXED_SLOT = "24h"
FETCH_THREADS = 8
# Why a video has no row, in the order they are checked: each skipped video is counted under its first reason.
SKIP_REASONS = (
    "no_video_discovered",
    "no_stats_snapshot",
    "no_thumbnail_embedding",
    "thumbnail_vectors_missing",
    "thumbnail_vectors_invalid",
)
# Low-cardinality strings; dictionary encoding would only bloat the embedding and free-text columns.
_DICTIONARY_COLUMNS = ["channel_id", "channel_title", "category_id", "channel", "genre", *SPLIT_COLUMNS]

T = TypeVar("T")


# labels


def log10_views(views: int) -> float:
    """log10(views + 1): defined at zero views, and within 1e-3 of log10(views) from 1000 views on."""
    return math.log10(views + 1)


def views_per_subscriber(views: int, subscribers: int) -> float:
    """Hidden or zero subscriber counts divide by one rather than by nothing."""
    return views / max(subscribers, 1)


# what the builder keeps per video


@dataclass(frozen=True)
class _Latest(Generic[T]):
    """A value and the nanosecond time that orders its versions."""

    at_ns: int
    value: T


def _upsert(current: _Latest[T] | None, at_ns: int, value: T) -> _Latest[T]:
    """Only a strictly later version replaces: a redelivery, or an older event arriving late, changes nothing."""
    if current is not None and current.at_ns >= at_ns:
        return current
    return _Latest(at_ns, value)


@dataclass(frozen=True)
class _Video:
    channel_id: str
    channel_title: str
    title: str
    category_id: str
    published_us: int
    duration_seconds: int


@dataclass(frozen=True)
class _Stats:
    views: int
    subscribers: int
    age_seconds: int
    subscribers_hidden: bool


@dataclass(frozen=True)
class _Embedding:
    vectors_key: str
    count: int
    model: str
    concepts: tuple[dict[str, Any], ...]  # CONCEPT structs


@dataclass(frozen=True)
class _Audio:
    key: str
    seconds: int


@dataclass
class _Record:
    video: _Latest[_Video] | None = None
    stats: _Latest[_Stats] | None = None
    stats_fixed_slot: _Latest[_Stats] | None = None
    phash: _Latest[int] | None = None
    thumbnail_key: _Latest[str] | None = None
    thumbnail: _Latest[_Embedding] | None = None
    frames: _Latest[_Embedding] | None = None
    audio: _Latest[_Audio] | None = None

    def skip_reason(self) -> str | None:
        """Why this video cannot be a row yet, before its vectors are fetched."""
        if self.video is None:
            return "no_video_discovered"
        if self.stats is None:
            return "no_stats_snapshot"
        if self.thumbnail is None:
            return "no_thumbnail_embedding"
        return None


# snapshots


class DatasetBuilder:
    """An idempotent in-memory accumulator of the trainer's events, keyed by video id. Thread-safe: the bus worker
    may fold events while another thread takes a snapshot."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._records: dict[str, _Record] = {}
        self._event_ids: set[str] = set()
        self._event_counts: Counter[str] = Counter()
        self._vectors: dict[str, np.ndarray] = {}  # content-addressed key -> unit vector
        self._lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._folds: dict[str, Callable[[events_pb2.Envelope], None]] = {
            "video_discovered": self._fold_discovered,
            "stats_snapshot": self._fold_stats,
            "thumbnail_stored": self._fold_thumbnail_stored,
            "frames_extracted": self._fold_frames_extracted,
            "embedding_computed": self._fold_embedding,
        }

    def handler(self, message: Message) -> None:
        """The bus worker's handler: a malformed message raises InvalidInput and is dead-lettered."""
        self.handle(events.decode(message.value))

    def handle(self, envelope: events_pb2.Envelope) -> None:
        """Fold one event in; an event id already folded is a redelivery and is dropped at once."""
        which = envelope.WhichOneof("payload")
        fold = self._folds.get(which or "")
        if fold is None:
            raise InvalidInput(f"the trainer does not consume {envelope.event_type or 'an empty envelope'}")
        with self._lock:
            if envelope.event_id in self._event_ids:
                return
            fold(envelope)
            # Only once folded, so that an event that failed validation is not remembered as seen.
            self._event_ids.add(envelope.event_id)
            self._event_counts[which] += 1

    # folds, called with the lock held

    def _record(self, video_id: str) -> _Record:
        if not video_id:
            raise InvalidInput("event has no video_id", field="video_id")
        return self._records.setdefault(video_id, _Record())

    def _fold_discovered(self, envelope: events_pb2.Envelope) -> None:
        found = envelope.video_discovered
        if not found.channel_id:
            raise InvalidInput(f"videos.discovered for {found.video_id} has no channel_id", field="channel_id")
        record = self._record(found.video_id)
        video = _Video(
            channel_id=found.channel_id,
            channel_title=found.channel_title,
            title=found.title,
            category_id=found.category_id,
            published_us=found.published_at.ToMicroseconds(),
            duration_seconds=found.duration_seconds,
        )
        record.video = _upsert(record.video, envelope.produced_at.ToNanoseconds(), video)

    def _fold_stats(self, envelope: events_pb2.Envelope) -> None:
        snapshot = envelope.stats_snapshot
        record = self._record(snapshot.video_id)
        observed_ns = snapshot.observed_at.ToNanoseconds()
        stats = _Stats(
            views=snapshot.view_count,
            subscribers=snapshot.channel_subscriber_count,
            age_seconds=snapshot.age_seconds,
            subscribers_hidden=snapshot.subscriber_count_hidden,
        )
        record.stats = _upsert(record.stats, observed_ns, stats)
        if snapshot.schedule_slot == FIXED_SLOT:
            record.stats_fixed_slot = _upsert(record.stats_fixed_slot, observed_ns, stats)

    def _fold_thumbnail_stored(self, envelope: events_pb2.Envelope) -> None:
        stored = envelope.thumbnail_stored
        record = self._record(stored.video_id)
        at_ns = envelope.produced_at.ToNanoseconds()
        record.phash = _upsert(record.phash, at_ns, stored.phash)
        record.thumbnail_key = _upsert(record.thumbnail_key, at_ns, embedded_image_key(stored))

    def _fold_frames_extracted(self, envelope: events_pb2.Envelope) -> None:
        extracted = envelope.frames_extracted
        record = self._record(extracted.video_id)
        audio = _Audio(extracted.audio_features.key, extracted.audio_seconds)
        record.audio = _upsert(record.audio, envelope.produced_at.ToNanoseconds(), audio)

    def _fold_embedding(self, envelope: events_pb2.Envelope) -> None:
        computed = envelope.embedding_computed
        if not computed.vectors.key:
            raise InvalidInput(f"embeddings.computed for {computed.video_id} names no vectors", field="vectors")
        if computed.source not in (events_pb2.EMBEDDING_SOURCE_THUMBNAIL, events_pb2.EMBEDDING_SOURCE_FRAMES):
            raise InvalidInput(f"embeddings.computed for {computed.video_id} has no source", field="source")
        record = self._record(computed.video_id)
        at_ns = envelope.produced_at.ToNanoseconds()
        model = f"{computed.model.name}:{computed.model.version}"
        if computed.source == events_pb2.EMBEDDING_SOURCE_THUMBNAIL:
            # One image's top 5 is an aggregate over one row: each class was in the top 5 of one image.
            concepts = _concepts(computed.top_concepts, count=1)
            embedding = _Embedding(computed.vectors.key, computed.count, model, concepts)
            record.thumbnail = _upsert(record.thumbnail, at_ns, embedding)
        else:
            embedding = _Embedding(computed.vectors.key, computed.count, model, _concepts(computed.top_concepts))
            record.frames = _upsert(record.frames, at_ns, embedding)

    # snapshots

    def snapshot(
        self, *, seed: int, now: datetime | None = None, fractions: splits.Fractions = splits.DEFAULT_FRACTIONS
    ) -> Snapshot:
        """Build, write and return a snapshot of every complete video. `now` (default: the clock) names it."""
        now = _utc(now)
        with self._snapshot_lock:
            with self._lock:
                ready, skipped = self._ready_records()
                facts = {"source_events": dict(sorted(self._event_counts.items())), "videos_seen": len(self._records)}
            vectors = self._fetch_vectors(ready, skipped)
            rows = [(video_id, record, vectors[video_id]) for video_id, record in ready if video_id in vectors]
            table, split_facts = _table(rows, seed=seed, fractions=fractions)
            data = _parquet_bytes(table)
            digest = hashlib.sha256(data).hexdigest()
            snapshot_id = f"{now:%Y%m%dT%H%M%SZ}-{digest[:8]}"
            facts |= _row_facts(rows, skipped)
            facts["splits"] = {"seed": seed, "fractions": fractions.as_dict(), **split_facts}
            manifest = _manifest(snapshot_id, now=now, table=table, digest=digest, size=len(data), facts=facts)
            # The manifest goes last: its presence says the snapshot is whole.
            self.store.put(parquet_key(snapshot_id), data, content_type=PARQUET_CONTENT_TYPE)
            self.store.put(manifest_key(snapshot_id), _json_bytes(manifest), content_type="application/json")
            return Snapshot(snapshot_id, parquet_key(snapshot_id), manifest, table)

    def _ready_records(self) -> tuple[list[tuple[str, _Record]], Counter[str]]:
        """Complete records in video id order (rows are sorted so that equal inputs give equal bytes), and
        why the rest were left out. Records are copied: folds may continue while vectors are fetched."""
        ready, skipped = [], Counter()
        for video_id in sorted(self._records):
            record = self._records[video_id]
            reason = record.skip_reason()
            if reason is None:
                ready.append((video_id, _Record(**vars(record))))
            else:
                skipped[reason] += 1
        return ready, skipped

    def _fetch_vectors(self, ready: list[tuple[str, _Record]], skipped: Counter[str]) -> dict[str, np.ndarray]:
        """Each ready video's unit thumbnail vector; videos whose object is gone or malformed are skipped."""
        keys = {record.thumbnail.value.vectors_key for _, record in ready}
        missing = sorted(keys - self._vectors.keys())
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="dataset-fetch") as pool:
            fetched = dict(zip(missing, pool.map(self._load_vector, missing), strict=True))
        # Keep only what the current records name, so the cache never outgrows one snapshot's vectors.
        self._vectors = {key: self._vectors[key] for key in keys & self._vectors.keys()}
        self._vectors.update((key, value) for key, value in fetched.items() if isinstance(value, np.ndarray))
        vectors = {}
        for video_id, record in ready:
            key = record.thumbnail.value.vectors_key
            if key in self._vectors:
                vectors[video_id] = self._vectors[key]
            else:
                skipped[fetched[key]] += 1
        return vectors

    def _load_vector(self, key: str) -> np.ndarray | str:
        """The unit vector stored at `key`, or the skip reason when there is none."""
        try:
            data = self.store.get(key)
        except NotFound:
            return "thumbnail_vectors_missing"
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError):
            return "thumbnail_vectors_invalid"
        if array.size != EMBEDDING_DIM or not np.issubdtype(array.dtype, np.floating):
            return "thumbnail_vectors_invalid"
        vector = array.reshape(EMBEDDING_DIM).astype(np.float32)
        norm = float(np.linalg.norm(vector))
        if not math.isfinite(norm) or norm == 0.0:
            return "thumbnail_vectors_invalid"
        return vector / norm


# building the table


def _table(
    rows: list[tuple[str, _Record, np.ndarray]], *, seed: int, fractions: splits.Fractions
) -> tuple[pa.Table, dict[str, Any]]:
    videos = [record.video.value for _, record, _ in rows]
    stats = [record.stats for _, record, _ in rows]
    embeddings = np.stack([vector for _, _, vector in rows]) if rows else np.empty((0, EMBEDDING_DIM), np.float32)
    phashes = [record.phash.value if record.phash else 0 for _, record, _ in rows]
    channels = [video.channel_id for video in videos]
    published_us = np.array([video.published_us for video in videos], dtype=np.int64)
    groups = splits.near_duplicate_groups(embeddings, phashes)
    split_columns = _split_columns(groups, channels, published_us, seed=seed, fractions=fractions)
    views = [s.value.views for s in stats]
    subscribers = [s.value.subscribers for s in stats]
    columns = {
        "video_id": [video_id for video_id, _, _ in rows],
        "channel_id": channels,
        "channel_title": [video.channel_title for video in videos],
        "title": [video.title for video in videos],
        "category_id": [video.category_id for video in videos],
        "published_at": published_us,
        "duration_seconds": [video.duration_seconds for video in videos],
        "phash": np.array(phashes, dtype=np.uint64),
        "subscribers": subscribers,
        "views": views,
        "age_seconds": [s.value.age_seconds for s in stats],
        "views_24h": [r.stats_fixed_slot.value.views if r.stats_fixed_slot else None for _, r, _ in rows],
        "log10_views": [log10_views(v) for v in views],
        "view_bucket": [view_bucket(v) for v in views],
        "views_per_subscriber": [views_per_subscriber(v, s) for v, s in zip(views, subscribers, strict=True)],
        "channel": channels,
        "genre": [video.category_id for video in videos],
        "thumbnail_embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), EMBEDDING_DIM),
        "thumbnail_key": [r.thumbnail_key.value if r.thumbnail_key else "" for _, r, _ in rows],
        "frames_vectors_key": [r.frames.value.vectors_key if r.frames else "" for _, r, _ in rows],
        "frame_count": [r.frames.value.count if r.frames else 0 for _, r, _ in rows],
        "audio_features_key": [r.audio.value.key if r.audio else "" for _, r, _ in rows],
        "audio_seconds": [r.audio.value.seconds if r.audio else 0 for _, r, _ in rows],
        "top_concepts": [list(_top_concepts(r)) for _, r, _ in rows],
        **split_columns,
    }
    arrays = [pa.array(columns[f.name], type=f.type) for f in SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    return table, _split_facts(split_columns, channels, groups)


def _split_columns(
    groups: np.ndarray, channels: list[str], published_us: np.ndarray, *, seed: int, fractions: splits.Fractions
) -> dict[str, np.ndarray]:
    return {
        "split_random": splits.random_split(groups, seed=seed, fractions=fractions),
        "split_channel": splits.channel_split(channels, groups, seed=seed, fractions=fractions),
        "split_time": splits.time_split(published_us, groups, fractions=fractions),
    }


def _top_concepts(record: _Record) -> tuple[dict[str, Any], ...]:
    """What the frames show most often; a video without frames (or whose frames named nothing) has its thumbnail's."""
    if record.frames is not None and record.frames.value.concepts:
        return record.frames.value.concepts
    return record.thumbnail.value.concepts


def embedded_image_key(stored: events_pb2.ThumbnailStored) -> str:
    """The key of the variant the embedding service embeds, by its own preference; "" when the event names none."""
    by_variant = {image.variant: image.ref.key for image in stored.images if image.ref.key}
    return next((by_variant[variant] for variant in PREFERRED_VARIANTS if variant in by_variant), "")


def _concepts(concepts: Any, *, count: int | None = None) -> tuple[dict[str, Any], ...]:
    return tuple({"label": c.label, "count": c.count if count is None else count, "score": c.score} for c in concepts)


def _split_facts(split_columns: dict[str, np.ndarray], channels: list[str], groups: np.ndarray) -> dict[str, Any]:
    """What the manifest tells of the splits: rows and channels per split, and the near-duplicate groups."""
    channel_array = np.asarray(channels, dtype=object)
    _, sizes = np.unique(groups, return_counts=True)
    return {
        "rows": {
            column: {name: int((values == name).sum()) for name in SPLITS} for column, values in split_columns.items()
        },
        "channels": {
            column: {name: len(set(channel_array[values == name])) for name in SPLITS}
            for column, values in split_columns.items()
        },
        "near_duplicate_groups": int((sizes > 1).sum()),
        "rows_in_near_duplicate_groups": int(sizes[sizes > 1].sum()),
    }


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=_DICTIONARY_COLUMNS)
    return sink.getvalue()


# the manifest


def _row_facts(rows: list[tuple[str, _Record, np.ndarray]], skipped: Counter[str]) -> dict[str, Any]:
    models = Counter(record.thumbnail.value.model for _, record, _ in rows)
    return {
        "embedding_models": dict(sorted(models.items())),
        # Their subscribers read 0, which views_per_subscriber treats as 1.
        "rows_with_hidden_subscribers": sum(record.stats.value.subscribers_hidden for _, record, _ in rows),
        "skipped": {reason: skipped[reason] for reason in SKIP_REASONS if skipped[reason]},
        "skipped_total": sum(skipped.values()),
    }


def _manifest(
    snapshot_id: str, *, now: datetime, table: pa.Table, digest: str, size: int, facts: dict[str, Any]
) -> dict[str, Any]:
    return {
        "snapshot_id": snapshot_id,
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parquet_key": parquet_key(snapshot_id),
        "parquet_sha256": digest,
        "parquet_bytes": size,
        "rows": table.num_rows,
        "columns": table.schema.names,
        "labels": {
            "views": "view_count at the latest stats snapshot (by observed_at); age_seconds is the age it was seen at",
            "views_24h": f"view_count at the {FIXED_SLOT} refresh slot; null when not observed",
            "log10_views": "log10(views + 1)",
            "view_bucket": {"edges": list(BUCKET_EDGES), "names": list(BUCKET_NAMES), "lower_bounds": "inclusive"},
            "views_per_subscriber": "views / max(subscribers, 1)",
            "channel": "channel_id",
            "genre": "category_id",
        },
        "near_duplicates": {
            "hamming_max": splits.HAMMING_MAX,
            "cosine_min": splits.COSINE_MIN,
            "cosine_min_without_phash": splits.COSINE_MIN_WITHOUT_PHASH,
        },
        "code_version": f"tubelens-trainer {metadata.version('tubelens-trainer')}",
        **facts,
    }


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode()


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(microsecond=0)
    if now.tzinfo is None:
        raise InvalidInput("`now` must be timezone-aware", field="now")
    return now.astimezone(UTC)
