"""Frames: sampled at the configured rate, title and end slates dropped, bad media refused with the reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.preprocessorkit import content_frame, loopback_settings, sound_only, video
from tubelens.errors import InvalidInput, TooLarge
from tubelens.objects import LocalObjectStore
from tubelens.preprocessor.frames import SampledVideo, extract_frames, slate_runs, store_frames
from tubelens.preprocessor.media import MATROSKA, MP4, WEBM, sniff_media

FPS = 24
SIZE = (320, 180)


@pytest.fixture(scope="module")
def slated_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.5 s title card, 3 s of moving content, 1.5 s end card."""
    path = tmp_path_factory.mktemp("media") / "slated.mp4"
    path.write_bytes(video(title_s=1.5, content_s=3.0, end_s=1.5, fps=FPS, size=SIZE))
    return path


def extract(path: Path, **settings: object) -> SampledVideo:
    return extract_frames(path, sniff_media(path.read_bytes()[:64]), loopback_settings(**settings))


def pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int16)


def test_title_and_end_slates_are_dropped_and_the_content_between_them_is_kept(slated_video: Path) -> None:
    sampled = extract(slated_video, frame_fps=2.0)

    assert (sampled.dropped_leading, sampled.dropped_trailing) == (3, 3)
    assert [frame.timestamp_seconds for frame in sampled.frames] == pytest.approx([1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    assert [frame.index for frame in sampled.frames] == [3, 4, 5, 6, 7, 8]
    for frame in sampled.frames:
        # The kept JPEG is the content frame shown at its timestamp (after H.264 and JPEG, close, not exact).
        expected = content_frame(round(frame.timestamp_seconds * FPS) - round(1.5 * FPS), SIZE).astype(np.int16)
        assert np.abs(pixels(frame.jpeg) - expected).mean() < 6


def test_a_single_sampled_slate_frame_is_recognized_as_a_plain_card(slated_video: Path) -> None:
    # At 1 fps the end card is sampled once: no still neighbour to compare with, only its flat background.
    sampled = extract(slated_video, frame_fps=1.0)

    assert (sampled.dropped_leading, sampled.dropped_trailing) == (2, 1)
    assert [frame.timestamp_seconds for frame in sampled.frames] == pytest.approx([2.0, 3.0, 4.0])


def test_the_sample_rate_the_seeds_used_keeps_every_content_frame(slated_video: Path) -> None:
    sampled = extract(slated_video, frame_fps=24.0)

    assert (sampled.dropped_leading, sampled.dropped_trailing) == (36, 36)
    assert len(sampled.frames) == 72
    assert sampled.sample_fps == 24.0
    assert sampled.duration_seconds == pytest.approx(6.0, abs=0.05)


def test_frames_are_scaled_down_to_the_configured_shorter_side_and_never_up(slated_video: Path) -> None:
    small = extract(slated_video, frame_short_side=90).frames[0]
    as_is = extract(slated_video, frame_short_side=224).frames[0]
    assert Image.open(io.BytesIO(small.jpeg)).size == (160, 90)
    assert Image.open(io.BytesIO(as_is.jpeg)).size == SIZE


def test_a_video_that_is_one_still_card_from_start_to_end_keeps_all_its_frames(tmp_path: Path) -> None:
    path = tmp_path / "still.mp4"
    path.write_bytes(video(title_s=3.0, content_s=0, end_s=0, tone_hz=None))

    sampled = extract(path, frame_fps=1.0)

    assert (sampled.dropped_leading, sampled.dropped_trailing) == (0, 0)
    assert len(sampled.frames) == 3


def test_slate_runs_count_only_the_ends_and_ignore_a_still_moment_in_the_middle() -> None:
    rng = np.random.default_rng(0)
    card = np.full((64, 64), 40, dtype=np.uint8)
    moving = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(6)]
    probes = [card, card, moving[0], moving[1], moving[2], moving[2], moving[3], card]
    assert slate_runs(probes, loopback_settings()) == (2, 1)


def test_kept_frames_are_stored_as_content_addressed_jpegs(slated_video: Path, tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, "objects")
    store.ensure_bucket()
    sampled = extract(slated_video, frame_fps=1.0)

    stored = store_frames(store, sampled.frames)

    assert [frame.index for frame in stored] == [2, 3, 4]
    for frame, sample in zip(stored, sampled.frames, strict=True):
        assert frame.ref.key.startswith("frames/") and frame.ref.key.endswith(".jpg")
        assert frame.ref.content_type == "image/jpeg"
        assert store.get(frame.ref.key) == sample.jpeg
    assert store_frames(store, sampled.frames) == stored
    assert len(list(store.list("frames/"))) == 3


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x20ftypisom", MP4),
        (b"\x00\x00\x00\x08moov", MP4),
        (b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x1f\x42\x86\x81\x01\x42\x82\x84webm", WEBM),
        (b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x1f\x42\x86\x81\x01\x42\x82\x88matroska", MATROSKA),
    ],
)
def test_mp4_and_matroska_containers_are_recognized_by_their_first_bytes(head: bytes, expected: object) -> None:
    assert sniff_media(head) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "media file is empty"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not a media file"),
        (b"<html><body>Video unavailable</body></html>", "not a media file"),
        (b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://169.254.169.254/\n", "not a media file"),
    ],
)
def test_bytes_that_are_not_a_supported_container_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        sniff_media(body[:64])


def test_an_mp4_whose_content_is_garbage_cannot_be_decoded(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(np.random.default_rng(2).integers(0, 256, 8192, np.uint8)))
    with pytest.raises(InvalidInput, match="media could not be decoded") as caught:
        extract(path)
    assert str(tmp_path) not in caught.value.message and "garbage.mp4" not in caught.value.message


def test_a_truncated_mp4_cannot_be_decoded(slated_video: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.mp4"
    data = slated_video.read_bytes()
    # The index (moov) of this muxer's files sits at the end, so the first half is unreadable.
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput, match="media could not be decoded") as caught:
        extract(path)
    # The reason ends up in dead letters and clients' errors: never the local temporary file's path.
    assert str(tmp_path) not in caught.value.message and "truncated.mp4" not in caught.value.message


def test_media_without_a_video_stream_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sound.mp4"
    path.write_bytes(sound_only())
    with pytest.raises(InvalidInput, match="media has no video stream"):
        extract(path)


def test_frames_over_the_pixel_limit_are_too_large(slated_video: Path) -> None:
    with pytest.raises(TooLarge, match="video frames are 320x180, over the limit of 10000 pixels"):
        extract(slated_video, max_pixels=10_000)


def test_a_video_sampling_more_frames_than_allowed_is_too_large(slated_video: Path) -> None:
    with pytest.raises(TooLarge, match="more than 10 frames at 24.0 fps"):
        extract(slated_video, frame_fps=24.0, max_frames=10)
