"""Similarity search at service scale: the HNSW index over 100,000 thumbnail embeddings of dimension 1280 beside the
brute-force scan it replaces, and a restart from its checkpoint beside the rebuild it replaces.

Run with `python -m tests.bench.similarity`. The vectors are synthetic: 500 Gaussian clusters, as embeddings of
thumbnails fall into topics, and (`UNIFORM_SIZE` of them) uniformly random ones, the worst case for any graph index
(in 1280 dimensions every random pair is nearly orthogonal, so "nearest" is decided by noise). Queries are held out
from the same distribution and asked one at a time, as gRPC calls ask them; recall@10 is measured against the exact
top 10 (one matrix product).

Per distribution: the brute-force scan (the index's exact path) answers `REFERENCE_QUERIES` queries, the reference
latency; the HNSW index is built from the same vectors (wall and CPU seconds, on every core) and answers `QUERIES`.
"cos@10" is the mean cosine of the 10th answer, found beside true: how far a miss is from what it missed. "p99 CPU
ms" is the query thread's own CPU time: on a shared machine the wall-clock p99 also holds the waits for a core.
Then, on the clustered vectors, the restart: a checkpoint is saved to a local object store, and the index loaded
from it, once fetching its files into an empty cache (a new machine) and once finding them cached (a restarted
process); "ready s" ends when it can answer approximate queries, which must equal the built index's answers. The
reference for a restart is what it replaces: building the graph again.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tests.unit.test_embedding_index import clustered_rows, ids_for, unit_rows
from tubelens.embedding.index import SimilarityIndex
from tubelens.objects import LocalObjectStore

SIZE = 100_000
# Uniform vectors tell the same story at any size, and their graph costs 2.6 times a clustered one's per vector to
# build (at 100,000: 104 CPU-seconds, about 190 s of wall clock on the shared 2-core machine): a quarter keeps
# `make bench` short.
UNIFORM_SIZE = 25_000
DIM = 1280
CLUSTERS = 500
SPREAD = 1.0  # a point's offset from its cluster centre, as a fraction of the centre's norm
QUERIES = 300
REFERENCE_QUERIES = 50  # a brute-force query reads all 512 MB of vectors: 50 give its latency well enough
K = 10
WARM_UP = 10  # queries before the timed ones: the first touch of a just-built or just-mapped index is not serving
PREFIX = "index/bench"


@dataclass
class Row:
    distribution: str  # and how many vectors of what dimension
    path: str
    seconds: float | None = None  # build, or ready after a restart
    cpu_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p99_cpu_ms: float | None = None  # the query thread's own CPU time: p99_ms less the waits for a core
    recall: float | None = None
    cosine_10th: tuple[float, float] | None = None  # found, true
    versus: str = "reference"


def vectors(distribution: str, count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    if distribution == "uniform":
        return unit_rows(rng, count, dim)
    return clustered_rows(rng, unit_rows(rng, CLUSTERS, dim), count, SPREAD)


def bench_similarity(
    distribution: str, workdir: Path, size: int = SIZE, dim: int = DIM, queries: int = QUERIES, restart: bool = True
) -> list[Row]:
    rng = np.random.default_rng(0)
    everything = vectors(distribution, size + queries, dim, rng)
    rows, probes = everything[:size], everything[size:]
    ids = ids_for(size)
    distribution = f"{distribution} {size:,} x {dim}"
    truth_ids, truth_10th = _truth(rows, probes, ids)

    exact = SimilarityIndex(dim, exact_below=size + 1)
    exact.upsert_many(ids, rows)
    assert exact.exact
    _, exact_ms = _answers(exact, probes[:REFERENCE_QUERIES])
    del exact
    reference = Row(distribution, "brute force (exact scan)", None, None, *exact_ms, recall=1.0)

    # Its cache_dir is where the process that saves the checkpoint keeps the files, as the service's would be.
    approximate = SimilarityIndex(dim, exact_below=size, checkpoint_every=0, cache_dir=workdir / "writer-cache")
    wall, cpu = time.perf_counter(), time.process_time()
    approximate.upsert_many(ids, rows)
    build_s, build_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    assert not approximate.exact
    found, approximate_ms = _answers(approximate, probes)
    built = Row(
        distribution,
        "HNSW int8, rescored",
        build_s,
        build_cpu_s,
        *approximate_ms,
        recall=_recall(found, truth_ids),
        cosine_10th=(_mean_10th(approximate, found, probes), truth_10th),
    )
    built.versus = f"p50 {reference.p50_ms / built.p50_ms:.3g} x faster"
    result = [reference, built]
    if restart:
        result += _restarts(approximate, found, probes, workdir, built)
    return result


def _restarts(index: SimilarityIndex, found: list[list[str]], probes: np.ndarray, workdir: Path, built: Row):
    store = LocalObjectStore(workdir / "objects", "bench")
    store.ensure_bucket()
    index.save_shard(store, PREFIX)  # the events' shards, which the service writes batch by batch
    started = time.perf_counter()
    assert index.save_checkpoint(store, PREFIX) is not None
    saved_s = time.perf_counter() - started
    rows = []
    caches = {"restart, files fetched": workdir / "empty-cache", "restart, files cached": workdir / "writer-cache"}
    for what, cache in caches.items():
        wall, cpu = time.perf_counter(), time.process_time()
        loaded = SimilarityIndex.load_shards(store, PREFIX, index.dim, exact_below=index.exact_below, cache_dir=cache)
        ready_s, ready_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        assert not loaded.exact and len(loaded) == len(index)
        answers, latencies = _answers(loaded, probes)
        assert answers == found, f"{what}: the restarted index answers differently"
        started = time.perf_counter()
        loaded.upsert("first-change", probes[0])  # copies the mapped graph into memory, once
        what += f" (its first upsert {time.perf_counter() - started:.1f} s)"
        row = Row(built.distribution, what, ready_s, ready_cpu_s, *latencies, recall=built.recall)
        row.versus = f"{built.seconds / ready_s:.3g} x faster than a rebuild"
        rows.append(row)
        del loaded
    rows[0].path += f" (checkpoint saved in {saved_s:.1f} s)"
    return rows


def _truth(rows: np.ndarray, probes: np.ndarray, ids: list[str]) -> tuple[list[list[str]], float]:
    """Each probe's exact top-k ids, and the mean cosine of the k-th."""
    scores = probes @ rows.T
    unordered = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    top = np.take_along_axis(unordered, np.argsort(-np.take_along_axis(scores, unordered, axis=1), axis=1), axis=1)
    return [[ids[i] for i in best] for best in top], float(np.take_along_axis(scores, top, axis=1)[:, -1].mean())


