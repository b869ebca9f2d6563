"""Preprocessor throughput: thumbnails/s through decode, normalize, hash and store, beside a bare decode of the same
JPEGs; the three objects of a thumbnail put one after the other and together on S3; frames/s sampled from an MP4.

Run with `python -m tests.bench.preprocess`. In-process, one thread. Thumbnails are distinct 320x180 JPEGs (as
YouTube's mqdefault), so content addressing never turns a put into a no-op. "per CPU-second" divides by the process's
CPU time rather than the wall clock: it is the rate one core sustains, whatever else the machine is doing (and it
counts FFmpeg's decoding threads too). The reference is Pillow opening and decoding the same bytes and nothing more;
"x the CPU" says how many bare decodes' worth of CPU a thumbnail costs. Each thumbnail figure is the best of
`ROUNDS` rounds over fresh thumbnails: other processes on a shared machine only ever slow a round down.

The local object store is first filled with `WARM_UP_THUMBNAILS` other thumbnails, so that the 256 two-character
directories of each variant's prefix exist, as they do in any store past its first few thousand objects. The S3
rows put the variants of `S3_THUMBNAILS` thumbnails into moto on loopback: one `put_content` after the other (the
reference), then all three in one `put_contents`, which uploads them concurrently ("x the rate": thumbnails/s over
the reference's).
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from tests.preprocessorkit import jpeg, loopback_settings, video
from tubelens.devtools.servers import S3_ACCESS_KEY, S3_SECRET_KEY, start_s3
from tubelens.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from tubelens.preprocessor.frames import extract_frames
from tubelens.preprocessor.media import MP4
from tubelens.preprocessor.thumbnails import PreparedThumbnail, prepare_thumbnail, store_thumbnail
from tubelens.settings import S3Settings

THUMBNAILS = 500  # per round
ROUNDS = 3
WARM_UP_THUMBNAILS = 1000
S3_THUMBNAILS = 100
VIDEO_SECONDS = 20
MAX_PIXELS = 40_000_000
SOURCE_URL = "https://i.ytimg.com/vi/x/mqdefault.jpg"


@dataclass
class Row:
    what: str
    items: int
    unit: str
    wall_s: float
    cpu_s: float
    reference: Row | None = None  # what this row is measured against, in the same run
    by: str = "cpu"  # "cpu": CPU per item as a multiple of the reference's; "wall": items/s as a multiple

    @property
    def per_second(self) -> float:
        return self.items / self.wall_s

    @property
    def per_cpu_second(self) -> float:
        return self.items / self.cpu_s

    @property
    def versus(self) -> str:
        if self.reference is None:
            return ""
        if self.by == "wall":
            return f"{self.per_second / self.reference.per_second:.2f} x the rate"
        return f"{self.reference.per_cpu_second / self.per_cpu_second:.1f} x the CPU"


def timed(what: str, items: int, unit: str, work: Callable[[], object]) -> Row:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return Row(what, items, unit, time.perf_counter() - wall, time.process_time() - cpu)


def best_of(rounds: Sequence[Row]) -> Row:
    return min(rounds, key=lambda row: row.cpu_s / row.items)


def thumbnails(count: int, first_seed: int) -> list[bytes]:
    return [jpeg(seed) for seed in range(first_seed, first_seed + count)]


def bench_thumbnails(workdir: Path, count: int = THUMBNAILS, rounds: int = ROUNDS) -> list[Row]:
    sources = thumbnails(count, first_seed=0)
    store = LocalObjectStore(workdir / "objects", "bench")
    store.ensure_bucket()
    _store_all(store, thumbnails(WARM_UP_THUMBNAILS, first_seed=10**6))  # the store's directories, and a warm-up

    def decode_only() -> None:
        for data in sources:
            Image.open(io.BytesIO(data)).load()

    def prepare_only() -> None:
        for data in sources:
            prepare_thumbnail(data, max_pixels=MAX_PIXELS)

    decode = best_of([
        timed("thumbnails: bare decode (Pillow)", count, "thumbnails", decode_only) for _ in range(rounds)
    ])
    prepare = best_of([
        timed("thumbnails: decode + normalize + hash", count, "thumbnails", prepare_only) for _ in range(rounds)
    ])
    stored = []
    for round_number in range(rounds):
        fresh = thumbnails(count, first_seed=(round_number + 2) * count)
        work = lambda fresh=fresh: _store_all(store, fresh)  # noqa: E731
        stored.append(timed("thumbnails: ... + store 3 objects (local)", count, "thumbnails", work))
    rows = [decode, prepare, best_of(stored)]
    for row in rows[1:]:
        row.reference = decode
    return rows


def _store_all(store: ObjectStore, sources: list[bytes]) -> None:
    for n, data in enumerate(sources):
        prepared = prepare_thumbnail(data, max_pixels=MAX_PIXELS)
        store_thumbnail(store, prepared, video_id=f"video-{n}", source_url=SOURCE_URL)


def bench_s3_puts(workdir: Path, count: int = S3_THUMBNAILS) -> list[Row]:
    """Wall-clock rate of storing prepared thumbnails in S3: three puts in a row, then three at once."""
    server = start_s3(workdir / "s3")
    try:
        store = S3ObjectStore(
            S3Settings(endpoint=server.address, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, bucket="bench")
        )
        store.ensure_bucket()
        warm_up, one_by_one, together = (
            [prepare_thumbnail(data, max_pixels=MAX_PIXELS) for data in thumbnails(count, first_seed=first)]
            for first in (99 * count, 100 * count, 101 * count)
        )
        _put_in_a_row(store, warm_up[:10])  # connections, and moto's first requests
        rows = [
            timed(
                "S3: a thumbnail's 3 objects, one put after another", count, "thumbnails",
                lambda: _put_in_a_row(store, one_by_one),
            ),
            timed(
                "S3: a thumbnail's 3 objects in one put_contents", count, "thumbnails",
                lambda: [store_thumbnail(store, p, video_id="v", source_url=SOURCE_URL) for p in together],
            ),
        ]
    finally:
        server.stop()
    rows[1].reference, rows[1].by = rows[0], "wall"
    return rows


def _put_in_a_row(store: ObjectStore, prepared: list[PreparedThumbnail]) -> None:
    for thumbnail in prepared:
        for variant in thumbnail.variants:
            store.put_content(
                variant.data, prefix=f"thumbnails/{variant.name}", content_type=variant.content_type,
                suffix=variant.suffix,
            )


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
    table = Table(title="preprocessor throughput (one thread; thumbnails: best of rounds)")
    for column in ("what", "items", "per second", "per CPU-second", "vs the reference"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for row in rows:
        table.add_row(
            row.what,
            f"{row.items:,} {row.unit}",
            f"{row.per_second:,.0f}",
            f"{row.per_cpu_second:,.0f}",
            row.versus,
        )
    Console(width=140).print(table)


def main() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-preprocess-") as workdir:
        rows = bench_thumbnails(Path(workdir)) + bench_s3_puts(Path(workdir)) + bench_frames(Path(workdir))
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
