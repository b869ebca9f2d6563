"""Similarity search at service scale: build time, query latency (p50/p99) and recall@10 of the HNSW index over
100,000 thumbnail embeddings of dimension 1280, beside the exact scan it replaces.

Run with `python -m tests.bench.similarity`. The vectors are synthetic: 500 Gaussian clusters, as embeddings of
thumbnails fall into topics, and uniformly random ones, the worst case for any graph index (in 1280 dimensions every
random pair is nearly orthogonal, so "nearest" is decided by noise). Queries are held out from the same distribution
and asked one at a time, as gRPC calls ask them; recall@10 is measured against the exact index's answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from tests.unit.test_embedding_index import clustered_rows, ids_for, unit_rows
from tubelens.embedding.index import SimilarityIndex

SIZE = 100_000
DIM = 1280
CLUSTERS = 500
SPREAD = 1.0  # a point's offset from its cluster centre, as a fraction of the centre's norm
QUERIES = 300
K = 10


@dataclass
class Row:
    distribution: str
    path: str
    vectors: int
    dim: int
    queries: int
    build_s: float
    p50_ms: float
    p99_ms: float
    recall: float | None  # None for the exact path, the reference itself


def vectors(distribution: str, count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    if distribution == "uniform":
        return unit_rows(rng, count, dim)
    return clustered_rows(rng, unit_rows(rng, CLUSTERS, dim), count, SPREAD)


def bench_similarity(distribution: str, size: int = SIZE, dim: int = DIM, queries: int = QUERIES) -> list[Row]:
    """One row for the exact scan, one for the HNSW index, over the same vectors and queries."""
    rng = np.random.default_rng(0)
    everything = vectors(distribution, size + queries, dim, rng)
    rows, probes = everything[:size], everything[size:]
    ids = ids_for(size)
    exact_build_s, exact = _built(SimilarityIndex(dim, exact_below=size + 1), ids, rows)
    approximate_build_s, approximate = _built(SimilarityIndex(dim, exact_below=size), ids, rows)
    assert exact.exact and not approximate.exact
    truth, exact_ms = _answers(exact, probes)
    found, approximate_ms = _answers(approximate, probes)
    recall = float(np.mean([len(set(t) & set(f)) / K for t, f in zip(truth, found, strict=True)]))
    return [
        Row(distribution, "exact", size, dim, queries, exact_build_s, *_percentiles(exact_ms), None),
        Row(
            distribution, "approximate", size, dim, queries, approximate_build_s, *_percentiles(approximate_ms), recall
        ),
    ]


def _built(index: SimilarityIndex, ids: list[str], rows: np.ndarray) -> tuple[float, SimilarityIndex]:
    started = time.perf_counter()
    index.upsert_many(ids, rows)
    return time.perf_counter() - started, index


def _answers(index: SimilarityIndex, probes: np.ndarray) -> tuple[list[list[str]], list[float]]:
    """Each probe's top-k ids, and each query's latency in milliseconds."""
    answers, latencies = [], []
    for probe in probes:
        started = time.perf_counter()
        matches = index.query(probe, K)
        latencies.append((time.perf_counter() - started) * 1000)
        answers.append([match.video_id for match in matches])
    return answers, latencies


def _percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(latencies_ms, [50, 99])
    return float(p50), float(p99)


def print_table(rows: list[Row]) -> None:
    table = Table(title=f"similarity index: one query at a time, k={K}")
    for column in ("distribution", "path", "vectors", "dim", "queries", "build s", "p50 ms", "p99 ms", "recall@10"):
        table.add_column(column, justify="left" if column in ("distribution", "path") else "right")
    for row in rows:
        table.add_row(
            row.distribution,
            row.path,
            f"{row.vectors:,}",
            str(row.dim),
            str(row.queries),
            f"{row.build_s:.1f}",
            f"{row.p50_ms:.2f}",
            f"{row.p99_ms:.2f}",
            "reference" if row.recall is None else f"{row.recall:.3f}",
        )
    Console().print(table)


def main() -> list[Row]:
    rows = bench_similarity("clustered") + bench_similarity("uniform")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
