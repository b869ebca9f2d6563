"""The handler: one videos.discovered message in, thumbnails.stored and frames.extracted out, failures typed."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from tests.preprocessorkit import Origin, jpeg, loopback_settings, running_origin, video
from tubelens import events
from tubelens.bus import Message
from tubelens.bus.memory import MemoryBus
from tubelens.errors import InvalidInput, NotFound, Unavailable
from tubelens.objects import LocalObjectStore
from tubelens.preprocessor.handler import PreprocessorHandler
from tubelens.v1 import events_pb2


@pytest.fixture
def origin() -> Iterator[Origin]:
    with running_origin() as origin:
        yield origin


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
def handler(store: LocalObjectStore, bus: MemoryBus) -> PreprocessorHandler:
    return PreprocessorHandler(loopback_settings(frame_fps=2.0), store=store, producer=bus.producer())


def message(video_id: str, thumbnail_url: str, media_url: str = "") -> Message:
    payload = events_pb2.VideoDiscovered(
        video_id=video_id,
        thumbnails=[events_pb2.Thumbnail(name="medium", url=thumbnail_url, width=320, height=180)],
        media_url=media_url,
    )
    envelope = events.wrap(payload, producer="test", trace_id=f"trace-{video_id}")
    return Message(events.VIDEOS_DISCOVERED, 0, 0, video_id.encode(), events.encode(envelope))


def published(bus: MemoryBus, topic: str) -> list[events_pb2.Envelope]:
    return [events.decode(m.value) for m in bus.broker.read_all(topic)]


def keys(store: LocalObjectStore) -> list[str]:
    return [info.key for info in store.list()]


def test_a_video_with_media_yields_a_thumbnail_event_and_a_frames_event(
    handler: PreprocessorHandler, origin: Origin, store: LocalObjectStore, bus: MemoryBus
) -> None:
    thumb_url = origin.serve("/vi/v1/mqdefault.jpg", jpeg(1))
    media_url = origin.serve("/media/v1.mp4", video(title_s=1.5, content_s=3, end_s=1.5))

    handler(message("v1", thumb_url, media_url))

    [thumbnail] = published(bus, events.THUMBNAILS_STORED)
    assert (thumbnail.trace_id, thumbnail.producer) == ("trace-v1", "preprocessor")
    stored = thumbnail.thumbnail_stored
    assert (stored.video_id, stored.source_url, stored.source_format) == ("v1", thumb_url, "JPEG")
    assert [(i.variant, i.width, i.height) for i in stored.images] == [
        ("original", 320, 180),
        ("120x90", 120, 90),
        ("224x224", 224, 224),
    ]
    [frames_event] = published(bus, events.FRAMES_EXTRACTED)
    extracted = frames_event.frames_extracted
    assert extracted.video_id == "v1" and extracted.sample_fps == 2.0
    assert extracted.duration_seconds == pytest.approx(6.0, abs=0.05)
    assert (extracted.dropped_leading, extracted.dropped_trailing, len(extracted.frames)) == (3, 3, 6)
    assert extracted.media.key.startswith("media/") and extracted.media.content_type == "video/mp4"
    assert store.get(extracted.media.key) == origin.routes["/media/v1.mp4"].body
    for frame in extracted.frames:
        assert Image.open(io.BytesIO(store.get(frame.ref.key))).format == "JPEG"
    features = np.load(io.BytesIO(store.get(extracted.audio_features.key)), allow_pickle=False)
    assert features.shape == (extracted.audio_seconds, extracted.audio_bands) == (6, 64)


def test_a_video_without_media_yields_only_the_thumbnail_event(
    handler: PreprocessorHandler, origin: Origin, bus: MemoryBus
) -> None:
    handler(message("v2", origin.serve("/vi/v2/mqdefault.jpg", jpeg(2))))
    assert len(published(bus, events.THUMBNAILS_STORED)) == 1
    assert published(bus, events.FRAMES_EXTRACTED) == []


def test_a_video_without_sound_has_frames_and_zero_seconds_of_audio(
    handler: PreprocessorHandler, origin: Origin, bus: MemoryBus
) -> None:
    media_url = origin.serve("/media/silent.mp4", video(tone_hz=None))
    handler(message("v3", origin.serve("/vi/v3/mqdefault.jpg", jpeg(3)), media_url))

    [frames_event] = published(bus, events.FRAMES_EXTRACTED)
    extracted = frames_event.frames_extracted
    assert len(extracted.frames) > 0
    assert (extracted.audio_seconds, extracted.audio_bands) == (0, 0)
    assert not extracted.HasField("audio_features")


def test_redelivery_stores_nothing_new_and_emits_the_same_events(
    handler: PreprocessorHandler, origin: Origin, store: LocalObjectStore, bus: MemoryBus
) -> None:
    delivery = message("v4", origin.serve("/vi/v4/mqdefault.jpg", jpeg(4)), origin.serve("/v4.mp4", video()))
    handler(delivery)
    stored_once = keys(store)

    handler(delivery)

    assert keys(store) == stored_once
    for topic, field in ((events.THUMBNAILS_STORED, "thumbnail_stored"), (events.FRAMES_EXTRACTED, "frames_extracted")):
        first, second = (getattr(envelope, field) for envelope in published(bus, topic))
        assert first == second


def test_bad_media_is_refused_after_the_thumbnail_event_went_out_and_leaves_no_media_objects(
    handler: PreprocessorHandler, origin: Origin, store: LocalObjectStore, bus: MemoryBus
) -> None:
    garbage = origin.serve("/media/garbage.mp4", b"\x13\x37" * 5000)
    rejected = REGISTRY.get_sample_value(
        "tubelens_preprocessor_rejected_inputs_total", {"part": "media", "reason": "INVALID_INPUT"}
    )

    with pytest.raises(InvalidInput) as caught:
        handler(message("v5", origin.serve("/vi/v5/mqdefault.jpg", jpeg(5)), garbage))

    assert caught.value.message.startswith("media: not a media file")
    assert len(published(bus, events.THUMBNAILS_STORED)) == 1
    assert published(bus, events.FRAMES_EXTRACTED) == []
    assert all(key.startswith("thumbnails/") for key in keys(store))
    assert (
        REGISTRY.get_sample_value(
            "tubelens_preprocessor_rejected_inputs_total", {"part": "media", "reason": "INVALID_INPUT"}
        )
        == (rejected or 0) + 1
    )


def test_a_missing_thumbnail_still_lets_the_media_through_and_then_fails_as_not_found(
    handler: PreprocessorHandler, origin: Origin, bus: MemoryBus
) -> None:
    media_url = origin.serve("/media/v6.mp4", video())

    with pytest.raises(NotFound) as caught:
        handler(message("v6", origin.url("/vi/v6/deleted.jpg"), media_url))

    assert caught.value.message.startswith("thumbnail: http://")
    assert "HTTP 404" in caught.value.message
    assert published(bus, events.THUMBNAILS_STORED) == []
    assert len(published(bus, events.FRAMES_EXTRACTED)) == 1


def test_both_parts_failing_gives_both_reasons(handler: PreprocessorHandler, origin: Origin) -> None:
    thumb_url = origin.serve("/vi/v7/mqdefault.jpg", b"<html>login</html>")
    media_url = origin.serve("/media/v7.mp4", b"<html>login</html>")

    with pytest.raises(InvalidInput) as caught:
        handler(message("v7", thumb_url, media_url))

    assert caught.value.message == (
        "thumbnail: thumbnail is an HTML page, not an image; "
        "media: not a media file: expected MP4 or WebM/Matroska, got bytes b'<html>login<'"
    )


def test_an_unavailable_thumbnail_host_fails_at_once_for_a_retry_of_the_whole_message(
    handler: PreprocessorHandler, origin: Origin, bus: MemoryBus
) -> None:
    thumb_url = origin.serve("/vi/v8/mqdefault.jpg", b"busy", status=503)
    media_url = origin.serve("/media/v8.mp4", video())

    with pytest.raises(Unavailable):
        handler(message("v8", thumb_url, media_url))

    assert "/media/v8.mp4" not in origin.requests
    assert published(bus, events.THUMBNAILS_STORED) == published(bus, events.FRAMES_EXTRACTED) == []


def test_a_thumbnail_on_a_host_off_the_allowlist_is_refused_without_fetching(
    handler: PreprocessorHandler, origin: Origin
) -> None:
    with pytest.raises(InvalidInput, match="host 'localhost' is not on the allowlist"):
        handler(message("v9", origin.url("/vi/v9/mqdefault.jpg", host="localhost")))
    assert origin.requests == []


def test_an_event_that_is_not_a_discovered_video_is_invalid(handler: PreprocessorHandler) -> None:
    envelope = events.wrap(events_pb2.StatsSnapshot(video_id="v10"), producer="test")
    with pytest.raises(
        InvalidInput, match="expected a tubelens.v1.VideoDiscovered event, got tubelens.v1.StatsSnapshot"
    ):
        handler(Message(events.VIDEOS_DISCOVERED, 0, 0, b"v10", events.encode(envelope)))


def test_a_media_url_without_a_file_is_skipped_and_counted_not_dead_lettered(
    handler: PreprocessorHandler, origin: Origin, bus: MemoryBus
) -> None:
    thumbnail_url = origin.serve("/vi/v9/mqdefault.jpg", jpeg(9))
    before = REGISTRY.get_sample_value("tubelens_preprocessor_media_absent_total") or 0

    handler(message("v9", thumbnail_url, origin.url("/media/v9.mp4")))

    assert len(published(bus, events.THUMBNAILS_STORED)) == 1
    assert published(bus, events.FRAMES_EXTRACTED) == []
    assert REGISTRY.get_sample_value("tubelens_preprocessor_media_absent_total") == before + 1
