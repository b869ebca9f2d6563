"""The preprocessor through the real broker and S3 server: good videos become objects and events, bad ones are
dead-lettered with their reason, and a second pass over the same events changes nothing."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.buskit import FAST_RETRY, Recorder, running, wait_until
from tests.preprocessorkit import Origin, jpeg, loopback_settings, png_declaring, running_origin, video
from tubelens import events
from tubelens.bus import Bus, Worker, dlq_topic
from tubelens.bus.kafka import KafkaBus
from tubelens.devtools.servers import ServerProcess
from tubelens.objects import ObjectStore, open_store
from tubelens.preprocessor.handler import PreprocessorHandler
from tubelens.settings import KafkaSettings, ObjectsKind, S3Settings, TubelensSettings
from tubelens.v1 import events_pb2

GOOD_VIDEOS = 20
WITH_MEDIA = range(0, GOOD_VIDEOS, 4)
OUTPUTS = [events.THUMBNAILS_STORED, events.FRAMES_EXTRACTED]


@pytest.fixture
def kafka(broker: ServerProcess) -> Iterator[KafkaBus]:
    bus = KafkaBus(KafkaSettings(bootstrap=broker.address, partitions=4, session_timeout_ms=6000))
    yield bus
    bus.close()


@pytest.fixture
def s3_settings(s3_server: ServerProcess, s3_credentials: dict[str, str], unique: str) -> S3Settings:
    return S3Settings(endpoint=s3_server.address, bucket=f"preprocessor-{unique}", **s3_credentials)


@pytest.fixture
def store(s3_settings: S3Settings) -> ObjectStore:
    return open_store(TubelensSettings(objects=ObjectsKind.S3, s3=s3_settings))


@pytest.fixture
def origin() -> Iterator[Origin]:
    with running_origin() as origin:
        yield origin


def discovered(video_id: str, thumbnail_url: str, media_url: str = "") -> events_pb2.VideoDiscovered:
    return events_pb2.VideoDiscovered(
        video_id=video_id,
        channel_id="UCintegration",
        title=f"video {video_id}",
        thumbnails=[
            # Never served: a preprocessor that took `default` over `medium` would fail every video.
            events_pb2.Thumbnail(name="default", url=thumbnail_url.replace("mq", ""), width=120, height=90),
            events_pb2.Thumbnail(name="medium", url=thumbnail_url, width=320, height=180),
        ],
        media_url=media_url,
    )


def serve_good_videos(origin: Origin, prefix: str) -> dict[str, events_pb2.VideoDiscovered]:
    videos = {}
    for n in range(GOOD_VIDEOS):
        video_id = f"{prefix}-good-{n:02d}"
        thumbnail = origin.serve(f"/vi/{video_id}/mqdefault.jpg", jpeg(100 + n))
        media = origin.serve(f"/media/{video_id}.mp4", video(content_s=2 + n / 8)) if n in WITH_MEDIA else ""
        videos[video_id] = discovered(video_id, thumbnail, media)
    return videos


def serve_bad_videos(origin: Origin, prefix: str) -> dict[str, tuple[events_pb2.VideoDiscovered, str, str]]:
    """Video -> (event, the error type and a piece of the reason its dead letter must carry)."""
    whole = jpeg(7)
    bad = {
        "corrupt": (whole[: len(whole) // 2], "InvalidInput", "thumbnail: corrupt or truncated JPEG"),
        "html": (b"<!doctype html><html>Sign in</html>", "InvalidInput", "thumbnail is an HTML page, not an image"),
        "empty": (b"", "InvalidInput", "thumbnail body is empty"),
        "bomb": (png_declaring(30_000, 30_000), "TooLarge", "PNG declares too many pixels"),
    }
    videos = {}
    for name, (body, error_type, reason) in bad.items():
        video_id = f"{prefix}-bad-{name}"
        videos[video_id] = (
            discovered(video_id, origin.serve(f"/vi/{video_id}/mqdefault.jpg", body)),
            error_type,
            reason,
        )
    video_id = f"{prefix}-bad-media"
    event = discovered(
        video_id,
        origin.serve(f"/vi/{video_id}/mqdefault.jpg", jpeg(8)),
        origin.serve(f"/media/{video_id}.mp4", os.urandom(50_000)),
    )
    videos[video_id] = (event, "InvalidInput", "media: not a media file")
    video_id = f"{prefix}-bad-host"
    outside = origin.url(f"/vi/{video_id}/mqdefault.jpg", host="localhost")
    videos[video_id] = (discovered(video_id, outside), "InvalidInput", "host 'localhost' is not on the allowlist")
    video_id = f"{prefix}-bad-missing"
    videos[video_id] = (discovered(video_id, origin.url(f"/vi/{video_id}/mqdefault.jpg")), "NotFound", "HTTP 404")
    return videos


def publish(bus: Bus, topic: str, payloads: list[events_pb2.VideoDiscovered]) -> None:
    producer = bus.producer()
    for payload in payloads:
        envelope = events.wrap(payload, producer="test")
        producer.publish(topic, events.encode(envelope), key=payload.video_id, headers=events.headers_of(envelope))
    producer.flush()
    producer.close()


class Outputs:
    """What the preprocessor emitted for this test's videos (the output topics are shared by the session)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.recorder = Recorder()

    def worker(self, bus: Bus, group: str) -> Worker:
        # An observer that counts every copy: no seen-set skipping the replay's (same-id) events.
        return Worker(
            bus, OUTPUTS, group, self.recorder.handler("out"), service="test", retry=FAST_RETRY, seen_ids=0
        )

    def of(self, field: str) -> list[events_pb2.ThumbnailStored | events_pb2.FramesExtracted]:
        with self.recorder.lock:
            payloads = [getattr(env, field) for _, env, _ in self.recorder.seen if env.WhichOneof("payload") == field]
        return [payload for payload in payloads if payload.video_id.startswith(self.prefix)]

    def thumbnails(self) -> list[events_pb2.ThumbnailStored]:
        return self.of("thumbnail_stored")

    def frames(self) -> list[events_pb2.FramesExtracted]:
        return self.of("frames_extracted")


