"""The dataset builder: events from a stand-in catalogue in, a versioned Parquet snapshot with labels and splits out."""

from __future__ import annotations

import io
import math
import random
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.datasetkit import (
    NOW,
    World,
    make_world,
    observations,
    put_array,
    stats,
    thumbnail_embedding,
    wrap,
)
from tubelens import events
from tubelens.bus import Message
from tubelens.devtools.fakeyoutube import Catalogue
from tubelens.errors import InvalidInput, NotFound
from tubelens.labels import view_bucket
from tubelens.modelkit.schema import EMBEDDING_DIM, SCHEMA, SPLIT_COLUMNS
from tubelens.modelkit.snapshots import load_snapshot, manifest_key
from tubelens.objects import LocalObjectStore
from tubelens.trainer.dataset import DatasetBuilder, log10_views, views_per_subscriber
from tubelens.v1 import events_pb2


@pytest.fixture
def world(store: LocalObjectStore) -> World:
    return make_world(store)


def built(store: LocalObjectStore, envelopes: list[events_pb2.Envelope]) -> DatasetBuilder:
    builder = DatasetBuilder(store)
    for envelope in envelopes:
        builder.handle(envelope)
    return builder


def rows_by_id(table: pa.Table) -> dict[str, dict]:
    return {row["video_id"]: row for row in table.drop_columns(["thumbnail_embedding"]).to_pylist()}


# labels


@pytest.mark.parametrize(
    ("views", "bucket"),
    [
        (0, 0),
        (999, 0),
        (1000, 1),
        (9_999, 1),
        (10_000, 2),
        (99_999, 2),
        (100_000, 3),
        (1_000_000, 4),
        (10_000_000, 5),
        (99_999_999, 5),
        (100_000_000, 6),
        (10**12, 6),
    ],
)
def test_view_buckets_have_inclusive_lower_bounds_at_powers_of_ten(views: int, bucket: int) -> None:
    assert view_bucket(views) == bucket


def test_log10_views_is_defined_at_zero_and_tracks_log10_of_views() -> None:
    assert log10_views(0) == 0.0
    assert log10_views(999) == pytest.approx(3.0)
    assert log10_views(10**6) == pytest.approx(6.0, abs=1e-6)


def test_views_per_subscriber_treats_a_hidden_or_zero_count_as_one() -> None:
    assert views_per_subscriber(500, 100) == 5.0
    assert views_per_subscriber(500, 0) == 500.0


# the table


def test_the_snapshot_has_exactly_the_contract_schema(store: LocalObjectStore, world: World) -> None:
    snapshot = built(store, world.events).snapshot(seed=1, now=NOW)

    assert snapshot.table.schema.equals(SCHEMA, check_metadata=False)
    assert snapshot.table.num_rows == len(world.videos)
    assert snapshot.table.column("video_id").to_pylist() == sorted(v.id for v in world.videos)
    embeddings = np.asarray(snapshot.table.column("thumbnail_embedding").combine_chunks().flatten()).reshape(
        -1, EMBEDDING_DIM
    )
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    first = world.videos[0]
    assert np.allclose(embeddings[0], world.vectors[first.id], atol=1e-6)
    assert "search_query" not in snapshot.table.schema.names


def test_rows_carry_the_latest_views_and_the_24h_slot(store: LocalObjectStore, world: World) -> None:
    rows = rows_by_id(built(store, world.events).snapshot(seed=1, now=NOW).table)

    with_24h = 0
    for video in world.videos:
        row = rows[video.id]
        channel = world.catalogue.channel(video.channel_id)
        last_look = max(when for when, _slot in observations(video, NOW))
        assert row["views"] == world.catalogue.views_at(video, last_look), video.id
        assert row["age_seconds"] == int((last_look - video.published_at).total_seconds())
        assert row["subscribers"] == channel.subscribers
        assert row["view_bucket"] == view_bucket(row["views"])
        assert row["log10_views"] == pytest.approx(math.log10(row["views"] + 1))
        assert row["views_per_subscriber"] == pytest.approx(row["views"] / channel.subscribers)
        assert (row["channel"], row["genre"]) == (video.channel_id, video.category_id)
        assert row["phash"] == world.phashes[video.id]
        # The 224x224 variant the embedding service embeds, not the original stored beside it.
        assert row["thumbnail_key"] == world.thumbnail_keys[video.id]
        assert row["thumbnail_key"].startswith("thumbnails/224x224/") and store.exists(row["thumbnail_key"])
        assert row["published_at"] == video.published_at
        if video.published_at + timedelta(hours=24) <= NOW:
            with_24h += 1
            assert row["views_24h"] == world.catalogue.views_at(video, video.published_at + timedelta(hours=24))
        else:
            assert row["views_24h"] is None
    assert 0 < with_24h < len(world.videos)


