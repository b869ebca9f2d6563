"""Preprocessor throughput: thumbnails/s through decode, normalize, hash and store; frames/s sampled from an MP4.

Run with `python -m tests.bench.preprocess`. In-process, one thread, a local object store in a temp directory, no
network. Thumbnails are distinct 320x180 JPEGs (as YouTube's mqdefault), so content addressing never turns a put
into a no-op. "per CPU-second" divides by the process's CPU time rather than the wall clock: it is the rate one
core sustains, whatever else the machine is doing (and it counts FFmpeg's decoding threads too).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.preprocessorkit import jpeg, loopback_settings, video
from tubelens.objects import LocalObjectStore
from tubelens.preprocessor.frames import extract_frames
from tubelens.preprocessor.media import MP4
from tubelens.preprocessor.thumbnails import prepare_thumbnail, store_thumbnail

THUMBNAILS = 1000
VIDEO_SECONDS = 20
MAX_PIXELS = 40_000_000


@dataclass
class Row:
    what: str
    items: int
    unit: str
    wall_s: float
    cpu_s: float

    @property
    def per_second(self) -> float:
        return self.items / self.wall_s

    @property
    def per_cpu_second(self) -> float:
        return self.items / self.cpu_s


def timed(what: str, items: int, unit: str, work: Callable[[], object]) -> Row:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return Row(what, items, unit, time.perf_counter() - wall, time.process_time() - cpu)


def bench_thumbnails(workdir: Path, count: int = THUMBNAILS) -> list[Row]:
    sources = [jpeg(seed) for seed in range(count)]
    store = LocalObjectStore(workdir / "objects", "bench")
    store.ensure_bucket()

    def prepare_only() -> None:
        for data in sources:
            prepare_thumbnail(data, max_pixels=MAX_PIXELS)

    def prepare_and_store() -> None:
        for n, data in enumerate(sources):
            prepared = prepare_thumbnail(data, max_pixels=MAX_PIXELS)
            store_thumbnail(store, prepared, video_id=f"video-{n}", source_url="https://i.ytimg.com/vi/x/mqdefault.jpg")

    return [
        timed("thumbnails: decode + normalize + hash", count, "thumbnails", prepare_only),
        timed("thumbnails: ... + store 3 objects", count, "thumbnails", prepare_and_store),
    ]


def bench_frames(workdir: Path, seconds: int = VIDEO_SECONDS) -> list[Row]:
    path = workdir / "bench.mp4"
    path.write_bytes(video(title_s=1, content_s=seconds - 2, end_s=1, fps=24, size=(640, 360), tone_hz=None))
    rows = []
    for fps in (1.0, 24.0):
        settings = loopback_settings(frame_fps=fps)
        sampled = extract_frames(path, MP4, settings)  # warm-up, and the count of frames it samples
        count = len(sampled.frames) + sampled.dropped_leading + sampled.dropped_trailing
        rows.append(
            timed(
                f"frames: 640x360 H.264 sampled at {fps:g} fps",
                count,
                "frames",
                lambda settings=settings: extract_frames(path, MP4, settings),
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    table = Table(title="preprocessor throughput (one thread, local object store)")
    for column in ("what", "items", "per second", "per CPU-second"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for row in rows:
        table.add_row(row.what, f"{row.items:,} {row.unit}", f"{row.per_second:,.0f}", f"{row.per_cpu_second:,.0f}")
    Console().print(table)


def main() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-preprocess-") as workdir:
        rows = bench_thumbnails(Path(workdir)) + bench_frames(Path(workdir))
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