def preprocessor(bus: Bus, topic: str, group: str, store: ObjectStore) -> Worker:
    producer = bus.producer()
    handler = PreprocessorHandler(loopback_settings(frame_fps=2.0), store=store, producer=producer)
    return Worker(bus, [topic], group, handler, service="preprocessor", producer=producer, retry=FAST_RETRY)


def dead_letters(bus: Bus, topic: str, group: str, expected: int) -> list[events_pb2.DeadLetter]:
    recorder = Recorder()
    with running(Worker(bus, [dlq_topic(topic)], group, recorder.handler("dlq"), service="test")):
        recorder.wait_for(expected, timeout=60)
    return [env.dead_letter for _, env, _ in recorder.seen]


def assert_thumbnail_objects(store: ObjectStore, stored: events_pb2.ThumbnailStored) -> None:
    for image in stored.images:
        assert store.stat(image.ref.key).sha256 == image.ref.sha256
        decoded = Image.open(io.BytesIO(store.get(image.ref.key)))
        decoded.load()
        assert decoded.size == (image.width, image.height)


def assert_frame_objects(store: ObjectStore, extracted: events_pb2.FramesExtracted) -> None:
    assert store.stat(extracted.media.key).size == extracted.media.size_bytes
    assert extracted.frames and extracted.dropped_leading > 0 and extracted.dropped_trailing > 0
    for frame in extracted.frames:
        Image.open(io.BytesIO(store.get(frame.ref.key))).load()
    features = np.load(io.BytesIO(store.get(extracted.audio_features.key)), allow_pickle=False)
    assert features.shape == (extracted.audio_seconds, extracted.audio_bands)


