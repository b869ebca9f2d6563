"""What the trainer dataset tests share: the events the pipeline would publish for a stand-in catalogue.

Each visible video gets what the crawler, preprocessor and embedding service would say of it: VideoDiscovered,
StatsSnapshots at discovery and at the refresh slots it has lived through, ThumbnailStored with a pHash and the
video's rendered thumbnail stored as the preprocessor stores it (original, 120x90, 224x224), and a thumbnail
EmbeddingComputed whose float32 [1, 1280] vectors object lies in the store; videos with media also get
FramesExtracted and a frames EmbeddingComputed. Vectors are random unit vectors (never near each other in 1280
dimensions) unless a test plants near-duplicates.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from tubelens import events
from tubelens.devtools.fakeyoutube import Catalogue, Channel, Video
from tubelens.devtools.fakeyoutube.thumbnails import BY_FILE, thumbnail_jpeg
from tubelens.modelkit.schema import EMBEDDING_DIM
from tubelens.objects import ObjectStore
from tubelens.preprocessor.thumbnails import PreparedThumbnail, prepare_thumbnail, store_thumbnail
from tubelens.v1 import common_pb2, events_pb2

NOW = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)
MODEL = common_pb2.ModelSpec(name="efficientnet_lite0", version="test")
# When the crawler sees a video after upload, and the refresh slots it then asks for.
DISCOVERY_DELAY = timedelta(hours=1)
SLOTS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
THUMBNAIL_FILE = "mqdefault.jpg"  # the size the preprocessor prefers
MAX_PIXELS = 40_000_000


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, EMBEDDING_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near_copy(vector: np.ndarray, rng: np.random.Generator, cosine: float) -> np.ndarray:
    """A unit vector at exactly `cosine` to `vector`: a re-encoded or lightly edited thumbnail's embedding."""
    noise = rng.standard_normal(vector.shape).astype(np.float64)
    noise -= noise @ vector * vector
    noise /= np.linalg.norm(noise)
    return (cosine * vector + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def flip_bits(phash: int, bits: int) -> int:
    """A pHash `bits` bits away: what re-encoding does to a perceptual hash."""
    return phash ^ ((1 << bits) - 1)


def timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def put_array(store: ObjectStore, array: np.ndarray, prefix: str) -> common_pb2.ObjectRef:
    """Stored as the embedding service stores vectors: float32 .npy, content-addressed."""
    out = io.BytesIO()
    np.save(out, array.astype(np.float32), allow_pickle=False)
    info = store.put_content(out.getvalue(), prefix=prefix, content_type="application/x-npy", suffix=".npy")
    return info.to_ref()


def wrap(payload) -> events_pb2.Envelope:
    return events.wrap(payload, producer="test")


def discovered(catalogue: Catalogue, video: Video) -> events_pb2.Envelope:
    channel = catalogue.channel(video.channel_id)
    return wrap(
        events_pb2.VideoDiscovered(
            video_id=video.id,
            channel_id=video.channel_id,
            channel_title=channel.title,
            title=video.title,
            published_at=timestamp(video.published_at),
            category_id=video.category_id,
            duration_seconds=video.duration_s,
            search_query="cars",  # a collection artifact the dataset must leave out
        )
    )


def stats(
    catalogue: Catalogue, video: Video, when: datetime, slot: str, *, views: int | None = None
) -> events_pb2.Envelope:
    return wrap(
        events_pb2.StatsSnapshot(
            video_id=video.id,
            channel_id=video.channel_id,
            observed_at=timestamp(when),
            age_seconds=int((when - video.published_at).total_seconds()),
            schedule_slot=slot,
            view_count=catalogue.views_at(video, when) if views is None else views,
            like_count=catalogue.likes_at(video, when),
            comment_count=catalogue.comments_at(video, when),
            channel_subscriber_count=catalogue.channel(video.channel_id).subscribers,
        )
    )


def observations(video: Video, now: datetime) -> list[tuple[datetime, str]]:
    """When the crawler looked at `video` by `now`, and for which slot."""
    seen = [(min(video.published_at + DISCOVERY_DELAY, now), "discovery")]
    seen += [(video.published_at + age, slot) for slot, age in SLOTS.items() if video.published_at + age <= now]
    return seen


def put_thumbnail(store: ObjectStore, catalogue: Catalogue, video: Video) -> list[events_pb2.StoredImage]:
    """The video's rendered thumbnail stored as the preprocessor stores it: the original and its normalized variants."""
    prepared = _prepared_thumbnail(catalogue.channel(video.channel_id), video)
    return list(store_thumbnail(store, prepared, video_id=video.id, source_url="").images)


@cache
def _prepared_thumbnail(channel: Channel, video: Video) -> PreparedThumbnail:
    # Rendering and deriving the variants is most of a world's cost; every test's world draws the same videos.
    data = thumbnail_jpeg(channel, video, BY_FILE[THUMBNAIL_FILE])
    return prepare_thumbnail(data, max_pixels=MAX_PIXELS)


def thumbnail_stored(video_id: str, phash: int, images: Sequence[events_pb2.StoredImage] = ()) -> events_pb2.Envelope:
    return wrap(events_pb2.ThumbnailStored(video_id=video_id, source_format="JPEG", images=images, phash=phash))


def thumbnail_embedding(video_id: str, vectors: common_pb2.ObjectRef, concepts=()) -> events_pb2.Envelope:
    return wrap(
        events_pb2.EmbeddingComputed(
            video_id=video_id,
            source=events_pb2.EMBEDDING_SOURCE_THUMBNAIL,
            model=MODEL,
            dim=EMBEDDING_DIM,
            count=1,
            vectors=vectors,
            top_concepts=concepts,
        )
    )


def frames_embedding(video_id: str, vectors: common_pb2.ObjectRef, count: int, concepts) -> events_pb2.Envelope:
    return wrap(
        events_pb2.EmbeddingComputed(
            video_id=video_id,
            source=events_pb2.EMBEDDING_SOURCE_FRAMES,
            model=MODEL,
            dim=EMBEDDING_DIM,
            count=count,
            vectors=vectors,
            top_concepts=concepts,
        )
    )


def frames_extracted(video_id: str, audio: common_pb2.ObjectRef, seconds: int) -> events_pb2.Envelope:
    return wrap(events_pb2.FramesExtracted(video_id=video_id, audio_features=audio, audio_seconds=seconds))


def concept(index: int, label: str, score: float, count: int = 0) -> events_pb2.Concept:
    return events_pb2.Concept(class_index=index, label=label, score=score, count=count)


@dataclass
class World:
    """A catalogue's videos as the pipeline would report them, with the planted vectors and hashes."""

    catalogue: Catalogue
    videos: list[Video]
    vectors: dict[str, np.ndarray]
    phashes: dict[str, int]
    events: list[events_pb2.Envelope] = field(default_factory=list)
    thumbnail_keys: dict[str, str] = field(default_factory=dict)  # the 224x224 variant the embedding service embeds

    def video(self, video_id: str) -> Video:
        return next(v for v in self.videos if v.id == video_id)


def make_world(
    store: ObjectStore,
    *,
    seed: int = 7,
    channels: int = 8,
    videos_per_channel: int = 25,
    duplicates: dict[str, str] | None = None,
) -> World:
    """Every visible video's events. `duplicates` maps a copy's video id to its original's: the copy's thumbnail
    gets a vector at cosine 0.95 and a pHash 3 bits away, a near-duplicate by both measures."""
    catalogue = Catalogue.generate(seed, channels, videos_per_channel, now=NOW)
    videos = sorted(catalogue.visible(NOW), key=lambda v: v.id)
    rng = np.random.default_rng(seed)
    vectors = dict(zip((v.id for v in videos), unit_vectors(rng, len(videos)), strict=True))
    phashes = {v.id: int(rng.integers(1, 2**63)) for v in videos}
    world = World(catalogue, videos, vectors, phashes)
    for copy, original in (duplicates or {}).items():
        vectors[copy] = near_copy(vectors[original], rng, cosine=0.95)
        phashes[copy] = flip_bits(phashes[original], 3)
    world.events = [event for video in videos for event in video_events(world, store, video)]
    return world


def video_events(world: World, store: ObjectStore, video: Video) -> list[events_pb2.Envelope]:
    """Everything the pipeline says of one video, in the order it would say it."""
    found = [discovered(world.catalogue, video)]
    found += [stats(world.catalogue, video, when, slot) for when, slot in observations(video, NOW)]
    images = put_thumbnail(store, world.catalogue, video)
    world.thumbnail_keys[video.id] = next(image.ref.key for image in images if image.variant == "224x224")
    found.append(thumbnail_stored(video.id, world.phashes[video.id], images))
    ref = put_array(store, world.vectors[video.id][None, :], "embeddings/thumbnails")
    found.append(thumbnail_embedding(video.id, ref, [concept(1, "goldfish", 0.5), concept(2, "shark", 0.2)]))
    if video.has_media:
        audio = put_array(store, np.full((30, 64), 0.5), "audio")
        found.append(frames_extracted(video.id, audio, 30))
        frames = put_array(store, np.ones((4, EMBEDDING_DIM)), "embeddings/frames")
        found.append(frames_embedding(video.id, frames, 4, [concept(3, "sports car", 0.7, count=3)]))
    return found
