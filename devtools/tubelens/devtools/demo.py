"""`tubelens demo`: the pipeline in one process, no servers.

A seeded YouTube stand-in serves a catalogue (with one bad input of each kind); the crawler discovers it over the
real API and RSS formats; the preprocessor turns every video into validated thumbnails, frames and audio features
in a local object store; the embedding service embeds thumbnails and frames with the ImageNet backbone, labels
concepts and indexes thumbnails for similarity search; the trainer folds every event into a dataset snapshot and
trains and evaluates heads against baselines on the time, held-out-channel and random splits. Everything flows over
the in-process bus with the same delivery rules as Kafka. The predictor joins this command as it lands.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tubelens import events
from tubelens.bus import Worker, dlq_topic
from tubelens.bus.memory import MemoryBus
from tubelens.crawler.crawler import CycleReport
from tubelens.crawler.main import build_crawler
from tubelens.crawler.settings import CrawlerServiceSettings, CrawlerSettings
from tubelens.devtools.demo_report import report_data
from tubelens.devtools.demo_serving import Serving, Trained, client_example, sample_call, start_serving, train_models
from tubelens.devtools.fakeyoutube import BadInput, Catalogue, FakeYouTube, InputFaults
from tubelens.devtools.report import build_report
from tubelens.embedding.handler import EmbeddingHandler
from tubelens.embedding.index import SimilarityIndex
from tubelens.logs import configure_logging
from tubelens.modelkit.backbone import Backbone
from tubelens.modelkit.snapshots import Snapshot
from tubelens.objects.local import LocalObjectStore
from tubelens.preprocessor.handler import PreprocessorHandler
from tubelens.preprocessor.settings import PreprocessorSettings
from tubelens.progress import StageProgress
from tubelens.trainer.dataset import CONSUMED_TOPICS, DatasetBuilder
from tubelens.trainer.evaluate import Report, evaluate_all
from tubelens.v1 import events_pb2, predictor_pb2

SERVICE = "demo"
CHANNELS = 24  # three per genre, so genre can be judged on held-out channels
SEED = 7
API_KEY = "demo-key"


@dataclass
class DemoResult:
    catalogue: dict = field(default_factory=dict)
    crawl: CycleReport = field(default_factory=CycleReport)
    quota_used: int = 0
    discovered: int = 0
    snapshots: int = 0
    thumbnails: int = 0
    videos_with_frames: int = 0
    frames: int = 0
    audio_seconds: int = 0
    objects: int = 0
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    embedded_thumbnails: int = 0
    embedded_frames: int = 0
    concepts: list[tuple[str, int]] = field(default_factory=list)
    similar: list[tuple[str, list[tuple[str, float, bool]]]] = field(default_factory=list)
    snapshot_id: str = ""
    rows: int = 0
    evaluation: Report | None = None
    trained: Trained = field(default_factory=Trained)
    serving: Serving | None = None
    sample: predictor_pb2.PredictPopularityResponse | None = None
    example: str = ""
    report_path: Path | None = None
    seconds: float = 0.0


def run_demo(
    workdir: Path, videos: int, console: Console, *, channels: int = CHANNELS, report_dir: Path = Path("report")
) -> DemoResult:
    """The whole pipeline; the predictor in the result is still serving: stop it with `result.serving.stop()`."""
    workdir.mkdir(parents=True, exist_ok=True)
    configure_logging(SERVICE, "INFO", stream=open(workdir / "demo.log", "a"))  # noqa: SIM115 - lives with the process
    started = time.perf_counter()
    catalogue = Catalogue.generate(
        SEED,
        channels,
        math.ceil(videos / channels),
        now=datetime.now(UTC).replace(microsecond=0),
        upcoming_fraction=0.0,
        faults=InputFaults(counts=dict.fromkeys(BadInput, 1)),
    )
    bus = MemoryBus()
    store = LocalObjectStore(workdir / "objects", "tubelens")
    store.ensure_bucket()
    result = DemoResult(catalogue=catalogue.summary())
    with FakeYouTube(catalogue, tick=False) as youtube, _progress(console) as progress:
        result.crawl, result.quota_used = crawl(youtube, bus, workdir, progress)
        preprocess(youtube, bus, store, progress)
        backbone, index = embed(bus, store, progress)
        snapshot = build_dataset(bus, store, progress)
    summarise(bus, store, result)
    result.snapshot_id, result.rows = snapshot.id, snapshot.table.num_rows
    console.print(f"training and evaluating on snapshot {snapshot.id} ({snapshot.table.num_rows} videos) ...")
    result.evaluation = evaluate_all(snapshot.table, seed=SEED, quiet=True, store=store)
    (workdir / "metrics.json").write_text(result.evaluation.to_json())
    result.similar = similar_examples(bus, index)
    console.print("training the models into the registry and serving the predictor ...")
    result.trained = train_models(snapshot.table, snapshot.id, store, bus.producer(), SEED)
    result.serving = start_serving(store, backbone, index, workdir)
    try:
        known = _known_video(snapshot)
        result.sample = sample_call(result.serving.address, *known)
        result.example = client_example(result.serving.address, known[0])
        result.objects = sum(1 for _ in store.list())  # models and snapshots included
        result.seconds = time.perf_counter() - started
        console.print("writing the HTML report (occlusion heatmaps ask the served model) ...")
        result.report_path = write_report(result, snapshot, index, store, report_dir)
    except BaseException:
        result.serving.stop()  # its gRPC threads would keep the process alive
        raise
    return result


def write_report(
    result: DemoResult, snapshot: Snapshot, index: SimilarityIndex, store: LocalObjectStore, out_dir: Path
) -> Path:
    dead_letters = [
        # The letter keeps the original key (the video id); its bytes may be claim-checked into the store.
        (letter.key.decode(), f"{letter.error_type}: {letter.reason}")
        for letter in result.dead_letters
    ]
    models = [
        {"task": r.entry.task, "version": r.entry.version, "promoted": r.promoted, "metrics": r.metrics}
        for r in result.trained.results
    ]
    data = report_data(
        snapshot_id=snapshot.id,
        table=snapshot.table,
        pipeline=[(what, count) for what, count in pipeline_rows(result) if isinstance(count, int)],
        dead_letters=dead_letters,
        evaluation=result.evaluation.to_dict() if result.evaluation else {},
        models=models,
        serving=result.serving,
        index=index,
        store=store,
        example=result.example,
        seed=SEED,
    )
    return build_report(data, out_dir)


def _known_video(snapshot: Snapshot) -> tuple[str, str]:
    """A video of the snapshot to ask the predictor about: the first by id, so every run asks the same."""
    ids, titles = snapshot.table.column("video_id").to_pylist(), snapshot.table.column("title").to_pylist()
    return min(zip(ids, titles, strict=True))


def _progress(console: Console) -> Progress:
    # Piped or redirected, the demo still says what it is doing: a line per stage with counts and rate.
    return StageProgress(
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def crawl(youtube: FakeYouTube, bus: MemoryBus, workdir: Path, progress: Progress) -> tuple[CycleReport, int]:
    task = progress.add_task("crawler: discover + stats", total=1)
    state = workdir / "crawler.sqlite"
    for stale in workdir.glob("crawler.sqlite*"):  # every demo starts from an empty seen-set
        stale.unlink()
    settings = CrawlerServiceSettings(
        bus="memory",
        objects="local",
        crawler=CrawlerSettings(
            api_key=API_KEY,
            api_base=youtube.api_base,
            rss_base=youtube.feed_url,
            media_url_template=youtube.media_url_template,
            channels=[c.id for c in youtube.catalogue.channels],
            search_queries=["cars"],  # the seeds' theme; one search costs 100 of the 10,000 daily units
            state_path=state,
        ),
    )
    crawler, crawler_state = build_crawler(settings, bus.producer(), clock=lambda: youtube.now().timestamp())
    try:
        report = crawler.run_once()
        return report, crawler.client.quota.used()
    finally:
        crawler_state.close()
        progress.update(task, completed=1)


def preprocess(youtube: FakeYouTube, bus: MemoryBus, store: LocalObjectStore, progress: Progress) -> None:
    producer = bus.producer()
    handler = PreprocessorHandler(
        PreprocessorSettings(allowed_hosts=["127.0.0.1"]), store=store, producer=producer, service=SERVICE
    )
    worker = Worker(
        bus, [events.VIDEOS_DISCOVERED], "preprocessor", handler, service=SERVICE, producer=producer, max_batch=10
    )
    drain(bus, worker, progress, "preprocessor: fetch + decode")


def embed(bus: MemoryBus, store: LocalObjectStore, progress: Progress) -> tuple[Backbone, SimilarityIndex]:
    producer = bus.producer()
    backbone = Backbone()
    index = SimilarityIndex(backbone.dim)
    handler = EmbeddingHandler(
        backbone, store=store, producer=producer, index=index, shard_prefix="index/thumbnails", service=SERVICE
    )
    topics = [events.THUMBNAILS_STORED, events.FRAMES_EXTRACTED]
    worker = Worker(
        bus,
        topics,
        "embedding",
        handler,
        service=SERVICE,
        producer=producer,
        max_batch=32,
        before_commit=handler.before_commit,
    )
    drain(bus, worker, progress, f"embedding: {backbone.runtime}")
    handler.close()
    return backbone, index


def build_dataset(bus: MemoryBus, store: LocalObjectStore, progress: Progress) -> Snapshot:
    builder = DatasetBuilder(store)
    worker = Worker(bus, list(CONSUMED_TOPICS), "trainer", builder.handler, service=SERVICE)
    drain(bus, worker, progress, "trainer: dataset snapshot")
    return builder.snapshot(seed=SEED)


def drain(bus: MemoryBus, worker: Worker, progress: Progress, description: str) -> None:
    """Run `worker` until its group has committed every message of its topics."""
    total = sum(len(bus.broker.read_all(topic)) for topic in worker.topics)
    task = progress.add_task(description, total=total)
    thread = worker.start_thread()
    done = 0
    while done < total and thread.is_alive():
        done = sum(bus.broker.committed(worker.group).values())
        progress.update(task, completed=done)
        time.sleep(0.1)
    worker.stop()
    thread.join()


def similar_examples(bus: MemoryBus, index: SimilarityIndex, count: int = 3) -> list:
    """For a few videos, the titles of their nearest thumbnails: what the similarity search sees."""
    titles = {}
    for message in bus.broker.read_all(events.VIDEOS_DISCOVERED):
        video = events.decode(message.value).video_discovered
        titles[video.video_id] = f"{video.title} ({video.channel_title})"
    examples = []
    for video_id in sorted(v for v in titles if v in index)[:count]:
        matches = index.query_id(video_id, 3)
        examples.append((titles[video_id], [(titles[m.video_id], m.score, m.near_duplicate) for m in matches]))
    return examples


def summarise(bus: MemoryBus, store: LocalObjectStore, result: DemoResult) -> None:
    def payloads(topic: str) -> list:
        return [
            getattr(e, e.WhichOneof("payload"))
            for e in map(events.decode, (m.value for m in bus.broker.read_all(topic)))
        ]

    result.discovered = len(payloads(events.VIDEOS_DISCOVERED))
    result.snapshots = len(payloads(events.VIDEOS_STATS))
    result.thumbnails = len(payloads(events.THUMBNAILS_STORED))
    extracted = payloads(events.FRAMES_EXTRACTED)
    result.videos_with_frames = len(extracted)
    result.frames = sum(len(f.frames) for f in extracted)
    result.audio_seconds = sum(f.audio_seconds for f in extracted)
    result.objects = sum(1 for _ in store.list())
    result.dead_letters = payloads(dlq_topic(events.VIDEOS_DISCOVERED))
    computed = payloads(events.EMBEDDINGS_COMPUTED)
    result.embedded_thumbnails = sum(e.source == events_pb2.EMBEDDING_SOURCE_THUMBNAIL for e in computed)
    result.embedded_frames = sum(e.count for e in computed if e.source == events_pb2.EMBEDDING_SOURCE_FRAMES)
    labels = Counter(
        c.label
        for e in computed
        if e.source == events_pb2.EMBEDDING_SOURCE_FRAMES
        for c in e.top_concepts
        for _ in range(c.count)
    )
    result.concepts = labels.most_common(8)


def report(result: DemoResult, workdir: Path, console: Console) -> None:
    table = Table(title="tubelens demo: crawl, preprocess, embed, train")
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, count in pipeline_rows(result):
        table.add_row(what, str(count))
    console.print(table)
    kinds = Counter(letter.error_type for letter in result.dead_letters)
    for letter in result.dead_letters:
        video_id = events.decode(letter.value).video_discovered.video_id
        console.print(f"DLQ {video_id}: {letter.error_type}: {letter.reason[:140]}")
    if kinds:
        console.print("dead letters by error: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    _print_findings(result, workdir, console)


def pipeline_rows(result: DemoResult) -> list[tuple[str, int | str]]:
    """What the demo processed, for the console table and the HTML report."""
    return [
        ("channels in the stand-in's catalogue", len(result.catalogue.get("channels", []))),
        ("videos discovered", result.discovered),
        ("  by source", ", ".join(f"{k} {v}" for k, v in sorted(result.crawl.discovered.items()))),
        ("stats snapshots", result.snapshots),
        ("API quota units spent", result.quota_used),
        ("thumbnails stored", result.thumbnails),
        ("videos with frames and audio", result.videos_with_frames),
        ("frames kept (slates dropped)", result.frames),
        ("seconds of audio features", result.audio_seconds),
        ("thumbnails embedded and indexed", result.embedded_thumbnails),
        ("frames embedded", result.embedded_frames),
        ("objects in the store", result.objects),
        ("dataset snapshot", f"{result.snapshot_id}: {result.rows} videos"),
        ("dead-lettered", len(result.dead_letters)),
        ("seconds", f"{result.seconds:.1f}"),
    ]


def _print_findings(result: DemoResult, workdir: Path, console: Console) -> None:
    if result.concepts:
        console.print(
            "ImageNet concepts seen most in frames: " + ", ".join(f"{label} ({n})" for label, n in result.concepts)
        )
    for title, matches in result.similar:
        console.print(f"most similar to {title} (cosine; ranked with the perceptual hash):")
        for other, score, duplicate in matches:
            console.print(f"    {score:.3f}  {other}{'  [near-duplicate]' if duplicate else ''}")
    if result.evaluation is not None:
        result.evaluation.render(console)
    _models_table(result, console)
    _predictor_section(result, console)
    if result.report_path is not None:
        console.print(f"HTML report: {result.report_path.resolve()}")
    console.print(f"objects under {workdir / 'objects'}, metrics in {workdir / 'metrics.json'}")
    console.print(f"JSON logs in {workdir / 'demo.log'}")


def _models_table(result: DemoResult, console: Console) -> None:
    table = Table(title="models in the registry (promoted = served by default)")
    for column in ("task", "version", "promoted", "held-out metrics"):
        table.add_column(column)
    for trained in result.trained.results:
        metrics = ", ".join(f"{name} {value:.3f}" for name, value in trained.metrics.items())
        table.add_row(trained.entry.task, trained.entry.version, "yes" if trained.promoted else "no", metrics)
    for task, reason in result.trained.skipped.items():
        table.add_row(task, "—", "—", f"skipped: {reason}")
    console.print(table)


def _predictor_section(result: DemoResult, console: Console) -> None:
    if result.serving is None or result.sample is None:
        return
    popularity = result.sample.popularity
    buckets = ", ".join(f"{b.probability:.2f}" for b in popularity.buckets)
    console.print(f"predictor (gRPC, tubelens.v1.Predictor) at {result.serving.address}")
    console.print(
        f"  PredictPopularity of a known thumbnail, answered by {result.sample.model.name} "
        f"{result.sample.model.version}: {popularity.expected_views:,.0f} views expected at 7 days "
        f"({popularity.interval_level:.0%} interval {popularity.views_low:,.0f}-{popularity.views_high:,.0f}); "
        f"bucket probabilities {buckets}"
    )
    console.print("  try it:")
    console.print(result.example)
