"""The dataset snapshot's schema: the contract between the dataset builder and every model.

One Parquet file per snapshot at `datasets/<snapshot_id>/videos.parquet` in the object store, beside
`datasets/<snapshot_id>/manifest.json` (snapshot id, created_at, row count, label definition, split seeds and
fractions, code version, source event counts, rows skipped and why). `snapshot_id` is a UTC timestamp plus the
first 8 hex of the sha256 of the Parquet bytes, e.g. `20261122T070000Z-1a2b3c4d`.

One row per video that has a VideoDiscovered, at least one StatsSnapshot and a thumbnail EmbeddingComputed.
Labels come from the latest stats snapshot with the video's age as a feature (`age_seconds`): the embedded demo
crawls once and sees each video at one, varying, age. Views at the fixed 24h slot are kept too when observed
(`views_24h`, null otherwise). `thumbnail_key` names the stored thumbnail variant that the embedding service
embeds (its preferred one: the normalized 224x224 crop, else the original), so that models fine-tuned on images
see what the embedding was computed from.
"""

from __future__ import annotations

import pyarrow as pa

from tubelens.labels import BUCKET_EDGES, BUCKET_NAMES

EMBEDDING_DIM = 1280
__all__ = ["BUCKET_EDGES", "BUCKET_NAMES", "SCHEMA"]

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("split_random", "split_channel", "split_time")

CONCEPT = pa.struct([("label", pa.string()), ("count", pa.int32()), ("score", pa.float32())])

SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("channel_id", pa.string()),
        ("channel_title", pa.string()),
        ("title", pa.string()),
        ("category_id", pa.string()),
        ("published_at", pa.timestamp("us", tz="UTC")),
        ("duration_seconds", pa.int32()),
        ("phash", pa.uint64()),  # 0 = unknown
        ("subscribers", pa.int64()),  # at the latest stats snapshot
        ("views", pa.int64()),  # at the latest stats snapshot
        ("age_seconds", pa.int64()),  # the video's age at that snapshot
        ("views_24h", pa.int64()),  # views at the 24h refresh slot; null when not observed
        ("log10_views", pa.float64()),  # log10(views + 1)
        ("view_bucket", pa.int8()),  # 0..6, BUCKET_EDGES
        ("views_per_subscriber", pa.float64()),  # views / max(subscribers, 1)
        ("channel", pa.string()),  # the channel classifier's label (= channel_id)
        ("genre", pa.string()),  # the genre label (= YouTube category_id)
        ("thumbnail_embedding", pa.list_(pa.float32(), EMBEDDING_DIM)),  # L2-normalized
        ("thumbnail_key", pa.string()),  # object key of the image the embedding service embeds; "" if unknown
        ("frames_vectors_key", pa.string()),  # object key of the frames' float32 [n, 1280] .npy; "" if none
        ("frame_count", pa.int32()),
        ("audio_features_key", pa.string()),  # object key of the float32 [seconds, bands] .npy; "" if none
        ("audio_seconds", pa.int32()),
        ("top_concepts", pa.list_(CONCEPT)),  # aggregated frame concepts, else the thumbnail's
        ("split_random", pa.string()),  # each split column holds "train", "val" or "test"
        ("split_channel", pa.string()),
        ("split_time", pa.string()),
    ]
)
