"""What the fake YouTube's catalogue holds: deterministic channels and videos, thumbnails that tell channels apart
and show their latent features, media with slates and genre-typed sound, bad inputs that are what they claim, and
view counts that carry a real but noisy signal."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.fakeyoutubekit import NOW, get, make_catalogue
from tubelens.devtools.fakeyoutube import BadInput, Catalogue, FakeYouTube, InputFaults
from tubelens.devtools.fakeyoutube.catalogue import PROFILES
from tubelens.devtools.fakeyoutube.media import SAMPLE_RATE, media_mp4, soundtrack
from tubelens.devtools.fakeyoutube.thumbnails import THUMBNAILS, thumbnail_jpeg
from tubelens.errors import InvalidInput
from tubelens.labels import view_bucket

MEDIUM = THUMBNAILS[1]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return make_catalogue()


@pytest.fixture(scope="module")
def youtube(catalogue: Catalogue) -> Iterator[FakeYouTube]:
    with FakeYouTube(catalogue, tick=False) as server:
        yield server


def fingerprint(catalogue: Catalogue) -> str:
    """A digest of every field of every channel and video, and of a few rendered thumbnails."""
    digest = hashlib.sha256(repr([dataclasses.asdict(c) for c in catalogue.channels]).encode())
    digest.update(repr([dataclasses.asdict(v) for v in catalogue.videos]).encode())
    for video in catalogue.videos[:5]:
        channel = catalogue.channel(video.channel_id)
        assert channel is not None
        digest.update(thumbnail_jpeg(channel, video, MEDIUM))
    return digest.hexdigest()


def decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)


# determinism


def test_the_same_seed_gives_the_same_catalogue_thumbnails_and_media(catalogue: Catalogue) -> None:
    twin = make_catalogue()
    assert fingerprint(twin) == fingerprint(catalogue)
    assert fingerprint(make_catalogue(seed=8)) != fingerprint(catalogue)
    video = next(v for v in catalogue.videos if v.has_media)
    channel = catalogue.channel(video.channel_id)
    assert channel is not None
    assert media_mp4(channel, video) == media_mp4(channel, video)


def test_another_process_generates_the_same_catalogue(catalogue: Catalogue) -> None:
    script = (
        "from tests.fakeyoutubekit import make_catalogue\n"
        "from tests.unit.test_fakeyoutube_content import fingerprint\n"
        "print(fingerprint(make_catalogue()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == fingerprint(catalogue)


# thumbnails


def test_thumbnails_decode_at_youtubes_sizes_and_4_3_ones_are_letterboxed(
    youtube: FakeYouTube, catalogue: Catalogue
) -> None:
    video = next(v for v in catalogue.visible(NOW) if v.has_maxres and v.bad_input is None)
    for size in THUMBNAILS:
        response = get(f"{youtube.base_url}/vi/{video.id}/{size.file}")
        assert response.status == 200 and response.headers["Content-Type"] == "image/jpeg"
        pixels = decode(response.data)
        assert pixels.shape == (size.height, size.width, 3)
        top_rows = pixels[: size.height // 10].mean()
        if size.letterboxed:
            assert top_rows < 8, f"{size.file} should have black bars"
        else:
            assert top_rows > 8, f"{size.file} is 16:9 with no bars"


def test_missing_sizes_and_videos_answer_404_with_a_placeholder(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    video = next(v for v in catalogue.visible(NOW) if not v.has_standard)
    for path in (f"/vi/{video.id}/sddefault.jpg", f"/vi/{video.id}/maxresdefault.jpg", "/vi/AAAAAAAAAAA/default.jpg"):
        response = get(youtube.base_url + path)
        assert response.status == 404 and decode(response.data).shape == (90, 120, 3)
    assert get(f"{youtube.base_url}/vi/{video.id}/hqdefault.jpg").status == 200


def test_channels_look_different_and_a_plain_classifier_tells_them_apart(catalogue: Catalogue) -> None:
    pixels, labels = [], []
    for label, channel in enumerate(catalogue.channels):
        for video in catalogue.uploads(channel.id, NOW):
            image = Image.open(io.BytesIO(thumbnail_jpeg(channel, video, MEDIUM))).resize((16, 9))
            pixels.append(np.asarray(image, dtype=np.float64).ravel() / 255)
            labels.append(label)
    x, y = np.array(pixels), np.array(labels)
    colours = x.reshape(len(y), -1, 3).mean(axis=1)
    centres = np.array([colours[y == k].mean(axis=0) for k in range(len(catalogue.channels))])
    within = np.mean(np.linalg.norm(colours - centres[y], axis=1))
    between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :]])
    assert between > 1.5 * within
    # Nearest centroid on 16x9 pixels, trained on every other upload: well above chance (1/8), short of perfect.
    train = np.arange(len(y)) % 2 == 0
    centroids = np.array([x[train & (y == k)].mean(axis=0) for k in range(len(catalogue.channels))])
    predicted = np.argmin(((x[~train][:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    assert 0.9 <= (predicted == y[~train]).mean() < 1.0


def test_thumbnails_show_their_latent_brightness(catalogue: Catalogue) -> None:
    brightness, luminance = [], []
    for video in catalogue.visible(NOW):
        channel = catalogue.channel(video.channel_id)
        assert channel is not None
        brightness.append(video.features.brightness)
        luminance.append(decode(thumbnail_jpeg(channel, video, MEDIUM)).mean())
    assert np.corrcoef(brightness, luminance)[0, 1] > 0.6


# media


def frames_and_audio(mp4: bytes) -> tuple[list[np.ndarray], np.ndarray, dict[str, str], float]:
    with av.open(io.BytesIO(mp4)) as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
        frames = [f.to_ndarray(format="rgb24").astype(np.float64) for f in container.decode(video=0)]
        rate = float(container.streams.video[0].average_rate)
    with av.open(io.BytesIO(mp4)) as container:
        audio = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    return frames, audio, codecs, rate


def uniform_share(frame: np.ndarray) -> float:
    """The share of pixels within 24 levels of the frame's median colour."""
    return float((np.abs(frame - np.median(frame.reshape(-1, 3), axis=0)).max(axis=2) < 24).mean())


