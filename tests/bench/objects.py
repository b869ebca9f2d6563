"""Object-store throughput: put and get MB/s by object size, against S3 (moto on loopback) and a directory.

Run with `python -m tests.bench.objects`. Every repetition stores fresh random bytes, so content addressing
never turns a put into a no-op; figures are medians over the repetitions.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tubelens.devtools.servers import S3_ACCESS_KEY, S3_SECRET_KEY, start_s3
from tubelens.objects import ObjectStore, open_store
from tubelens.settings import LocalObjectsSettings, ObjectsKind, S3Settings, TubelensSettings

MB = 1024 * 1024
SIZES_MB = (1, 20)
REPEATS = 5


def bench_objects(store: ObjectStore, sizes: Iterable[int] = SIZES_MB, repeats: int = REPEATS) -> list[dict]:
    """One row per size (in MB): median put and get throughput over `repeats` fresh objects."""
    rows = []
    for size_mb in sizes:
        rounds = [_round_trip(store, size_mb) for _ in range(repeats)]
        rows.append({
            "store": type(store).__name__,
            "size_mb": size_mb,
            "repeats": repeats,
            "put_mb_s": statistics.median(put for put, _get in rounds),
            "get_mb_s": statistics.median(get for _put, get in rounds),
        })
    return rows


def _round_trip(store: ObjectStore, size_mb: int) -> tuple[float, float]:
    """(put MB/s, get MB/s) for one fresh object, which is deleted afterwards."""
    data = os.urandom(size_mb * MB)
    started = time.perf_counter()
    info = store.put_content(data, prefix="bench", content_type="application/octet-stream")
    stored = time.perf_counter()
    read = store.get(info.key)
    fetched = time.perf_counter()
    assert read == data, f"{store!r} returned other bytes for {info.key}"
    store.delete(info.key)
    return size_mb / (stored - started), size_mb / (fetched - stored)


def print_table(rows: list[dict]) -> None:
    table = Table(title="object store throughput (median MB/s)")
    for column in ("store", "size", "put MB/s", "get MB/s", "repeats"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for row in rows:
        table.add_row(
            row["store"], f"{row['size_mb']} MB", f"{row['put_mb_s']:.0f}", f"{row['get_mb_s']:.0f}",
            str(row["repeats"]),
        )
    Console().print(table)


def main() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-objects-") as workdir:
        server = start_s3(Path(workdir) / "s3")
        try:
            s3 = S3Settings(endpoint=server.address, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY,
                            bucket="bench")
            local = LocalObjectsSettings(root=Path(workdir) / "local", bucket="bench")
            rows = []
            for settings in (
                TubelensSettings(objects=ObjectsKind.S3, s3=s3),
                TubelensSettings(objects=ObjectsKind.LOCAL, local=local),
            ):
                rows += bench_objects(open_store(settings))
        finally:
            server.stop()
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
