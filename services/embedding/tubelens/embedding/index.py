"""Cosine top-k over thumbnail embeddings, keyed by video id, with near-duplicate detection.

Vectors are L2-normalized on the way in, so cosine similarity is a dot product. A float32 matrix of every vector is
the source of truth: it answers queries exactly while the index is small, serves `vector()` and shards, and rescores
the candidates of the approximate path, so both paths report the same score for the same pair.
From `exact_below` vectors on, an HNSW graph (usearch) finds the candidates instead of a full scan. The graph holds
int8 copies of the vectors (scaled so that all but the largest 0.01 % of components keep their full range): a
quarter of float32's memory, about five times faster to build, and the exact rescoring of its best `GRAPH_CANDIDATES`
puts back the order the quantization blurs. It is built from the matrix, on every core, when the index first reaches
`exact_below` (queries go on with exact scans meanwhile) and kept in step with every later change.

Upserts are keyed by video id and a redelivered vector changes nothing, so event handlers can call them freely.
Persistence is a series of `.npz` shards in the object store, the source of truth: `save_shard` writes what changed
since the last save. Every `checkpoint_every` changes, `save_shard` also saves a checkpoint (`index_checkpoint`): the
graph and the slot table beside the shards. `SimilarityIndex.load_shards` maps the newest usable checkpoint from a
local cache (`cache_dir`) and replays on top of it only the shards written after it, in the order they were taken;
without one it replays every shard and builds the graph again. Removals are not recorded in shards: a checkpoint
taken after a removal keeps it, a replay of the shards alone does not; a full save (`changed_only=False`) followed
by deleting the older shards compacts them away.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Gauge, Histogram
from usearch.index import Index

from tubelens.embedding import index_checkpoint
from tubelens.errors import InvalidInput, NotFound
from tubelens.images import UNKNOWN_PHASH, NearDuplicatePolicy, hamming_distance
from tubelens.objects import ObjectStore

log = logging.getLogger(__name__)

MAX_K = 1000
# The graph is asked for at least this many candidates, rescored in float32: with int8 distances alone recall@10 on
# 10,000 clustered 1280-d vectors is 0.99; with 32 rescored, 1.000, for a few hundredths of a millisecond a query.
GRAPH_CANDIDATES = 32
# Components beyond this quantile of |x| are clipped to +-127 in the graph's int8 copies; the rest keep 254 levels.
QUANTIZATION_QUANTILE = 0.9999
QUANTIZATION_SAMPLE_ROWS = 1000
CHECKPOINT_EVERY = 10_000
SHARD_CONTENT_TYPE = "application/x-npz"
SHARD_SUFFIX = ".npz"
_INITIAL_CAPACITY = 1024
# With the query's perceptual hash, the nearest RERANK_POOL by cosine are re-ordered by cosine minus this much per
# differing hash bit: two thumbnails of one channel share a style the embedding sees, while the hash tells a
# re-encoded or resized copy of *this* picture (on the stand-in, rank-1 retrieval of altered copies 88% -> 96%).
RERANK_POOL = 50
PHASH_PENALTY_PER_BIT = 0.005

INDEX_VECTORS = Gauge("tubelens_embedding_index_vectors", "Vectors held by the similarity index")
QUERY_SECONDS = Histogram(
    "tubelens_embedding_index_query_duration_seconds",
    "Time to answer one top-k query, by the path that answered it",
    ["path"],
    # Approximate queries take well under a millisecond, exact scans of large indexes tens of milliseconds.
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)


@dataclass(frozen=True)
class Match:
    video_id: str
    # What matches are ordered by: the cosine, less the hash penalty when the query's perceptual hash is known.
    score: float
    near_duplicate: bool
    cosine: float  # cosine similarity, 1.0 for the same direction


class _ReadWriteLock:
    """Many readers or one writer. A waiting writer holds back new readers, so a stream of queries cannot starve
    the event consumer's inserts."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._changed:
            while self._writing or self._writers_waiting:
                self._changed.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                if not self._readers:
                    self._changed.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._changed:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._changed.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._changed:
                self._writing = False
                self._changed.notify_all()


