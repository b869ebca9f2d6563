"""Embedding throughput: images/s through onnxruntime and eager torch, and through the micro-batcher; titles/s through
the MiniLM title encoder.

Run with `python -m tests.bench.embedding`. Input is already-prepared 224x224 batches (decoding is the
preprocessor's benchmark), so the figures are the backbone's alone. Every runtime is held to the same number of
threads (2, the size of a small service pod); the model is exported to a temp directory first. Titles are 1,000
distinct made-up titles of 3 to 12 words (real titles run about that long), encoded in batches of 64 after a
one-batch warm-up; the model's load time (import included, as a fresh process pays it) heads that table.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from tubelens.embedding.batching import MicroBatcher
from tubelens.modelkit.backbone import Backbone
from tubelens.modelkit.export import export_onnx, natural_noise
from tubelens.modelkit.text import TextEncoder

THREADS = 2
BATCH_SIZES = (1, 8, 32)
SUBMITTERS = 4
WINDOWS_S = (0.010, 0.0)
SECONDS = 3.0


@dataclass
class Row:
    what: str
    images: int
    wall_s: float

    @property
    def per_second(self) -> float:
        return self.images / self.wall_s


def repeat_for(seconds: float, work: Callable[[], int]) -> tuple[int, float]:
    """Run `work` (which returns how many images it did) until `seconds` have passed, after one warm-up call."""
    work()
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        images += work()
    return images, time.perf_counter() - started


def bench_runtime(backbone: Backbone, batches: dict[int, np.ndarray]) -> list[Row]:
    rows = []
    for size, batch in batches.items():
        images, wall = repeat_for(SECONDS, lambda batch=batch: len(backbone.infer(batch).vectors))
        rows.append(Row(f"{backbone.runtime}, batch {size}", images, wall))
    return rows


def bench_batcher(backbone: Backbone, image: np.ndarray, window_s: float) -> Row:
    """SUBMITTERS threads, each sending one image at a time and waiting for its answer, as gRPC handlers would."""
    counts = [0] * SUBMITTERS
    stop = threading.Event()
    with MicroBatcher(backbone.infer, max_images=32, window_s=window_s) as batcher:
        batcher.submit(image).result()

        def submitter(n: int) -> None:
            while not stop.is_set():
                batcher.submit(image).result()
                counts[n] += 1

        threads = [threading.Thread(target=submitter, args=(n,)) for n in range(SUBMITTERS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)
        stop.set()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    what = f"micro-batcher ({backbone.runtime}, window {window_s * 1000:g} ms), {SUBMITTERS} submitters x 1 image"
    return Row(what, sum(counts), wall)


SERVICE_THUMBNAILS = 512


def bench_service(backbone: Backbone, workdir: Path) -> Row:
    """thumbnails.stored events through the embedding handler and the bus worker, as the service runs them: fetch
    the stored 224x224 JPEG, decode, batch, infer, store vectors and concepts, index, shard, publish, commit."""
    from tests.integration.test_embedding_service import catalogue_thumbnails, thumbnail_event
    from tubelens import events
    from tubelens.bus import Worker
    from tubelens.bus.memory import MemoryBus
    from tubelens.embedding.handler import EmbeddingHandler
    from tubelens.embedding.index import SimilarityIndex
    from tubelens.objects.local import LocalObjectStore

    store = LocalObjectStore(workdir / "objects", "bench")
    store.ensure_bucket()
    bus = MemoryBus()
    producer = bus.producer()
    for video_id, jpeg in catalogue_thumbnails(SERVICE_THUMBNAILS):
        events.publish(producer, thumbnail_event(store, video_id, jpeg), key=video_id, service="bench", cause="bench")
    handler = EmbeddingHandler(
        backbone, store=store, producer=producer, index=SimilarityIndex(backbone.dim), shard_prefix="index/bench"
    )
    worker = Worker(
        bus,
        [events.THUMBNAILS_STORED],
        "bench",
        handler,
        service="bench",
        producer=producer,
        max_batch=64,
        before_commit=handler.before_commit,
    )
    started = time.perf_counter()
    thread = worker.start_thread()
    while sum(bus.broker.committed("bench").values()) < SERVICE_THUMBNAILS:
        time.sleep(0.005)
    wall = time.perf_counter() - started
    worker.stop()
    thread.join()
    return Row(f"the service's event path ({backbone.runtime}, bus batches of 64)", SERVICE_THUMBNAILS, wall)


TITLES = 1_000
TITLE_BATCH = 64
TITLE_WORDS = (
    "insane", "supercar", "crash", "review", "how", "I", "built", "a", "robot", "in", "7", "days", "ramen", "Tokyo",
    "street", "food", "tour", "grammar", "lesson", "the", "subjunctive", "why", "nobody", "talks", "about", "this",
    "budget", "gaming", "PC", "2026", "vs", "cheap", "expensive", "guitar", "cover", "live", "reaction", "to",
    "world's", "biggest", "garden", "tips", "beginners", "NEW", "update", "explained", "minutes", "!!!", "?", "|",
)  # fmt: skip


def made_up_titles(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    titles = [" ".join(rng.choice(TITLE_WORDS, size=rng.integers(3, 13))) for _ in range(n)]
    return [f"{title} #{number}" for number, title in enumerate(titles)]  # distinct, as a cache would not help


def bench_text() -> tuple[Row, float]:
    """One pass of TITLES titles in batches of TITLE_BATCH, and the seconds the first load took."""
    started = time.perf_counter()
    encoder = TextEncoder(threads=THREADS)
    encoder.model()
    load_s = time.perf_counter() - started
    titles = made_up_titles(TITLES)
    encoder.encode(titles[:TITLE_BATCH], TITLE_BATCH)
    started = time.perf_counter()
    encoder.encode(titles, TITLE_BATCH)
    return Row(f"all-MiniLM-L6-v2 (torch), batch {TITLE_BATCH}", TITLES, time.perf_counter() - started), load_s


def print_text_table(row: Row, load_s: float) -> None:
    table = Table(title=f"title embedding throughput (all-MiniLM-L6-v2, 384-d, {THREADS} threads; load {load_s:.1f} s)")
    for column in ("what", "titles", "titles/s"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row(row.what, f"{row.images:,}", f"{row.per_second:,.1f}")
    Console().print(table)


def print_table(rows: list[Row], export_s: float) -> None:
    table = Table(
        title=f"embedding throughput (EfficientNet-Lite0, 224x224, {THREADS} threads; export {export_s:.1f} s)"
    )
    for column in ("what", "images", "images/s"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for row in rows:
        table.add_row(row.what, f"{row.images:,}", f"{row.per_second:,.1f}")
    Console().print(table)


def main() -> list[Row]:
    torch.set_num_threads(THREADS)
    batches = {size: natural_noise(size) for size in BATCH_SIZES}
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-embedding-") as workdir:
        report = export_onnx(Path(workdir) / "backbone.onnx")
        fast = Backbone(report.path, intra_op_threads=THREADS)
        eager = Backbone(Path(workdir) / "absent.onnx", export_if_missing=False)
        rows = bench_runtime(fast, batches) + bench_runtime(eager, batches)
        rows += [bench_batcher(fast, batches[1], window_s) for window_s in WINDOWS_S]
        rows.append(bench_service(fast, Path(workdir)))
    print_table(rows, report.seconds)
    text_row, load_s = bench_text()
    print_text_table(text_row, load_s)
    return [*rows, text_row]


if __name__ == "__main__":
    main()