def _answers(index: SimilarityIndex, probes: np.ndarray) -> tuple[list[list[str]], tuple[float, float, float]]:
    """Each probe's top-k ids, and the p50 and p99 latency and p99 CPU time in milliseconds, after `WARM_UP`
    untimed queries."""
    for probe in probes[:WARM_UP]:
        index.query(probe, K)
    answers, latencies, cpu = [], [], []
    for probe in probes:
        started, started_cpu = time.perf_counter(), time.thread_time()
        matches = index.query(probe, K)
        latencies.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        answers.append([match.video_id for match in matches])
    p50, p99 = np.percentile(latencies, [50, 99])
    return answers, (float(p50), float(p99), float(np.percentile(cpu, 99)))


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(t) & set(f)) / K for t, f in zip(truth, found, strict=True)]))


def _mean_10th(index: SimilarityIndex, found: list[list[str]], probes: np.ndarray) -> float:
    return float(np.mean([index.vector(answer[-1]) @ probe for answer, probe in zip(found, probes, strict=True)]))


def print_table(rows: list[Row]) -> None:
    table = Table(title=f"similarity index: one query at a time, k={K}")
    columns = (
        "distribution", "path", "build / ready s", "CPU s", "p50 ms", "p99 ms", "p99 CPU ms", "recall@10",
        "cos@10 found / true",
        "vs the reference",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("distribution", "path") else "right")
    for row in rows:
        table.add_row(
            row.distribution,
            row.path,
            _maybe(row.seconds, "{:.1f}"),
            _maybe(row.cpu_s, "{:.1f}"),
            _maybe(row.p50_ms, "{:.2f}"),
            _maybe(row.p99_ms, "{:.2f}"),
            _maybe(row.p99_cpu_ms, "{:.2f}"),
            _maybe(row.recall, "{:.3f}"),
            "" if row.cosine_10th is None else "{:.3f} / {:.3f}".format(*row.cosine_10th),
            row.versus,
        )
    Console(width=170).print(table)


def _maybe(value: float | None, form: str) -> str:
    return "" if value is None else form.format(value)


def main() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-similarity-") as workdir:
        rows = bench_similarity("clustered", Path(workdir))
        rows += bench_similarity("uniform", Path(workdir), size=UNIFORM_SIZE, restart=False)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