@dataclass(frozen=True)
class _Shard:
    key: str
    taken_ns: int
    ids: np.ndarray
    vectors: np.ndarray
    phashes: np.ndarray


class SimilarityIndex:
    """Top-k cosine search over unit vectors keyed by video id; safe to share between threads.

    Each video id owns a slot (a row of the matrix and the key of its HNSW node); removed slots are reused.
    `connectivity`, `expansion_add` and `expansion_search` are the HNSW parameters M, efConstruction and efSearch.
    `build_threads` = 0 builds the graph on every core; a parallel build leaves about one node in 10,000 that no
    search reaches (unum-cloud/USearch#735; 2 and 3 of 20,000 here at 2 threads and at every core), `build_threads=1`
    none. `checkpoint_every` changes (0: never) make `save_shard` save a checkpoint too, its files kept in `cache_dir`
    (None: a temporary directory of this process, so a restart fetches them again).
    """

    def __init__(
        self,
        dim: int,
        *,
        exact_below: int = 20_000,
        connectivity: int = 16,
        expansion_add: int = 64,
        expansion_search: int = 128,
        build_threads: int = 0,
        near_duplicate: NearDuplicatePolicy | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        cache_dir: Path | None = None,
    ) -> None:
        if dim < 1 or exact_below < 0 or checkpoint_every < 0:
            raise InvalidInput(
                f"dim must be positive, exact_below and checkpoint_every non-negative, got {dim}, {exact_below} and "
                f"{checkpoint_every}"
            )
        self.dim = dim
        self.exact_below = exact_below
        self.near_duplicate = near_duplicate or NearDuplicatePolicy()
        self._graph_options = {
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "expansion_search": expansion_search,
        }
        self._build_threads = build_threads
        self._lock = _ReadWriteLock()
        self._matrix = np.zeros((_INITIAL_CAPACITY, dim), dtype=np.float32)
        self._phashes = np.zeros(_INITIAL_CAPACITY, dtype=np.uint64)
        self._live = np.zeros(_INITIAL_CAPACITY, dtype=bool)
        self._ids: list[str | None] = []  # slot -> video id; its length is the number of slots ever used
        self._slots: dict[str, int] = {}
        self._free: list[int] = []
        self._graph: Index | None = None
        self._scale = 1.0  # of the graph's int8 copies, fixed when the graph is built
        self._graph_is_view = False  # a checkpoint's graph, mapped read-only until its first change
        # Slots changed while the graph is being built, replayed onto it before it goes live; None when not building.
        self._touched_during_build: set[int] | None = None
        self._unsaved: set[str] = set()
        # Persistence: shards and checkpoints are written one at a time, so a checkpoint knows every shard it holds.
        self._persisting = threading.Lock()
        self._shards: set[str] = set()  # every shard this index holds: loaded, or saved by it
        self._changes_since_checkpoint = 0
        self.checkpoint_every = checkpoint_every
        self._cache_dir = cache_dir

    # ---- reading -----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._slots

    @property
    def exact(self) -> bool:
        """True while queries are answered by a full scan, False once the HNSW graph answers them."""
        return self._graph is None or len(self._slots) < self.exact_below

    def vector(self, video_id: str) -> np.ndarray:
        """The stored (unit) vector of `video_id`, as a copy."""
        with self._lock.read():
            return self._matrix[self._slot_of(video_id)].copy()

    def phash(self, video_id: str) -> int | None:
        with self._lock.read():
            value = int(self._phashes[self._slot_of(video_id)])
        return None if value == UNKNOWN_PHASH else value

    def query(
        self, vector: np.ndarray | Sequence[float], k: int, *, exclude: str | None = None, phash: int | None = None
    ) -> list[Match]:
        """The `k` most similar videos, best first; `phash` (of the query image) sharpens near-duplicate flags."""
        _check_k(k)
        unit = self._unit_vector(vector)
        query_phash = _checked_phash(phash)
        with self._lock.read():
            return self._search(unit, k, skip=self._slots.get(exclude) if exclude else None, phash=query_phash)

    def query_id(self, video_id: str, k: int) -> list[Match]:
        """The `k` videos most similar to an indexed one, itself left out."""
        _check_k(k)
        with self._lock.read():
            slot = self._slot_of(video_id)
            return self._search(self._matrix[slot], k, skip=slot, phash=int(self._phashes[slot]))

    def near_duplicates(self, video_id: str, *, limit: int = 100) -> list[Match]:
        """Indexed videos whose thumbnail nearly duplicates this one's, best first, among its `limit` nearest."""
        return [match for match in self.query_id(video_id, limit) if match.near_duplicate]

    # ---- writing -----------------------------------------------------------------------------------------------

    def upsert(self, video_id: str, vector: np.ndarray | Sequence[float], phash: int | None = None) -> None:
        """Insert or replace the vector of `video_id`; storing the same vector again changes nothing."""
        self.upsert_many([video_id], self._unit_vector(vector)[None, :], [phash])

    def upsert_many(
        self,
        video_ids: Sequence[str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        phashes: Sequence[int | None] | np.ndarray | None = None,
    ) -> None:
        """Upsert a batch, all or nothing: every input is checked before anything changes. A repeated id's last
        row wins, as it would in a sequence of single upserts."""
        ids = [_checked_id(video_id) for video_id in video_ids]
        rows = self._unit_rows(vectors, len(ids))
        hashes = _checked_phashes(phashes, len(ids))
        last = list({video_id: position for position, video_id in enumerate(ids)}.values())
        with self._lock.write():
            slots = self._place([ids[p] for p in last], rows[last], hashes[last])
            self._changes_since_checkpoint += len(slots)
            self._sync_graph(slots)
            snapshot = self._start_build_if_due()
            INDEX_VECTORS.set(len(self._slots))
        if snapshot is not None:
            self._build_graph(*snapshot)

    def remove(self, video_id: str) -> bool:
        """Forget `video_id`; True when it was indexed. Removing an unknown id is not an error, so it can be retried."""
        with self._lock.write():
            slot = self._slots.pop(video_id, None)
            if slot is None:
                return False
            self._ids[slot] = None
            self._live[slot] = False
            self._free.append(slot)
            self._unsaved.discard(video_id)
            self._changes_since_checkpoint += 1
            self._sync_graph([slot])
            INDEX_VECTORS.set(len(self._slots))
        return True

    # ---- persistence -------------------------------------------------------------------------------------------

    def save_shard(self, store: ObjectStore, prefix: str, *, changed_only: bool = True) -> str | None:
        """Write the vectors upserted since the last save (all of them with `changed_only=False`) as one
        content-addressed `.npz` under `prefix`; returns its key, or None when there was nothing to write.
        When `checkpoint_every` changes have piled up since the last checkpoint, save one as well; one that fails
        is logged and tried again at the next shard (the shard is what must not fail: it is the source of truth)."""
        with self._persisting:
            key = self._save_shard(store, prefix, changed_only=changed_only)
            if self.checkpoint_every and self._changes_since_checkpoint >= self.checkpoint_every:
                try:
                    self._save_checkpoint(store, prefix)
                except Exception as error:  # noqa: BLE001 - an outage or a full disk must not hold up the events
                    log.warning("index checkpoint not saved", extra={"error": f"{type(error).__name__}: {error}"})
        return key

    def save_checkpoint(self, store: ObjectStore, prefix: str) -> str | None:
        """Save the shard of what changed, then the graph and slot table as a checkpoint under `prefix`; returns the
        manifest's key, or None while there is no graph (the shards restore an exact index quickly)."""
        with self._persisting:
            self._save_shard(store, prefix, changed_only=True)
            return self._save_checkpoint(store, prefix)

    @classmethod
    def load_shards(cls, store: ObjectStore, prefix: str, dim: int, **options: Any) -> SimilarityIndex:
        """A new index holding every shard under `prefix`: the newest usable checkpoint, then the shards written
        after it in the order they were taken, so the latest vector of each video wins. `options` are the
        constructor's keyword arguments."""
        index = cls(dim, **options)
        for key in index_checkpoint.manifests(store, prefix):
            try:
                restored = index_checkpoint.restore(
                    store, key, dim=dim, cache=index._cache(), expansion_search=index._graph_options["expansion_search"]
                )
            except index_checkpoint.CheckpointUnusable as error:
                log.warning("index checkpoint unusable", extra={"checkpoint": key, "error": str(error)})
                continue
            index._take(restored)
            log.info("index mapped from checkpoint", extra={"checkpoint": key, "vectors": len(index)})
            break
        shards = sorted(
            _read_shards(store, prefix, dim, skip=index._shards), key=lambda shard: (shard.taken_ns, shard.key)
        )
        if shards:
            index.upsert_many(
                np.concatenate([shard.ids for shard in shards]).tolist(),
                np.concatenate([shard.vectors for shard in shards]),
                np.concatenate([shard.phashes for shard in shards]),
            )
        index._shards.update(shard.key for shard in shards)
        index._unsaved.clear()  # everything it holds is in the store already
        return index

    def _save_shard(self, store: ObjectStore, prefix: str, *, changed_only: bool) -> str | None:
        with self._lock.write():
            ids = sorted(self._unsaved if changed_only else self._slots)
            slots = [self._slots[video_id] for video_id in ids]
            # Taken under the lock, so the order of `taken_ns` is the order of the states the shards hold.
            data = _shard_bytes(ids, self._matrix[slots], self._phashes[slots], taken_ns=time.time_ns())
            self._unsaved.difference_update(ids)
        if not ids:
            return None
        try:
            info = store.put_content(data, prefix=prefix, content_type=SHARD_CONTENT_TYPE, suffix=SHARD_SUFFIX)
        except BaseException:
            with self._lock.write():
                self._unsaved.update(video_id for video_id in ids if video_id in self._slots)
            raise
        self._shards.add(info.key)
        return info.key

    def _save_checkpoint(self, store: ObjectStore, prefix: str) -> str | None:
        """Under the persistence lock. Files are written under the read lock (queries go on, writers wait about a
        second at 100,000 vectors) and uploaded outside it; changes made after it reach the next shard."""
        cache = self._cache()
        with self._lock.read():
            if self._graph is None:
                return None
            taken_ns, used = time.time_ns(), len(self._ids)
            paths = index_checkpoint.write_files(
                cache / f"writing-{taken_ns}", self._graph, self._matrix[:used], self._ids, self._phashes[:used]
            )
            live, scale, shards = len(self._slots), self._scale, list(self._shards)
            pending, self._changes_since_checkpoint = self._changes_since_checkpoint, 0
        try:
            key = index_checkpoint.publish(
                store, prefix, paths, cache=cache, taken_ns=taken_ns, dim=self.dim, live=live, scale=scale,
                shards=shards,
            )
        except BaseException:
            with self._lock.write():
                self._changes_since_checkpoint += pending  # still unsaved: the next shard tries again
            raise
        finally:
            shutil.rmtree(cache / f"writing-{taken_ns}", ignore_errors=True)
        log.info("index checkpoint saved", extra={"checkpoint": key, "vectors": live})
        return key

    def _take(self, restored: index_checkpoint.Restored) -> None:
        """Become the restored checkpoint (on a new index, before anyone else sees it)."""
        ids = restored.ids.tolist()
        self._matrix, self._phashes = restored.vectors, restored.phashes
        self._live = restored.ids != ""
        self._ids = [video_id or None for video_id in ids]
        self._slots = {video_id: slot for slot, video_id in enumerate(ids) if video_id}
        self._free = [slot for slot, video_id in enumerate(ids) if not video_id]
        self._graph, self._graph_is_view, self._scale = restored.graph, True, restored.scale
        self._shards = set(restored.shards)
        INDEX_VECTORS.set(len(self._slots))

    def _cache(self) -> Path:
        if self._cache_dir is None:
            self._cache_dir = Path(tempfile.mkdtemp(prefix="tubelens-index-"))
            weakref.finalize(self, shutil.rmtree, self._cache_dir, ignore_errors=True)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        return self._cache_dir

    # ---- internals: search ---------------------------------------------------------------------------------------

    def _search(self, unit: np.ndarray, k: int, *, skip: int | None, phash: int) -> list[Match]:
        """Top-k under the read lock; `skip` is a slot to leave out. A known query phash re-ranks a wider pool."""
        path = "exact" if self.exact else "approximate"
        started = time.perf_counter()
        pool = k if phash == UNKNOWN_PHASH else max(k, RERANK_POOL)
        if path == "exact":
            slots, scores = self._exact_top(unit, pool, skip)
        else:
            slots, scores = self._approximate_top(unit, pool, skip)
        # The penalty applies whenever the query's hash is known, whatever k: one pair always gets one score.
        reranked = phash != UNKNOWN_PHASH
        matches = [
            Match(
                video_id=self._ids[slot],
                score=score - self._phash_penalty(phash, slot) if reranked else score,
                near_duplicate=self.near_duplicate.judge(score, phash, int(self._phashes[slot])),
                cosine=score,
            )
            for slot, score in zip(slots.tolist(), scores.tolist(), strict=True)
        ]
        if reranked:  # reported by the score they are ordered by, the raw cosine beside it
            matches = sorted(matches, key=lambda match: match.score, reverse=True)[:k]
        QUERY_SECONDS.labels(path=path).observe(time.perf_counter() - started)
        return matches

    def _phash_penalty(self, phash: int, slot: int) -> float:
        """Unknown hashes cost the average of unrelated pictures (32 bits): no bonus without evidence."""
        other = int(self._phashes[slot])
        bits = 32 if other == UNKNOWN_PHASH else hamming_distance(phash, other)
        return PHASH_PENALTY_PER_BIT * bits

    def _exact_top(self, unit: np.ndarray, k: int, skip: int | None) -> tuple[np.ndarray, np.ndarray]:
        used = len(self._ids)
        scores = self._matrix[:used] @ unit
        scores[~self._live[:used]] = -np.inf
        if skip is not None:
            scores[skip] = -np.inf
        count = min(k, len(self._slots) - (skip is not None))
        if count <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        top = np.argpartition(-scores, count - 1)[:count]
        return _best_first(top, _cosines(self._matrix[top], unit))

    def _approximate_top(self, unit: np.ndarray, k: int, skip: int | None) -> tuple[np.ndarray, np.ndarray]:
        assert self._graph is not None
        wanted = max(k, GRAPH_CANDIDATES) + (skip is not None)
        found = self._graph.search(_quantized(unit, self._scale), wanted, threads=1)
        slots = found.keys.astype(np.int64)
        if skip is not None:
            slots = slots[slots != skip]
        slots, scores = _best_first(slots, _cosines(self._matrix[slots], unit))
        return slots[:k], scores[:k]

    # ---- internals: writing ------------------------------------------------------------------------------------

    def _place(self, ids: list[str], rows: np.ndarray, hashes: np.ndarray) -> list[int]:
        """Store unique ids' rows under the write lock; returns the slots whose content changed."""
        slots = np.array([self._slots.get(video_id, -1) for video_id in ids], dtype=np.int64)
        known = slots >= 0
        unchanged = np.zeros(len(ids), dtype=bool)
        unchanged[known] = np.all(self._matrix[slots[known]] == rows[known], axis=1) & (
            self._phashes[slots[known]] == hashes[known]
        )
        changed = np.flatnonzero(~unchanged)
        for position in np.flatnonzero(~known):
            slots[position] = self._claim_slot(ids[position])
        target = slots[changed]
        self._matrix[target] = rows[changed]
        self._phashes[target] = hashes[changed]
        self._live[target] = True
        self._unsaved.update(ids[position] for position in changed)
        return target.tolist()

    def _claim_slot(self, video_id: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = video_id
        else:
            slot = len(self._ids)
            self._reserve(slot + 1)
            self._ids.append(video_id)
        self._slots[video_id] = slot
        return slot

    def _reserve(self, slots: int) -> None:
        """Grow the arrays by doubling, so that n inserts copy O(n) rows in all."""
        capacity = len(self._matrix)
        if slots <= capacity:
            return
        capacity = max(slots, 2 * capacity)
        self._matrix = _grown(self._matrix, capacity)
        self._phashes = _grown(self._phashes, capacity)
        self._live = _grown(self._live, capacity)

    def _sync_graph(self, slots: list[int]) -> None:
        """Bring the graph's nodes for `slots` in line with the matrix (under the write lock)."""
        if self._touched_during_build is not None:
            self._touched_during_build.update(slots)
        if self._graph is not None and slots:
            if self._graph_is_view:
                # A mapped checkpoint is read-only: copied into memory once, at its first change.
                self._graph = self._graph.copy()
                self._graph.expansion_search = self._graph_options["expansion_search"]
                self._graph_is_view = False
            self._replace_nodes(self._graph, np.asarray(slots, dtype=np.int64))

    def _start_build_if_due(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Under the write lock: when the index has just reached `exact_below`, start recording changes and
        return (slots, rows) to build the graph from; the build itself runs outside the lock."""
        building = self._touched_during_build is not None
        if self._graph is not None or building or not self._slots or len(self._slots) < self.exact_below:
            return None
        self._touched_during_build = set()
        slots = np.flatnonzero(self._live[: len(self._ids)])
        return slots, self._matrix[slots]

    def _build_graph(self, slots: np.ndarray, rows: np.ndarray) -> None:
        """Build the HNSW graph while queries go on with exact scans, then replay what changed meanwhile."""
        try:
            scale = _quantization_scale(rows)
            graph = Index(ndim=self.dim, metric="ip", dtype="i8", **self._graph_options)
            graph.add(slots.astype(np.uint64), _quantized(rows, scale), threads=self._build_threads)
        except BaseException:
            with self._lock.write():
                self._touched_during_build = None  # the next upsert tries again
            raise
        with self._lock.write():
            touched = np.fromiter(self._touched_during_build or (), dtype=np.int64)
            self._scale = scale
            if len(touched):
                self._replace_nodes(graph, touched)
            self._graph = graph
            self._touched_during_build = None

    def _replace_nodes(self, graph: Index, slots: np.ndarray) -> None:
        """Remove, then re-add the live ones: usearch refuses a key it holds already, and ignores removing a
        missing one. One thread: concurrent inserts can leave nodes no search reaches (unum-cloud/USearch#735),
        a price worth paying only for the bulk build."""
        keys = slots.astype(np.uint64)
        graph.remove(keys)
        alive = self._live[slots]
        if alive.any():
            graph.add(keys[alive], _quantized(self._matrix[slots[alive]], self._scale), threads=1)

    # ---- internals: validation ---------------------------------------------------------------------------------

    def _unit_vector(self, vector: np.ndarray | Sequence[float]) -> np.ndarray:
        array = _float32(vector)
        if array.shape != (self.dim,):
            raise InvalidInput(
                f"expected a vector of {self.dim} values, got an array of shape {array.shape}", field="vector"
            )
        return _normalized(array[None, :])[0]

    def _unit_rows(self, vectors: np.ndarray | Sequence[Sequence[float]], count: int) -> np.ndarray:
        array = _float32(vectors)
        if count == 0 and array.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if array.shape != (count, self.dim):
            raise InvalidInput(
                f"expected {count} vectors of {self.dim} values, got an array of shape {array.shape}", field="vector"
            )
        return _normalized(array)

    def _slot_of(self, video_id: str) -> int:
        slot = self._slots.get(video_id)
        if slot is None:
            raise NotFound(f"no embedding for video {video_id!r} in the similarity index", field="video_id")
        return slot


def _cosines(rows: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The scores both paths report. Not a matrix product: BLAS rounds a row's dot product differently depending on
    how many rows it is given, and the graph's own distances differ too; a row-wise sum rounds each row alike."""
    return (rows * unit).sum(axis=1)


def _best_first(slots: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    return slots[order], scores[order]


def _quantization_scale(rows: np.ndarray) -> float:
    # A thousand rows spread over the index tell the quantile as well as all of them, without copying them all.
    sample = rows[:: max(1, len(rows) // QUANTIZATION_SAMPLE_ROWS)]
    top = float(np.quantile(np.abs(sample), QUANTIZATION_QUANTILE)) if sample.size else 0.0
    return 127.0 / top if top > 0 else 127.0


def _quantized(rows: np.ndarray, scale: float) -> np.ndarray:
    """The graph's int8 copy: a common scale keeps every dot product's order up to rounding."""
    return np.clip(np.rint(rows * np.float32(scale)), -127, 127).astype(np.int8)


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _float32(values: object) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"vector is not numeric: {error}", field="vector") from error


def _normalized(rows: np.ndarray) -> np.ndarray:
    if not np.isfinite(rows).all():
        raise InvalidInput("vector holds NaN or infinite values", field="vector")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInput("a zero vector has no direction to compare", field="vector")
    return (rows / norms).astype(np.float32)


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}, got {k}", field="k")


def _checked_id(video_id: object) -> str:
    if not isinstance(video_id, str) or not video_id:
        raise InvalidInput(f"video id must be a non-empty string, got {video_id!r}", field="video_id")
    return video_id


def _checked_phash(phash: int | None) -> int:
    if phash is None:
        return UNKNOWN_PHASH
    if not 0 <= int(phash) < 2**64:
        raise InvalidInput(f"phash must be a 64-bit unsigned integer, got {phash}", field="phash")
    return int(phash)


def _checked_phashes(phashes: Sequence[int | None] | np.ndarray | None, count: int) -> np.ndarray:
    if phashes is None:
        return np.zeros(count, dtype=np.uint64)
    if len(phashes) != count:
        raise InvalidInput(f"expected {count} phashes, got {len(phashes)}", field="phash")
    if isinstance(phashes, np.ndarray) and phashes.dtype == np.uint64:
        return phashes
    return np.array([_checked_phash(phash) for phash in phashes], dtype=np.uint64)


def _shard_bytes(ids: list[str], vectors: np.ndarray, phashes: np.ndarray, *, taken_ns: int) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=np.str_), vectors=vectors, phashes=phashes, taken_ns=np.int64(taken_ns))
    return buffer.getvalue()


def _read_shards(store: ObjectStore, prefix: str, dim: int, *, skip: set[str]) -> Iterator[_Shard]:
    """The shards under `prefix` but for those in `skip` (a checkpoint holds them); not the checkpoints' files."""
    checkpoints = index_checkpoint.folder(prefix)
    for info in store.list(prefix.rstrip("/") + "/"):
        if info.key.endswith(SHARD_SUFFIX) and not info.key.startswith(checkpoints) and info.key not in skip:
            yield _parse_shard(info.key, store.get(info.key), dim)


def _parse_shard(key: str, data: bytes, dim: int) -> _Shard:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            shard = _Shard(
                key=key,
                taken_ns=int(arrays["taken_ns"]),
                ids=arrays["ids"].astype(np.str_),
                vectors=arrays["vectors"].astype(np.float32),
                phashes=arrays["phashes"].astype(np.uint64),
            )
    except (KeyError, ValueError, OSError) as error:
        raise InvalidInput(f"embedding shard {key!r} is unreadable: {error}", field="shard") from error
    rows = len(shard.ids)
    if shard.vectors.shape != (rows, dim) or shard.phashes.shape != (rows,):
        raise InvalidInput(
            f"embedding shard {key!r} holds {rows} ids, vectors of shape {shard.vectors.shape} and phashes of shape "
            f"{shard.phashes.shape}; expected ({rows}, {dim}) and ({rows},)",
            field="shard",
        )
    return shard