def test_media_has_h264_and_aac_between_still_slates(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    video = next(v for v in catalogue.visible(NOW) if v.has_media and v.bad_input is None)
    response = get(youtube.media_url_template.format(video_id=video.id))
    assert response.status == 200 and response.headers["Content-Type"] == "video/mp4"
    frames, audio, codecs, fps = frames_and_audio(response.data)
    assert codecs == {"video": "h264", "audio": "aac"}
    assert 6 <= len(frames) / fps <= 10 and 6 <= len(audio) / SAMPLE_RATE <= 10.2
    assert frames[0].shape == (108, 192, 3)
    slate = int(fps)
    opening, closing = frames[:slate], frames[-slate:]
    assert min(uniform_share(f) for f in opening) > 0.7 and min(uniform_share(f) for f in closing) > 0.9
    assert max(np.abs(f - opening[0]).mean() for f in opening) < 2  # still
    assert max(np.abs(f - closing[0]).mean() for f in closing) < 2
    content = frames[slate:-slate]
    assert np.mean([uniform_share(f) for f in content]) < 0.6
    assert np.mean([np.abs(a - b).mean() for a, b in pairwise(content)]) > 0.5  # it moves
    assert np.abs(audio).max() > 0.1


def test_media_is_served_in_ranges_and_only_for_videos_with_media(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    video = next(v for v in catalogue.visible(NOW) if v.has_media and v.bad_input is None)
    url = youtube.media_url_template.format(video_id=video.id)
    whole = get(url).data
    part = get(url, Range="bytes=100-199")
    assert part.status == 206 and part.data == whole[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert get(url, Range="bytes=-50").data == whole[-50:]
    assert get(url, Range=f"bytes={len(whole)}-").status == 416
    without = next(v for v in catalogue.visible(NOW) if not v.has_media)
    assert get(youtube.media_url_template.format(video_id=without.id)).status == 404


def spectral_features(samples: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    edges = (0, 100, 250, 500, 1000, 2000, 4000, SAMPLE_RATE / 2)
    bands = [np.log(power[(freqs >= lo) & (freqs < hi)].sum() / power.sum() + 1e-12) for lo, hi in pairwise(edges)]
    flatness = np.exp(np.mean(np.log(power + 1e-12))) / power.mean()
    envelope = np.abs(samples).reshape(-1, SAMPLE_RATE // 50).mean(axis=1)
    return np.array([*bands, np.log(flatness), envelope.std() / envelope.mean()])


def test_sound_tells_the_genres_apart() -> None:
    genres = sorted({profile.audio for profile in PROFILES.values()})
    features, labels = [], []
    for genre in genres:
        for seed in range(4):
            features.append(spectral_features(soundtrack(genre, 6, np.random.default_rng(seed))))
            labels.append(genre)
    z = np.array(features)
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    labels_arr = np.array(labels)
    right = 0
    for i in range(len(labels)):  # leave one out, nearest centroid
        rest = np.arange(len(labels)) != i
        centres = {g: z[rest & (labels_arr == g)].mean(axis=0) for g in genres}
        right += min(genres, key=lambda g: ((z[i] - centres[g]) ** 2).sum()) == labels[i]
    assert right / len(labels) >= 0.8


# bad inputs


def test_each_bad_input_is_what_it_claims(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    bad = {kind: video_id for video_id, kind in catalogue.bad_inputs.items()}
    assert set(bad) == set(BadInput)

    def thumbnail(kind: BadInput):
        return get(f"{youtube.base_url}/vi/{bad[kind]}/hqdefault.jpg")

    corrupt = thumbnail(BadInput.CORRUPT_JPEG)
    assert corrupt.status == 200 and corrupt.headers["Content-Type"] == "image/jpeg" and corrupt.data[:2] == b"\xff\xd8"
    with pytest.raises(OSError):
        Image.open(io.BytesIO(corrupt.data)).load()

    page = thumbnail(BadInput.HTML_THUMBNAIL)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.data.startswith(b"<!DOCTYPE html>")

    empty = thumbnail(BadInput.EMPTY_THUMBNAIL)
    assert empty.status == 200 and empty.data == b""

    bomb = thumbnail(BadInput.BOMB_THUMBNAIL)
    assert bomb.status == 200 and len(bomb.data) < 2_000 and bomb.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert bomb.data[12:16] == b"IHDR" and struct.unpack(">II", bomb.data[16:24]) == (30_000, 30_000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb.data))

    media = get(youtube.media_url_template.format(video_id=bad[BadInput.UNDECODABLE_MEDIA]))
    assert media.status == 200 and media.headers["Content-Type"] == "video/mp4"
    with pytest.raises(av.error.FFmpegError):
        av.open(io.BytesIO(media.data))
    # The video with bad media has a good thumbnail.
    assert get(f"{youtube.base_url}/vi/{bad[BadInput.UNDECODABLE_MEDIA]}/hqdefault.jpg").data[:2] == b"\xff\xd8"
    assert youtube.stats()["bad_inputs_served"] == dict.fromkeys(map(str, BadInput), 1)


def test_a_fault_fraction_spreads_over_the_kinds_on_videos_visible_at_start() -> None:
    catalogue = Catalogue.generate(3, 8, 25, now=NOW, faults=InputFaults(fraction=0.1))
    visible = catalogue.visible(NOW)
    bad = catalogue.bad_inputs
    assert len(bad) == round(0.1 * len(visible)) and set(bad) <= {v.id for v in visible}
    counts = [list(bad.values()).count(kind) for kind in BadInput]
    assert max(counts) - min(counts) <= 1
    assert all(catalogue.video(vid).has_media for vid, kind in bad.items() if kind is BadInput.UNDECODABLE_MEDIA)
    with pytest.raises(InvalidInput, match="undecodable_media"):
        Catalogue.generate(3, 2, 5, now=NOW, faults=InputFaults(counts={BadInput.UNDECODABLE_MEDIA: 50}))


# popularity


@pytest.fixture(scope="module")
def larger() -> Catalogue:
    return Catalogue.generate(11, 12, 40, now=NOW)


def test_views_cover_every_log10_bucket_with_most_in_the_middle(larger: Catalogue) -> None:
    buckets = [view_bucket(larger.views_at(v, NOW)) for v in larger.visible(NOW)]
    counts = [buckets.count(b) for b in range(7)]
    assert all(counts), counts
    assert sum(counts[2:5]) > 0.5 * len(buckets), counts


def test_views_follow_subscribers_thumbnail_and_title_but_not_perfectly(larger: Catalogue) -> None:
    videos = larger.visible(NOW)
    log_views = np.array([math.log10(v.final_views) for v in videos])
    subscribers = {c.id: c.subscribers for c in larger.channels}
    log_subscribers = np.array([math.log10(subscribers[v.channel_id]) for v in videos])
    appeal = np.array([v.features.appeal for v in videos])
    clickbait = np.array([v.clickbait for v in videos])
    beyond_channel = log_views - log_subscribers
    assert np.corrcoef(log_views, log_subscribers)[0, 1] > 0.6
    assert np.corrcoef(beyond_channel, appeal)[0, 1] > 0.3
    assert np.corrcoef(beyond_channel, clickbait)[0, 1] > 0.15
    assert np.corrcoef(log_views, log_subscribers + appeal + 0.25 * clickbait)[0, 1] < 0.98  # noise remains


def test_views_grow_with_age_and_saturate(larger: Catalogue) -> None:
    video = larger.visible(NOW)[0]
    hours = [0, 1, 6, 24, 72, 24 * 7, 24 * 60]
    views = [larger.views_at(video, video.published_at + timedelta(hours=h)) for h in hours]
    assert views[0] == 0 and views == sorted(views) and views[-1] <= video.final_views
    assert views[-1] >= 0.99 * video.final_views
    assert larger.likes_at(video, NOW) <= larger.views_at(video, NOW)
