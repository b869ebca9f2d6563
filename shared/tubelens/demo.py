"""`tubelens demo`: the embedded pipeline in one process, no servers.

Today it runs the spine end to end: events through the in-process bus into a consuming stage that stores
content-addressed thumbnails in a local object store and emits `thumbnails.stored`, a poison message dead-lettered
with its reason, and a full redelivery that changes nothing. The crawler, YouTube stand-in, embedding, trainer
and predictor join this command as they land.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tubelens import events
from tubelens.bus import Message, RetryPolicy, Worker, dlq_topic
from tubelens.bus.memory import MemoryBus
from tubelens.logs import configure_logging
from tubelens.objects.local import LocalObjectStore
from tubelens.v1 import events_pb2

SERVICE = "demo"
COMING = [
    ("crawler + YouTube stand-in", "discover uploads over RSS and the Data API v3 format, refresh view counts"),
    ("preprocessor", "fetch and validate thumbnails, extract frames and audio"),
    ("embedding", "ImageNet EfficientNet-Lite0 embeddings, concepts, similarity search"),
    ("trainer", "view buckets, regression, channel and genre models against baselines"),
    ("predictor", "the gRPC API over TorchServe, zero-downtime model swaps"),
]


@dataclass
class DemoResult:
    published: int = 0
    stored: int = 0
    reused: int = 0
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    seconds: float = 0.0


def render_thumbnail(video_id: str) -> bytes:
    """A 320x180 JPEG whose colours derive from the video id, standing in for a fetched thumbnail."""
    digest = hashlib.sha256(video_id.encode()).digest()
    image = Image.new("RGB", (320, 180), tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 30, 200, 150), fill=tuple(digest[3:6]))
    draw.ellipse((180, 60, 300, 170), fill=tuple(digest[6:9]))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


class ThumbnailStage:
    """Consumes videos.discovered, stores the thumbnail content-addressed, emits thumbnails.stored."""

    def __init__(self, store: LocalObjectStore, result: DemoResult, progress: Progress, task) -> None:
        self.store, self.result, self.progress, self.task = store, result, progress, task
        self.producer = None

    def __call__(self, message: Message) -> None:
        envelope = events.decode(message.value)
        video = envelope.video_discovered
        info = self.store.put_content(
            render_thumbnail(video.video_id), prefix="thumbnails", content_type="image/jpeg", suffix=".jpg"
        )
        if info.created:
            self.result.stored += 1
        else:
            self.result.reused += 1
        stored = events_pb2.ThumbnailStored(
            video_id=video.video_id,
            source_format="JPEG",
            images=[events_pb2.StoredImage(variant="original", ref=info.to_ref(), width=320, height=180)],
        )
        events.publish(self.producer, stored, key=video.video_id, service=SERVICE, trace_id=envelope.trace_id)
        self.progress.advance(self.task)


def run_demo(workdir: Path, videos: int, console: Console) -> DemoResult:
    workdir.mkdir(parents=True, exist_ok=True)
    configure_logging(SERVICE, "INFO", stream=open(workdir / "demo.log", "a"))  # noqa: SIM115 - lives with the process
    bus, result = MemoryBus(), DemoResult()
    store = LocalObjectStore(workdir / "objects", "tubelens")
    store.ensure_bucket()
    started = time.perf_counter()
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("videos.discovered -> thumbnails.stored", total=2 * videos)
        publish_discovered(bus, videos)
        bus.producer().publish(events.VIDEOS_DISCOVERED, b"<html>not an event</html>", key="poison")
        result.published = videos + 1
        consume(bus, ThumbnailStage(store, result, progress, task), "thumbnails", expected=videos + 1)
        # A second group replays the whole topic: content addressing makes every put a no-op.
        consume(bus, ThumbnailStage(store, result, progress, task), "replay", expected=videos + 1)
    result.seconds = time.perf_counter() - started
    letters = [events.decode(m.value).dead_letter for m in bus.broker.read_all(dlq_topic(events.VIDEOS_DISCOVERED))]
    result.dead_letters = [letter for letter in letters if letter.consumer_group == "thumbnails"]
    return result


def publish_discovered(bus: MemoryBus, videos: int) -> None:
    producer = bus.producer()
    for n in range(videos):
        video_id = hashlib.sha256(f"demo-{n}".encode()).hexdigest()[:11]
        payload = events_pb2.VideoDiscovered(video_id=video_id, channel_id=f"UCdemo{n % 5}", title=f"Demo video {n}")
        events.publish(producer, payload, key=video_id, service=SERVICE)


def consume(bus: MemoryBus, stage: ThumbnailStage, group: str, expected: int) -> None:
    """Run one worker until it has committed every message of the topic."""
    worker = Worker(
        bus,
        [events.VIDEOS_DISCOVERED],
        group,
        stage,
        service=SERVICE,
        retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02),
    )
    stage.producer = worker.producer
    thread = worker.start_thread()
    while sum(bus.broker.committed(group).values()) < expected:
        time.sleep(0.01)
    worker.stop()
    thread.join()


def report(result: DemoResult, workdir: Path, console: Console) -> None:
    table = Table(title="tubelens demo: the spine")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("events published (one malformed)", str(result.published))
    table.add_row("thumbnails stored (content-addressed)", str(result.stored))
    table.add_row("redelivered puts that changed nothing", str(result.reused))
    table.add_row("dead-lettered", str(len(result.dead_letters)))
    table.add_row("seconds", f"{result.seconds:.2f}")
    console.print(table)
    for letter in result.dead_letters:
        console.print(f"DLQ {letter.original_topic}.dlq: {letter.error_type}: {letter.reason}")
    console.print(f"objects under {workdir / 'objects'}, JSON logs in {workdir / 'demo.log'}")
    coming = Table(title="coming to this demo")
    coming.add_column("service")
    coming.add_column("what it adds")
    for name, what in COMING:
        coming.add_row(name, what)
    console.print(coming)