def test_frames_audio_and_concepts_come_from_their_events(store: LocalObjectStore, world: World) -> None:
    rows = rows_by_id(built(store, world.events).snapshot(seed=1, now=NOW).table)

    media = [v for v in world.videos if v.has_media]
    assert media and len(media) < len(world.videos)
    for video in world.videos:
        row = rows[video.id]
        if video.has_media:
            assert row["frames_vectors_key"].startswith("embeddings/frames/") and row["frame_count"] == 4
            assert row["audio_features_key"].startswith("audio/") and row["audio_seconds"] == 30
            assert row["top_concepts"] == [{"label": "sports car", "count": 3, "score": pytest.approx(0.7)}]
        else:
            assert (row["frames_vectors_key"], row["frame_count"]) == ("", 0)
            assert (row["audio_features_key"], row["audio_seconds"]) == ("", 0)
            # A thumbnail's own top 5, each counted once: the aggregate over its one image.
            assert row["top_concepts"] == [
                {"label": "goldfish", "count": 1, "score": pytest.approx(0.5)},
                {"label": "shark", "count": 1, "score": pytest.approx(0.2)},
            ]


# upserts and idempotence


def test_a_later_stats_snapshot_wins_and_an_earlier_one_arriving_late_does_not(
    store: LocalObjectStore, world: World
) -> None:
    video = world.videos[0]
    early, later = NOW - timedelta(days=3), NOW - timedelta(days=1)
    builder = built(store, world.events)
    builder.handle(stats(world.catalogue, video, later, "7d", views=5_000_000))
    builder.handle(stats(world.catalogue, video, early, "1h", views=10))

    row = rows_by_id(builder.snapshot(seed=1, now=NOW).table)[video.id]

    assert row["views"] == 5_000_000 and row["view_bucket"] == 4
    assert row["age_seconds"] == int((later - video.published_at).total_seconds())


def test_redelivered_and_reordered_events_change_nothing(store: LocalObjectStore, world: World) -> None:
    once = built(store, world.events).snapshot(seed=5, now=NOW)
    once_bytes = store.get(once.key)
    # Every event twice (a redelivery keeps its event id), republished under new ids, and all of it shuffled.
    republished = [events.wrap(getattr(e, e.WhichOneof("payload")), producer="test") for e in world.events]
    noisy = world.events + list(reversed(world.events)) + republished
    random.Random(3).shuffle(noisy)

    twice = built(store, noisy).snapshot(seed=5, now=NOW)
    later = built(store, world.events).snapshot(seed=5, now=NOW + timedelta(days=1))

    assert twice.id == once.id
    assert store.get(twice.key) == once_bytes
    assert later.id == "20250603T120000Z-" + once.id.split("-")[1]
    assert twice.manifest["source_events"]["video_discovered"] == 2 * len(world.videos)  # distinct event ids
    assert twice.manifest["rows"] == once.manifest["rows"] == len(world.videos)


def test_incomplete_videos_are_skipped_and_counted(store: LocalObjectStore, world: World) -> None:
    no_embedding, no_stats, no_discovery, gone, garbled, no_thumbnail_stored = (v.id for v in world.videos[:6])

    def keep(envelope: events_pb2.Envelope) -> bool:
        which = envelope.WhichOneof("payload")
        video_id = getattr(envelope, which).video_id
        if video_id == no_thumbnail_stored:
            return which != "thumbnail_stored"
        if video_id == no_embedding:
            return which != "embedding_computed"
        if video_id == no_stats:
            return which != "stats_snapshot"
        return not (video_id == no_discovery and which == "video_discovered")

    builder = built(store, [e for e in world.events if keep(e)])
    missing_ref = put_array(store, np.ones((1, EMBEDDING_DIM)), "elsewhere")
    store.delete(missing_ref.key)
    builder.handle(thumbnail_embedding(gone, missing_ref))
    builder.handle(thumbnail_embedding(garbled, put_array(store, np.ones((1, 7)), "embeddings/thumbnails")))

    snapshot = builder.snapshot(seed=1, now=NOW)

    assert snapshot.manifest["skipped"] == {
        "no_video_discovered": 1,
        "no_stats_snapshot": 1,
        "no_thumbnail_embedding": 1,
        "thumbnail_vectors_missing": 1,
        "thumbnail_vectors_invalid": 1,
    }
    assert snapshot.manifest["skipped_total"] == 5
    assert snapshot.manifest["videos_seen"] == len(world.videos)
    assert snapshot.table.num_rows == len(world.videos) - 5
    assert not {no_embedding, no_stats, no_discovery, gone, garbled} & set(snapshot.table["video_id"].to_pylist())
    # Without its ThumbnailStored a video is still a row, with no thumbnail to fine-tune on.
    assert rows_by_id(snapshot.table)[no_thumbnail_stored]["thumbnail_key"] == ""


