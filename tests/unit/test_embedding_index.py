"""The similarity index: exact top-k below its size threshold, HNSW above it with high recall, upserts keyed by video
id, near-duplicates judged by pHash and embedding together, shards in the object store, and many threads at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tubelens.embedding.index import Match, SimilarityIndex
from tubelens.errors import InvalidInput, NotFound
from tubelens.images import NearDuplicatePolicy
from tubelens.images import hamming_distance as hamming
from tubelens.objects import LocalObjectStore

DIM = 64
NEVER_APPROXIMATE = 10**9
# The approximate index searches as wide as these small indexes are large, so it must find what the exact one finds.
# A parallel HNSW build can leave the odd node that no search reaches (unum-cloud/USearch#735); tests that expect
# every vector to find itself build on one thread.
SINGLE_THREADED_BUILD = 1
BOTH_PATHS = [
    {"exact_below": NEVER_APPROXIMATE},
    {"exact_below": 100, "expansion_search": 500, "build_threads": SINGLE_THREADED_BUILD},
]


def unit_rows(rng: np.random.Generator, count: int, dim: int = DIM) -> np.ndarray:
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered_rows(rng: np.random.Generator, centres: np.ndarray, count: int, spread: float) -> np.ndarray:
    """Gaussian clusters around unit centres; `spread` is the expected norm of a point's offset from its centre."""
    dim = centres.shape[1]
    rows = centres[rng.integers(0, len(centres), count)]
    rows = rows + rng.standard_normal((count, dim)).astype(np.float32) * np.float32(spread / np.sqrt(dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids_for(count: int, start: int = 0) -> list[str]:
    return [f"video-{number:06d}" for number in range(start, start + count)]


def brute_force(rows: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    scores = rows @ (query / np.linalg.norm(query))
    best = np.argsort(-scores)[:k]
    return [ids[i] for i in best], scores[best]


def filled(rows: np.ndarray, *, exact_below: int = NEVER_APPROXIMATE, **options: object) -> SimilarityIndex:
    index = SimilarityIndex(rows.shape[1], exact_below=exact_below, **options)
    index.upsert_many(ids_for(len(rows)), rows)
    return index


def rotated(base: np.ndarray, towards: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly `cosine` to `base`, when `base` and `towards` are orthonormal."""
    return cosine * base + np.sqrt(1 - cosine**2) * towards


def recall_at_10(index: SimilarityIndex, rows: np.ndarray, ids: list[str], queries: np.ndarray) -> float:
    truth = np.argsort(-(queries @ rows.T), axis=1)[:, :10]
    found = 0
    for query, best in zip(queries, truth, strict=True):
        expected = {ids[i] for i in best}
        found += len(expected & {match.video_id for match in index.query(query, 10)})
    return found / (10 * len(queries))


# --- exact search ---------------------------------------------------------------------------------------------------


def test_exact_results_equal_a_brute_force_reference() -> None:
    rng = np.random.default_rng(1)
    rows = unit_rows(rng, 2_000)
    index = filled(rows)
    for query in rng.standard_normal((25, DIM)).astype(np.float32):
        matches = index.query(query, 10)
        expected_ids, expected_scores = brute_force(rows, ids_for(2_000), query, 10)
        assert index.exact
        assert [match.video_id for match in matches] == expected_ids
        np.testing.assert_allclose([match.score for match in matches], expected_scores, rtol=1e-5, atol=1e-6)


def test_vectors_are_normalized_on_insert_so_scores_are_cosines() -> None:
    index = SimilarityIndex(3)
    index.upsert("a", [3.0, 0.0, 4.0])
    np.testing.assert_allclose(index.vector("a"), [0.6, 0.0, 0.8], rtol=1e-6)
    assert index.query([30.0, 0.0, 40.0], 1)[0].score == pytest.approx(1.0, abs=1e-6)


def test_k_larger_than_the_index_returns_everything_best_first() -> None:
    index = SimilarityIndex(2)
    index.upsert_many(["east", "north", "west"], [[1, 0], [0, 1], [-1, 0]])
    assert [match.video_id for match in index.query([1, 0.1], 50)] == ["east", "north", "west"]
    assert SimilarityIndex(2).query([1, 0], 5) == []


@pytest.mark.parametrize("options", BOTH_PATHS, ids=["exact", "approximate"])
def test_exclude_and_query_id_leave_the_video_itself_out(options: dict[str, int]) -> None:
    rng = np.random.default_rng(2)
    rows = unit_rows(rng, 500)
    ids = ids_for(500)
    index = filled(rows, **options)
    assert index.exact is (options is BOTH_PATHS[0])
    expected_ids, _ = brute_force(rows, ids, rows[7], 11)
    assert expected_ids[0] == ids[7]

    by_vector = index.query(rows[7], 10, exclude=ids[7])
    by_id = index.query_id(ids[7], 10)

    assert [match.video_id for match in by_vector] == expected_ids[1:]
    assert by_id == by_vector


def test_upsert_of_a_known_id_replaces_its_vector() -> None:
    rng = np.random.default_rng(3)
    rows = unit_rows(rng, 300)
    index = filled(rows)
    replacement = unit_rows(rng, 1)[0]

    index.upsert("video-000042", replacement)

    assert len(index) == 300
    np.testing.assert_allclose(index.vector("video-000042"), replacement, rtol=1e-6)
    best = index.query(replacement, 1)[0]
    assert best.video_id == "video-000042" and best.score == pytest.approx(1.0, abs=1e-6)
    assert "video-000042" not in [match.video_id for match in index.query(rows[42], 3)]


def test_a_batch_repeating_an_id_keeps_its_last_row() -> None:
    index = SimilarityIndex(2)
    index.upsert_many(["a", "b", "a"], [[1, 0], [0, 1], [-1, 0]])
    assert len(index) == 2
    np.testing.assert_allclose(index.vector("a"), [-1, 0])


@pytest.mark.parametrize("options", BOTH_PATHS, ids=["exact", "approximate"])
def test_remove_forgets_the_video_and_its_slot_is_reused(options: dict[str, int]) -> None:
    rng = np.random.default_rng(4)
    rows = unit_rows(rng, 400)
    index = filled(rows, **options)
    assert index.exact is (options is BOTH_PATHS[0])

    assert index.remove("video-000010") is True
    assert index.remove("video-000010") is False

    assert len(index) == 399
    assert "video-000010" not in index
    remaining = [number for number in range(400) if number != 10]
    expected_ids, _ = brute_force(rows[remaining], [ids_for(400)[number] for number in remaining], rows[10], 5)
    assert [match.video_id for match in index.query(rows[10], 5)] == expected_ids
    with pytest.raises(NotFound):
        index.query_id("video-000010", 5)

    newcomer = unit_rows(rng, 1)[0]
    index.upsert("newcomer", newcomer)
    assert len(index) == 400
    assert index.query(newcomer, 1)[0].video_id == "newcomer"
    assert index.query(rows[11], 1)[0].video_id == "video-000011"


# --- approximate search ---------------------------------------------------------------------------------------------


def test_reaching_the_threshold_switches_to_hnsw_and_keeps_every_vector() -> None:
    rng = np.random.default_rng(5)
    rows = unit_rows(rng, 1_000)
    ids = ids_for(1_000)
    index = SimilarityIndex(DIM, exact_below=600, build_threads=SINGLE_THREADED_BUILD)
    for start in range(0, 1_000, 100):
        assert index.exact is (start < 600)
        index.upsert_many(ids[start : start + 100], rows[start : start + 100])

    assert not index.exact
    assert len(index) == 1_000
    for video_id, row in zip(ids, rows, strict=True):
        best = index.query(row, 1)[0]
        assert best.video_id == video_id
        assert best.score == pytest.approx(1.0, abs=1e-5)


def test_on_a_small_index_both_paths_give_identical_results() -> None:
    rng = np.random.default_rng(6)
    rows = unit_rows(rng, 300, dim=32)
    exact = filled(rows)
    approximate = filled(rows, exact_below=1, expansion_search=300, build_threads=SINGLE_THREADED_BUILD)
    assert exact.exact and not approximate.exact
    for query in rng.standard_normal((30, 32)).astype(np.float32):
        assert approximate.query(query, 10) == exact.query(query, 10)


@pytest.mark.slow
def test_hnsw_recall_at_10_on_50k_clustered_1280d_vectors_is_at_least_095() -> None:
    rng = np.random.default_rng(7)
    centres = unit_rows(rng, 500, dim=1280)
    rows = clustered_rows(rng, centres, 50_000, spread=1.0)
    queries = clustered_rows(rng, centres, 200, spread=1.0)  # held out, drawn like the indexed ones
    ids = ids_for(50_000)
    index = SimilarityIndex(1280)  # default parameters: this is the configuration the service runs

    started = time.perf_counter()
    index.upsert_many(ids, rows)
    build_s = time.perf_counter() - started

    assert not index.exact
    recall = recall_at_10(index, rows, ids, queries)
    print(f"50k x 1280 clustered: build {build_s:.1f} s, recall@10 {recall:.3f}")
    assert recall >= 0.95


# --- near-duplicates ------------------------------------------------------------------------------------------------


def test_hamming_counts_differing_bits() -> None:
    assert hamming(0b1011, 0b0010) == 2
    assert hamming(2**64 - 1, 0) == 64


@pytest.mark.parametrize(
    ("cosine", "phash_a", "phash_b", "expected"),
    [
        (0.95, 0xFFFF_0000, 0xFFFF_0000, True),
        (0.95, 0xFFFF_0000, 0xFFFF_03FF, True),  # 10 bits apart: the limit
        (0.95, 0xFFFF_0000, 0xFFFF_07FF, False),  # 11 bits apart
        (0.89, 0xFFFF_0000, 0xFFFF_0000, False),  # same hash, unrelated content
        (0.95, 0, 0xFFFF_0000, False),  # one hash unknown: the stricter cosine applies
        (0.98, 0xFFFF_0000, 0, True),
    ],
)
def test_near_duplicate_needs_close_hashes_and_close_embeddings(
    cosine: float, phash_a: int, phash_b: int, expected: bool
) -> None:
    assert NearDuplicatePolicy().judge(cosine, phash_a, phash_b) is expected


def test_near_duplicate_thresholds_are_configurable() -> None:
    lenient = NearDuplicatePolicy(max_hamming=20, min_cosine=0.5, min_cosine_without_phash=0.8)
    phash = 2**40
    assert lenient.judge(0.6, phash, phash ^ (2**20 - 1))
    assert not lenient.judge(0.6, phash, phash ^ (2**21 - 1))
    assert lenient.judge(0.85, phash, 0)
    assert not lenient.judge(0.75, phash, 0)


def test_near_duplicates_of_a_video_combine_phash_and_cosine() -> None:
    base, side = np.eye(8, dtype=np.float32)[:2]
    phash = 0x0123_4567_89AB_CDEF
    index = SimilarityIndex(8)
    index.upsert("original", base, phash)
    index.upsert("re-encoded", rotated(base, side, 0.99), phash ^ 0b111)
    index.upsert("cropped", rotated(base, side, 0.92), phash ^ 0xFF)
    index.upsert("same-hash-other-picture", rotated(base, side, 0.80), phash)
    index.upsert("similar-look-other-hash", rotated(base, side, 0.95), ~phash & (2**64 - 1))
    index.upsert("no-hash-very-close", rotated(base, side, 0.98))
    index.upsert("no-hash-close", rotated(base, side, 0.93))

    duplicates = index.near_duplicates("original")

    # Best first by the score each reports: the cosine less 0.005 per differing hash bit (32 for an unknown hash),
    # so the crop whose hash agrees ranks above the closer picture whose hash is unknown.
    assert [match.video_id for match in duplicates] == ["re-encoded", "cropped", "no-hash-very-close"]
    assert [match.score for match in duplicates] == pytest.approx([0.99 - 0.015, 0.92 - 0.04, 0.98 - 0.16], abs=1e-5)
    assert [match.cosine for match in duplicates] == pytest.approx([0.99, 0.92, 0.98], abs=1e-5)
    assert index.phash("cropped") == phash ^ 0xFF
    assert index.phash("no-hash-close") is None


def test_a_query_flags_near_duplicates_against_the_query_phash() -> None:
    base, side = np.eye(4, dtype=np.float32)[:2]
    index = SimilarityIndex(4)
    index.upsert("a", rotated(base, side, 0.95), 0xABCD)
    assert index.query(base, 1, phash=0xABCD)[0].near_duplicate
    assert not index.query(base, 1)[0].near_duplicate


# --- shards ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path, "embeddings")
    store.ensure_bucket()
    return store


def test_shards_round_trip_and_a_later_shard_overrides_an_id(store: LocalObjectStore) -> None:
    rng = np.random.default_rng(8)
    first, second = unit_rows(rng, 50), unit_rows(rng, 10)
    index = SimilarityIndex(DIM)
    index.upsert_many(ids_for(50), first, [number + 1 for number in range(50)])
    first_key = index.save_shard(store, "shards/v1")
    index.upsert_many(ids_for(10, start=45), second, [None] * 10)  # five replaced, five new
    second_key = index.save_shard(store, "shards/v1")

    loaded = SimilarityIndex.load_shards(store, "shards/v1", DIM)

    assert first_key != second_key
    assert store.stat(first_key).content_type == "application/x-npz"
    assert first_key.startswith("shards/v1/") and first_key.endswith(".npz")
    assert len(loaded) == 55
    for video_id in ids_for(55):
        np.testing.assert_array_equal(loaded.vector(video_id), index.vector(video_id))
        assert loaded.phash(video_id) == index.phash(video_id)
    assert loaded.phash("video-000003") == 4
    assert loaded.phash("video-000046") is None
    np.testing.assert_allclose(loaded.vector("video-000046"), second[1], rtol=1e-6)


def test_a_shard_holds_only_what_changed_since_the_last_save(store: LocalObjectStore) -> None:
    rng = np.random.default_rng(9)
    rows = unit_rows(rng, 20)
    index = SimilarityIndex(DIM)
    index.upsert_many(ids_for(20), rows)
    assert index.save_shard(store, "shards") is not None

    index.upsert_many(ids_for(20), rows)  # a redelivered batch
    assert index.save_shard(store, "shards") is None

    index.upsert("video-000003", unit_rows(rng, 1)[0])
    changed = index.save_shard(store, "shards")
    assert changed is not None
    with np.load(store.open(changed)) as shard:
        assert shard["ids"].tolist() == ["video-000003"]
        assert shard["vectors"].dtype == np.float32 and shard["phashes"].dtype == np.uint64
    full = index.save_shard(store, "shards", changed_only=False)
    assert full is not None and len(np.load(store.open(full))["ids"]) == 20


def test_loading_enough_shards_builds_the_approximate_index(store: LocalObjectStore) -> None:
    rng = np.random.default_rng(10)
    rows = unit_rows(rng, 300)
    filled(rows).save_shard(store, "shards")

    loaded = SimilarityIndex.load_shards(store, "shards", DIM, exact_below=200)

    assert not loaded.exact and len(loaded) == 300
    assert loaded.query(rows[5], 1)[0].video_id == "video-000005"
    assert loaded.save_shard(store, "shards") is None  # nothing new since the load


def test_a_shard_of_another_dimension_is_refused(store: LocalObjectStore) -> None:
    small = SimilarityIndex(3)
    small.upsert("a", [1, 2, 3])
    small.save_shard(store, "shards")
    with pytest.raises(InvalidInput, match=r"expected \(1, 64\)"):
        SimilarityIndex.load_shards(store, "shards", DIM)


# --- checkpoints ----------------------------------------------------------------------------------------------------

CHECKPOINTED = {"exact_below": 200, "expansion_search": 500, "build_threads": SINGLE_THREADED_BUILD}


def answers(index: SimilarityIndex, queries: np.ndarray) -> list[list[Match]]:
    return [index.query(query, 10) for query in queries]


def never_built(index: SimilarityIndex, *args: object) -> None:
    raise AssertionError("the graph was built again instead of coming from the checkpoint")


def test_a_checkpoint_restores_the_graph_without_building_it(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(12)
    rows = unit_rows(rng, 600)
    index = filled(rows, **CHECKPOINTED)
    index.upsert("video-000001", rows[1], phash=0xABC)
    index.remove("video-000002")
    manifest = index.save_checkpoint(store, "shards")
    queries = unit_rows(rng, 20)
    monkeypatch.setattr(SimilarityIndex, "_build_graph", never_built)

    loaded = SimilarityIndex.load_shards(store, "shards", DIM, cache_dir=tmp_path / "cache", **CHECKPOINTED)

    assert manifest is not None and manifest.startswith("shards/checkpoints/") and manifest.endswith(".json")
    assert not loaded.exact and len(loaded) == 599 and "video-000002" not in loaded, "the removal is kept too"
    assert answers(loaded, queries) == answers(index, queries)
    assert loaded.phash("video-000001") == 0xABC
    np.testing.assert_array_equal(loaded.vector("video-000599"), index.vector("video-000599"))
    assert loaded.save_shard(store, "shards") is None, "nothing new since the checkpoint"


def test_an_index_below_its_threshold_has_no_graph_to_checkpoint(store: LocalObjectStore) -> None:
    index = filled(unit_rows(np.random.default_rng(13), 50))
    assert index.save_checkpoint(store, "shards") is None
    assert list(store.list("shards/checkpoints/")) == []
    assert len(SimilarityIndex.load_shards(store, "shards", DIM)) == 50, "the shard was written all the same"


def test_shards_written_after_a_checkpoint_are_replayed_on_top_of_it(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(14)
    rows, later = unit_rows(rng, 400), unit_rows(rng, 30)
    index = filled(rows, **CHECKPOINTED)
    index.save_checkpoint(store, "shards")
    index.upsert_many(ids_for(30, start=390), later)  # ten replaced, twenty new
    index.save_shard(store, "shards")
    monkeypatch.setattr(SimilarityIndex, "_build_graph", never_built)

    loaded = SimilarityIndex.load_shards(store, "shards", DIM, cache_dir=tmp_path / "cache", **CHECKPOINTED)

    assert len(loaded) == 420
    for video_id, row in zip(ids_for(30, start=390), later, strict=True):
        np.testing.assert_allclose(loaded.vector(video_id), index.vector(video_id), rtol=1e-6)
        assert loaded.query(row, 1)[0].video_id == video_id, "the replayed vectors are in the graph"
    assert loaded.query(rows[395], 1)[0].video_id != "video-000395", "its old vector is gone from the graph"


def test_a_loaded_index_takes_upserts_and_removals_into_its_graph(store: LocalObjectStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    rows = unit_rows(rng, 400)
    filled(rows, **CHECKPOINTED).save_checkpoint(store, "shards")
    loaded = SimilarityIndex.load_shards(store, "shards", DIM, cache_dir=tmp_path / "cache", **CHECKPOINTED)
    newcomers = unit_rows(rng, 5)

    loaded.upsert_many(ids_for(5, start=1000), newcomers)
    loaded.remove("video-000007")

    assert not loaded.exact and len(loaded) == 404
    for video_id, row in zip(ids_for(5, start=1000), newcomers, strict=True):
        assert loaded.query(row, 1)[0].video_id == video_id
    assert "video-000007" not in [match.video_id for match in loaded.query(rows[7], 5)]
    assert loaded.query(rows[8], 1)[0].video_id == "video-000008"


def test_save_shard_checkpoints_every_so_many_changes(store: LocalObjectStore) -> None:
    rng = np.random.default_rng(16)
    rows = unit_rows(rng, 500)
    index = SimilarityIndex(DIM, checkpoint_every=300, **CHECKPOINTED)

    index.upsert_many(ids_for(250), rows[:250])
    index.save_shard(store, "shards")
    assert list(store.list("shards/checkpoints/")) == [], "250 changes are not yet 300"
    index.upsert_many(ids_for(250, start=250), rows[250:])
    index.save_shard(store, "shards")
    first = [info.key for info in store.list("shards/checkpoints/") if info.key.endswith(".json")]
    index.upsert_many(ids_for(250), rows[:250])  # redelivered: no change, no checkpoint
    index.save_shard(store, "shards")

    assert len(first) == 1
    assert [info.key for info in store.list("shards/checkpoints/") if info.key.endswith(".json")] == first


def test_a_checkpoint_that_cannot_be_saved_does_not_fail_the_shard(
    store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(21)
    index = SimilarityIndex(DIM, checkpoint_every=100, **CHECKPOINTED)
    index.upsert_many(ids_for(300), unit_rows(rng, 300))
    real_put = store.put

    def full_disk(key: str, *args: object, **kwargs: object) -> object:
        if "/checkpoints/" in key:
            raise OSError(28, "No space left on device")
        return real_put(key, *args, **kwargs)

    monkeypatch.setattr(store, "put", full_disk)
    assert index.save_shard(store, "shards") is not None
    assert "No space left" in caplog.records[-1].error
    monkeypatch.setattr(store, "put", real_put)
    index.upsert("one-more", unit_rows(rng, 1)[0])
    index.save_shard(store, "shards")

    assert len([info for info in store.list("shards/checkpoints/") if info.key.endswith(".json")]) == 1
    assert len(list(store.list("shards/checkpoints/"))) == 4, "nothing left of the checkpoint that failed"
    assert len(SimilarityIndex.load_shards(store, "shards", DIM, **CHECKPOINTED)) == 301


def test_only_the_two_newest_checkpoints_are_kept(store: LocalObjectStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    index = filled(unit_rows(rng, 300), cache_dir=tmp_path / "cache", **CHECKPOINTED)
    manifests = []
    for number in range(3):
        index.upsert(f"extra-{number}", unit_rows(rng, 1)[0])
        manifests.append(index.save_checkpoint(store, "shards"))

    kept = sorted(info.key for info in store.list("shards/checkpoints/"))

    assert [key for key in kept if key.endswith(".json")] == manifests[1:]
    assert len(kept) == 2 * 4, "a manifest and three files each"
    assert len(list((tmp_path / "cache").iterdir())) == 3, "the cache holds the newest checkpoint's files"


def damage(store: LocalObjectStore, key: str) -> None:
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0xFF
    store.put(key, bytes(data), content_type="application/octet-stream")


def test_a_damaged_checkpoint_falls_back_to_the_one_before_then_to_the_shards(
    store: LocalObjectStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(18)
    rows = unit_rows(rng, 400)
    index = filled(rows, **CHECKPOINTED)
    older = index.save_checkpoint(store, "shards")
    index.upsert("late", unit_rows(rng, 1)[0])
    newer = index.save_checkpoint(store, "shards")
    assert older and newer
    damage(store, newer.replace(".json", "/graph.usearch"))
    queries = unit_rows(rng, 10)

    from_older = SimilarityIndex.load_shards(store, "shards", DIM, cache_dir=tmp_path / "a", **CHECKPOINTED)
    damage(store, older.replace(".json", "/vectors.npy"))
    from_shards = SimilarityIndex.load_shards(store, "shards", DIM, cache_dir=tmp_path / "b", **CHECKPOINTED)

    for loaded in (from_older, from_shards):
        assert len(loaded) == 401 and "late" in loaded, "the shard written after the older checkpoint is replayed"
        for found, expected in zip(answers(loaded, queries), answers(index, queries), strict=True):
            assert [match.video_id for match in found] == [match.video_id for match in expected]
            assert [match.score for match in found] == pytest.approx([match.score for match in expected], abs=1e-6)
    unusable = [record for record in caplog.records if record.getMessage() == "index checkpoint unusable"]
    assert [record.checkpoint for record in unusable] == [newer, newer, older]
    assert all("sha256" in record.error for record in unusable)


def test_a_damaged_file_in_the_local_cache_is_fetched_again(store: LocalObjectStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    rows = unit_rows(rng, 300)
    cache = tmp_path / "cache"
    filled(rows, cache_dir=cache, **CHECKPOINTED).save_checkpoint(store, "shards")
    (graph_file,) = cache.glob("*-graph.usearch")
    graph_file.write_bytes(b"not a graph")

    loaded = SimilarityIndex.load_shards(store, "shards", DIM, cache_dir=cache, **CHECKPOINTED)

    assert not loaded.exact and loaded.query(rows[3], 1)[0].video_id == "video-000003"
    assert graph_file.read_bytes() != b"not a graph"


def test_a_checkpoint_of_another_dimension_is_not_used(store: LocalObjectStore, caplog: pytest.LogCaptureFixture):
    other = filled(unit_rows(np.random.default_rng(20), 300, dim=8), **CHECKPOINTED)
    other.save_checkpoint(store, "shards")
    with pytest.raises(InvalidInput, match=r"expected \(300, 64\)"):
        SimilarityIndex.load_shards(store, "shards", DIM)
    assert "dimension 8, not 64" in caplog.records[0].error


# --- refusals -------------------------------------------------------------------------------------------------------


def test_a_vector_of_the_wrong_dimension_is_refused_clearly() -> None:
    index = SimilarityIndex(DIM)
    with pytest.raises(InvalidInput, match="expected a vector of 64 values, got an array of shape \\(63,\\)"):
        index.upsert("a", np.ones(63))
    with pytest.raises(InvalidInput, match="expected a vector of 64 values"):
        index.query(np.ones((2, DIM)), 5)
    with pytest.raises(InvalidInput, match="expected 2 vectors of 64 values"):
        index.upsert_many(["a", "b"], np.ones((3, DIM)))
    assert len(index) == 0


@pytest.mark.parametrize("vector", [np.zeros(4), [1.0, np.nan, 0.0, 0.0], ["a", "b", "c", "d"]])
def test_vectors_without_a_direction_are_refused(vector: object) -> None:
    with pytest.raises(InvalidInput):
        SimilarityIndex(4).upsert("a", vector)


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_k_must_be_between_1_and_1000(k: int) -> None:
    index = SimilarityIndex(2)
    index.upsert("a", [1, 0])
    with pytest.raises(InvalidInput, match="k must be between 1 and 1000"):
        index.query([1, 0], k)
    with pytest.raises(InvalidInput):
        index.query_id("a", k)


def test_unknown_video_ids_are_not_found() -> None:
    index = SimilarityIndex(2)
    with pytest.raises(NotFound, match="no embedding for video 'missing'"):
        index.query_id("missing", 5)
    for lookup in (index.near_duplicates, index.vector, index.phash):
        with pytest.raises(NotFound):
            lookup("missing")


def test_a_failed_batch_changes_nothing() -> None:
    index = SimilarityIndex(2)
    with pytest.raises(InvalidInput):
        index.upsert_many(["a", "b"], [[1, 0], [0, 1]], [1, -5])
    with pytest.raises(InvalidInput):
        index.upsert_many(["a", ""], [[1, 0], [0, 1]])
    assert len(index) == 0


# --- threads --------------------------------------------------------------------------------------------------------


def test_concurrent_upserts_and_queries_across_the_switch_are_consistent() -> None:
    rng = np.random.default_rng(11)
    rows = unit_rows(rng, 2_400)
    ids = ids_for(2_400)
    index = SimilarityIndex(DIM, exact_below=1_000, build_threads=SINGLE_THREADED_BUILD)
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def write(part: int) -> None:
        # Each writer owns a quarter of the ids and also rewrites its neighbour's, as redelivered events would.
        mine = slice(part * 600, (part + 1) * 600)
        theirs = slice(((part + 1) % 4) * 600, ((part + 1) % 4) * 600 + 100)
        for start in range(0, 600, 50):
            index.upsert_many(ids[mine][start : start + 50], rows[mine][start : start + 50])
            index.upsert_many(ids[theirs], rows[theirs])

    def query(first: int) -> None:
        number = first
        while writing.is_set():
            index.query(rows[number % 2_400], 10)
            if ids[number % 600] in index:
                index.query_id(ids[number % 600], 5)
            number += 7

    def guarded(target: Callable[..., None], *args: int) -> None:
        try:
            target(*args)
        except BaseException as error:  # collected, so the test fails on any thread's error
            errors.append(error)

    readers = [threading.Thread(target=guarded, args=(query, first)) for first in range(3)]
    writers = [threading.Thread(target=guarded, args=(write, part)) for part in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    writing.clear()
    for thread in readers:
        thread.join()

    assert errors == []
    assert len(index) == 2_400 and not index.exact
    for video_id, row in zip(ids, rows, strict=True):
        assert index.query(row, 1)[0].video_id == video_id
