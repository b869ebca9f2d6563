"""What the predictor knows of videos it has seen: read from the dataset snapshot a production model was trained on.

Requests may name a video instead of sending pictures (`ImageInput.video_id`, `PredictGenreRequest.video_id`), and
answers are friendlier with names: a channel's title beside its id, a similar video's title. The catalogue also holds
each channel's known log10 views, so a popularity prediction can say where it would rank within its channel.

It is swapped whole when a newer snapshot arrives (a promoted model names its snapshot), never edited in place, so a
request reads one consistent catalogue without locks.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tubelens.errors import NotFound
from tubelens.modelkit.snapshots import load_snapshot
from tubelens.objects import ObjectStore

log = logging.getLogger(__name__)
DATASETS = "datasets/"


@dataclass(frozen=True)
class KnownVideo:
    video_id: str
    channel_id: str
    title: str
    thumbnail_key: str  # "" when the snapshot does not know the stored thumbnail
    frames_vectors_key: str  # "" when the video has no frames
    audio_features_key: str
    embedding: np.ndarray  # the thumbnail's L2-normalized embedding, as the models saw it


@dataclass(frozen=True)
class Catalogue:
    snapshot_id: str = ""
    videos: dict[str, KnownVideo] = field(default_factory=dict)
    channel_titles: dict[str, str] = field(default_factory=dict)
    channel_subscribers: dict[str, int] = field(default_factory=dict)  # the largest count seen: the latest
    # Each channel's log10 views, sorted: the reference a new video's predicted views are ranked against.
    channel_log10_views: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_table(cls, snapshot_id: str, table: pa.Table) -> Catalogue:
        rows = table.select(
            [
                "video_id", "channel_id", "channel_title", "title", "thumbnail_key", "frames_vectors_key",
                "audio_features_key", "log10_views", "subscribers",
            ]
        ).to_pylist()  # fmt: skip
        embeddings = _embeddings(table)
        videos, titles, views, subscribers = {}, {}, {}, {}
        for row, embedding in zip(rows, embeddings, strict=True):
            videos[row["video_id"]] = KnownVideo(
                row["video_id"],
                row["channel_id"],
                row["title"] or "",
                row["thumbnail_key"] or "",
                row["frames_vectors_key"] or "",
                row["audio_features_key"] or "",
                embedding,
            )
            titles[row["channel_id"]] = row["channel_title"] or ""
            views.setdefault(row["channel_id"], []).append(float(row["log10_views"]))
            count = int(row["subscribers"] or 0)
            subscribers[row["channel_id"]] = max(count, subscribers.get(row["channel_id"], 0))
        ranked = {channel: sorted(v) for channel, v in views.items()}
        return cls(snapshot_id, videos, titles, subscribers, ranked)

    def video(self, video_id: str) -> KnownVideo:
        found = self.videos.get(video_id)
        if found is None:
            where = f"dataset snapshot {self.snapshot_id}" if self.snapshot_id else "an empty catalogue"
            raise NotFound(f"video {video_id!r} is not in {where}", field="video_id")
        return found

    def channel_percentile(self, channel_id: str, log10_views: float) -> float:
        """0..100: the share of the channel's known videos with fewer views; -1 when the channel is unknown."""
        known = self.channel_log10_views.get(channel_id)
        if not known:
            return -1.0
        below = bisect.bisect_left(known, log10_views)
        ties = bisect.bisect_right(known, log10_views) - below
        return 100.0 * (below + 0.5 * ties) / len(known)


def latest_snapshot_id(store: ObjectStore) -> str | None:
    """The newest snapshot in the store: ids start with a UTC timestamp, so the greatest id is the newest."""
    ids = {info.key[len(DATASETS) :].split("/", 1)[0] for info in store.list(DATASETS) if info.key.endswith(".json")}
    return max(ids) if ids else None


def load_catalogue(store: ObjectStore, snapshot_id: str | None = None) -> Catalogue:
    """The catalogue of `snapshot_id`, or of the newest snapshot; an empty one when the store holds none yet."""
    chosen = snapshot_id or latest_snapshot_id(store)
    if chosen is None:
        log.info("no dataset snapshot yet: video ids, channel titles and percentiles are unknown")
        return Catalogue()
    catalogue = Catalogue.from_table(chosen, load_snapshot(store, chosen).table)
    log.info("catalogue loaded", extra={"snapshot_id": chosen, "videos": len(catalogue.videos)})
    return catalogue


def _embeddings(table: pa.Table) -> np.ndarray:
    column = table.column("thumbnail_embedding").combine_chunks()
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return values.reshape(len(table), -1) if len(table) else np.empty((0, 0), np.float32)