def test_vectors_are_fetched_once_and_kept_while_a_video_names_them(store: LocalObjectStore, world: World) -> None:
    builder = built(store, world.events)
    first = builder.snapshot(seed=1, now=NOW)
    for info in list(store.list("embeddings/thumbnails/")):
        store.delete(info.key)

    second = builder.snapshot(seed=1, now=NOW + timedelta(hours=1))

    assert second.table.num_rows == first.table.num_rows == len(world.videos)
    assert second.id.split("-")[1] == first.id.split("-")[1]


# the object store


def test_a_snapshot_round_trips_through_the_store(store: LocalObjectStore, world: World) -> None:
    snapshot = built(store, world.events).snapshot(seed=1, now=NOW)

    loaded = load_snapshot(store, snapshot.id)

    assert snapshot.id.startswith("20250602T120000Z-")
    assert snapshot.key == f"datasets/{snapshot.id}/videos.parquet"
    assert sorted(info.key for info in store.list(f"datasets/{snapshot.id}/")) == [
        f"datasets/{snapshot.id}/manifest.json",
        snapshot.key,
    ]
    assert loaded.table.equals(snapshot.table)
    assert loaded.manifest == snapshot.manifest
    assert pq.read_table(io.BytesIO(store.get(snapshot.key))).schema.equals(SCHEMA, check_metadata=False)
    assert loaded.manifest["source_events"]["video_discovered"] == len(world.videos)
    assert loaded.manifest["splits"]["seed"] == 1


def test_loading_refuses_a_snapshot_whose_bytes_changed(store: LocalObjectStore, world: World) -> None:
    snapshot = built(store, world.events).snapshot(seed=1, now=NOW)
    store.put(snapshot.key, store.get(snapshot.key)[:-1] + b"\0", content_type="application/vnd.apache.parquet")

    with pytest.raises(InvalidInput, match="sha256"):
        load_snapshot(store, snapshot.id)
    with pytest.raises(NotFound):
        load_snapshot(store, "20250602T120000Z-00000000")
    assert store.exists(manifest_key(snapshot.id))


# splits inside the snapshot


def test_near_duplicate_thumbnails_share_a_split_in_all_three_splits(store: LocalObjectStore) -> None:
    oldest_first = sorted(Catalogue.generate(7, 8, 25, now=NOW).visible(NOW), key=lambda v: v.published_at)
    newest = oldest_first[-1]
    other_channel = [v for v in oldest_first if v.channel_id != newest.channel_id]
    same_channel = [v for v in other_channel if v.channel_id == other_channel[0].channel_id]
    # The newest upload copies another channel's oldest (across channels and across time); and within a channel
    # a recent upload copies an old one.
    pairs = {newest.id: other_channel[0].id, same_channel[-1].id: same_channel[1].id}
    world = make_world(store, seed=7, channels=8, videos_per_channel=25, duplicates=pairs)

    snapshot = built(store, world.events).snapshot(seed=2, now=NOW)
    rows = rows_by_id(snapshot.table)

    assert snapshot.manifest["splits"]["near_duplicate_groups"] == 2
    assert snapshot.manifest["splits"]["rows_in_near_duplicate_groups"] == 4
    for copy, original in pairs.items():
        for column in SPLIT_COLUMNS:
            assert rows[copy][column] == rows[original][column], (column, copy, original)
    # The newest upload is tested on, and its old original goes with it.
    assert rows[other_channel[0].id]["split_time"] == "test"


def test_the_bus_handler_decodes_messages_and_dead_letters_garbage(store: LocalObjectStore, world: World) -> None:
    builder = DatasetBuilder(store)
    for offset, envelope in enumerate(world.events):
        builder.handler(Message("videos.any", 0, offset, None, events.encode(envelope)))

    assert builder.snapshot(seed=1, now=NOW).table.num_rows == len(world.videos)
    with pytest.raises(InvalidInput):
        builder.handler(Message("videos.stats", 0, 0, None, b"\xff not protobuf"))
    with pytest.raises(InvalidInput, match="does not consume"):
        builder.handle(wrap(events_pb2.ModelTrained(task="popularity")))
    with pytest.raises(InvalidInput, match="video_id"):
        builder.handle(wrap(events_pb2.VideoDiscovered(channel_id="UCx")))
    vectors = put_array(store, np.ones((1, EMBEDDING_DIM)), "embeddings/thumbnails")
    with pytest.raises(InvalidInput, match="no source"):
        builder.handle(wrap(events_pb2.EmbeddingComputed(video_id=world.videos[0].id, vectors=vectors)))