def test_discovered_videos_become_stored_objects_bad_ones_are_dead_lettered_and_a_replay_changes_nothing(
    kafka: KafkaBus, store: ObjectStore, origin: Origin, unique: str
) -> None:
    topic, prefix = f"discovered-{unique}", f"v{unique}"
    good = serve_good_videos(origin, prefix)
    bad = serve_bad_videos(origin, prefix)
    payloads = list(good.values())
    # The bad ones in the middle: everything after them must still flow.
    publish(kafka, topic, payloads[:10] + [event for event, _, _ in bad.values()] + payloads[10:])
    outputs = Outputs(prefix)
    with_media = {video_id for video_id, event in good.items() if event.media_url}
    expected_thumbnails = len(good) + 1  # the video with bad media still gets its thumbnail

    with running(preprocessor(kafka, topic, f"pre-{unique}", store), outputs.worker(kafka, f"out-{unique}")):
        wait_until(lambda: len(outputs.thumbnails()) >= expected_thumbnails, timeout=120, what="every thumbnail")
        wait_until(lambda: len(outputs.frames()) >= len(with_media), timeout=60, what="every video's frames")
        letters = dead_letters(kafka, topic, f"dlq-{unique}", len(bad))

        thumbnails = {stored.video_id: stored for stored in outputs.thumbnails()}
        assert Counter(stored.video_id for stored in outputs.thumbnails()) == Counter(
            list(good) + [f"{prefix}-bad-media"]
        ), "exactly one thumbnails.stored per video"
        assert sorted(extracted.video_id for extracted in outputs.frames()) == sorted(with_media)
        for stored in thumbnails.values():
            assert stored.source_format == "JPEG" and stored.phash != 0
            assert_thumbnail_objects(store, stored)
        for extracted in outputs.frames():
            assert_frame_objects(store, extracted)

        reasons = {events.decode(letter.value).video_discovered.video_id: letter for letter in letters}
        assert set(reasons) == set(bad)
        for video_id, (_, error_type, reason) in bad.items():
            assert reasons[video_id].error_type == error_type, reasons[video_id]
            assert reason in reasons[video_id].reason
            assert reasons[video_id].attempts == 1, "a bad input is never retried"
        objects_after_first_pass = sorted(info.key for info in store.list())

        # A second group over the same topic: the same events again, and not one new object.
        with running(preprocessor(kafka, topic, f"replay-{unique}", store)):
            wait_until(
                lambda: (
                    len(outputs.thumbnails()) >= 2 * expected_thumbnails
                    and len(outputs.frames()) >= 2 * len(with_media)
                ),
                timeout=120,
                what="the replay's events",
            )
            dead_letters(kafka, topic, f"dlq2-{unique}", 2 * len(bad))

    assert sorted(info.key for info in store.list()) == objects_after_first_pass
    replayed = Counter(stored.SerializeToString(deterministic=True) for stored in outputs.thumbnails())
    assert set(replayed.values()) == {2}, "the replay re-emits identical thumbnails.stored payloads"
    ids = Counter(env.event_id for _, env, _ in outputs.recorder.seen)
    assert set(ids.values()) == {2}, "and under the same (derived) event ids, so a consumer can skip them"


# --- the service as deployed ---------------------------------------------------------------------------------------


def start_service(broker: ServerProcess, s3_settings: S3Settings, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "TUBELENS_ENV_FILE": str(tmp_path / "no-such.env"),
        "TUBELENS_METRICS_PORT": "0",
        "TUBELENS_KAFKA__BOOTSTRAP": broker.address,
        "TUBELENS_KAFKA__PARTITIONS": "4",
        "TUBELENS_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "TUBELENS_S3__ENDPOINT": s3_settings.endpoint,
        "TUBELENS_S3__ACCESS_KEY": s3_settings.access_key.get_secret_value(),
        "TUBELENS_S3__SECRET_KEY": s3_settings.secret_key.get_secret_value(),
        "TUBELENS_S3__BUCKET": s3_settings.bucket,
        "TUBELENS_PREPROCESSOR__ALLOWED_HOSTS": "127.0.0.1",
    }
    with open(tmp_path / "preprocessor.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tubelens.cli", "preprocessor", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def scrape(log: Path, name: str) -> float:
    [port] = [json.loads(line)["port"] for line in log.read_text().splitlines() if '"metrics listening"' in line]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(sample.value for family in families for sample in family.samples if sample.name == name)


def test_tubelens_preprocessor_run_consumes_videos_discovered_with_settings_from_the_environment(
    broker: ServerProcess,
    kafka: KafkaBus,
    s3_settings: S3Settings,
    store: ObjectStore,
    origin: Origin,
    unique: str,
    tmp_path: Path,
) -> None:
    prefix = f"s{unique}"
    video_id = f"{prefix}-with-media"
    event = discovered(
        video_id, origin.serve(f"/vi/{video_id}/mqdefault.jpg", jpeg(9)), origin.serve("/media.mp4", video())
    )
    publish(kafka, events.VIDEOS_DISCOVERED, [event])
    outputs = Outputs(prefix)
    log = tmp_path / "preprocessor.log"
    service = start_service(broker, s3_settings, tmp_path)
    try:
        with running(outputs.worker(kafka, f"out-{unique}")):
            wait_until(lambda: outputs.thumbnails() and outputs.frames(), timeout=90, what="the service's events")
        [stored], [extracted] = outputs.thumbnails(), outputs.frames()
        assert_thumbnail_objects(store, stored)
        assert_frame_objects(store, extracted)
        assert scrape(log, "tubelens_preprocessor_thumbnails_stored_total") >= 1
        assert scrape(log, "tubelens_preprocessor_fetched_bytes_total") >= extracted.media.size_bytes
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    assert service.returncode == 0, log.read_text()[-2000:]
