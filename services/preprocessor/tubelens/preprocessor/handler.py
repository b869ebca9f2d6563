"""The preprocessor's message handler: one videos.discovered event in, thumbnails.stored and frames.extracted out.

The two parts of a video are independent, so each gets its chance: the thumbnail first (small, fast, needed by
every model), then the media file when the event names one. Bad input in one part (InvalidInput, TooLarge,
NotFound) does not stop the other; once both had their turn, the message fails with every reason and is
dead-lettered whole. A DLQ replay then redoes the part that had succeeded too, which is harmless: objects are
content-addressed (nothing new is written) and consumers already treat a repeated event for a video as the same
event. A media URL that answers 404 means the video has no file (the crawler names one wherever a deployment
might have it): it is skipped and counted, not dead-lettered. Any other failure (Unavailable above all) raises
at once, so the worker retries the whole message with backoff; the same idempotence covers a part that was done
before the retry.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from prometheus_client import Counter, Histogram

from tubelens import events
from tubelens.bus import Message, Producer
from tubelens.errors import InvalidInput, NotFound
from tubelens.fetch import Fetcher
from tubelens.logs import log_context
from tubelens.metrics import LATENCY_BUCKETS
from tubelens.objects import ObjectStore
from tubelens.preprocessor.audio import audio_features, store_audio_features
from tubelens.preprocessor.frames import extract_frames, store_frames
from tubelens.preprocessor.media import HEAD_BYTES, sniff_media
from tubelens.preprocessor.settings import PreprocessorSettings
from tubelens.preprocessor.thumbnails import choose_thumbnail, prepare_thumbnail, store_thumbnail
from tubelens.rpc import reason_of
from tubelens.v1 import events_pb2

log = logging.getLogger(__name__)

# --- metrics -------------------------------------------------------------------------------------------------------
THUMBNAILS_STORED = Counter("tubelens_preprocessor_thumbnails_stored_total", "thumbnails.stored events emitted")
VIDEOS_EXTRACTED = Counter("tubelens_preprocessor_videos_extracted_total", "frames.extracted events emitted")
FRAMES_EXTRACTED = Counter("tubelens_preprocessor_frames_extracted_total", "Frames stored, slates excluded")
SLATE_FRAMES_DROPPED = Counter(
    "tubelens_preprocessor_slate_frames_dropped_total", "Sampled frames dropped as title or end slates", ["position"]
)
REJECTED = Counter(
    "tubelens_preprocessor_rejected_inputs_total",
    "Thumbnails and media that can never be processed, by part and reason",
    ["part", "reason"],
)
FETCH_SECONDS = Histogram(
    "tubelens_preprocessor_fetch_duration_seconds",
    "Time to fetch a thumbnail or media file, failures included",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
MEDIA_ABSENT = Counter("tubelens_preprocessor_media_absent_total", "Videos whose media URL had no file (404/410)")
FETCHED_BYTES = Counter("tubelens_preprocessor_fetched_bytes_total", "Bytes fetched", ["kind"])


class PreprocessorHandler:
    """A bus handler (`Message -> None`); publishes on `producer`, which the worker flushes before committing."""

    def __init__(
        self,
        settings: PreprocessorSettings,
        *,
        store: ObjectStore,
        producer: Producer,
        service: str = "preprocessor",
        fetcher: Fetcher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.producer = producer
        self.service = service
        self.fetcher = fetcher or Fetcher(
            settings.allowed_hosts,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            max_redirects=settings.max_redirects,
            user_agent="tubelens-preprocessor",
        )

    def __call__(self, message: Message) -> None:
        envelope = events.decode(message.value)
        video = _video_of(envelope)
        with log_context(video_id=video.video_id):
            failures = []
            for part, process in (("thumbnail", self.process_thumbnail), ("media", self.process_media)):
                try:
                    process(video, envelope.trace_id, envelope.event_id)
                except (InvalidInput, NotFound) as exc:
                    # The input's fault, not ours or a dependency's: the other part still gets its turn.
                    REJECTED.labels(part, reason_of(exc)).inc()
                    failures.append((part, exc))
            if failures:
                raise _combined(failures)

    def process_thumbnail(
        self, video: events_pb2.VideoDiscovered, trace_id: str, cause: str
    ) -> events_pb2.ThumbnailStored:
        url = choose_thumbnail(video.thumbnails).url
        with self._timed_fetch("thumbnail"):
            data, fetched = self.fetcher.fetch_bytes(
                url, max_bytes=self.settings.thumbnail_max_bytes, deadline_s=self.settings.thumbnail_deadline_s
            )
        FETCHED_BYTES.labels("thumbnail").inc(fetched.size)
        prepared = prepare_thumbnail(data, max_pixels=self.settings.max_pixels)
        stored = store_thumbnail(self.store, prepared, video_id=video.video_id, source_url=url)
        events.publish(
            self.producer, stored, key=video.video_id, service=self.service, trace_id=trace_id, cause=cause
        )
        THUMBNAILS_STORED.inc()
        log.info(
            "thumbnail stored",
            extra={"source_format": stored.source_format, "bytes": fetched.size, "phash": f"{stored.phash:016x}"},
        )
        return stored

    def process_media(
        self, video: events_pb2.VideoDiscovered, trace_id: str, cause: str
    ) -> events_pb2.FramesExtracted | None:
        """Frames and audio features of the media file, when the event names one."""
        if not video.media_url:
            return None
        # Spooled to disk: media may be tens of megabytes, and FFmpeg wants a seekable file anyway.
        with tempfile.NamedTemporaryFile(prefix="tubelens-media-") as spool:
            try:
                with self._timed_fetch("media"):
                    fetched = self.fetcher.fetch(
                        video.media_url,
                        spool,
                        max_bytes=self.settings.media_max_bytes,
                        deadline_s=self.settings.media_deadline_s,
                    )
            except NotFound:
                MEDIA_ABSENT.inc()
                log.info("no media file", extra={"media_url": video.media_url})
                return None
            FETCHED_BYTES.labels("media").inc(fetched.size)
            extracted = self._extract(video, Path(spool.name), spool)
        events.publish(
            self.producer, extracted, key=video.video_id, service=self.service, trace_id=trace_id, cause=cause
        )
        VIDEOS_EXTRACTED.inc()
        FRAMES_EXTRACTED.inc(len(extracted.frames))
        SLATE_FRAMES_DROPPED.labels("leading").inc(extracted.dropped_leading)
        SLATE_FRAMES_DROPPED.labels("trailing").inc(extracted.dropped_trailing)
        log.info(
            "frames extracted",
            extra={
                "bytes": fetched.size,
                "frames": len(extracted.frames),
                "dropped_leading": extracted.dropped_leading,
                "dropped_trailing": extracted.dropped_trailing,
                "audio_seconds": extracted.audio_seconds,
            },
        )
        return extracted

    def _extract(self, video: events_pb2.VideoDiscovered, path: Path, spool: BinaryIO) -> events_pb2.FramesExtracted:
        """Decode everything first and store only then: bad media leaves no objects behind."""
        spool.flush()
        spool.seek(0)
        media_format = sniff_media(spool.read(HEAD_BYTES))
        sampled = extract_frames(path, media_format, self.settings)
        features = audio_features(path, media_format, self.settings.mel_bands)
        spool.seek(0)
        media = self.store.put_content(
            spool, prefix="media", content_type=media_format.content_type, suffix=media_format.suffix
        )
        extracted = events_pb2.FramesExtracted(
            video_id=video.video_id,
            media=media.to_ref(),
            sample_fps=sampled.sample_fps,
            duration_seconds=sampled.duration_seconds,
            frames=store_frames(self.store, sampled.frames),
            dropped_leading=sampled.dropped_leading,
            dropped_trailing=sampled.dropped_trailing,
        )
        if len(features):
            extracted.audio_features.CopyFrom(store_audio_features(self.store, features))
            extracted.audio_seconds = features.shape[0]
            extracted.audio_bands = features.shape[1]
        return extracted

    @contextmanager
    def _timed_fetch(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            FETCH_SECONDS.labels(kind).observe(time.perf_counter() - started)


def _video_of(envelope: events_pb2.Envelope) -> events_pb2.VideoDiscovered:
    if envelope.WhichOneof("payload") != "video_discovered":
        raise InvalidInput(f"expected a tubelens.v1.VideoDiscovered event, got {envelope.event_type}")
    video = envelope.video_discovered
    if not video.video_id:
        raise InvalidInput("VideoDiscovered has no video_id", field="video_id")
    return video


def _combined(failures: list[tuple[str, InvalidInput | NotFound]]) -> InvalidInput | NotFound:
    """One error for the dead letter: the first failure's type, every part's reason."""
    first = failures[0][1]
    return type(first)("; ".join(f"{part}: {exc.message}" for part, exc in failures), field=first.field)

