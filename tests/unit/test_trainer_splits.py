"""Splits that cannot leak: near-duplicate groups, and the random, held-out-channel and time splits over them."""

from __future__ import annotations

import numpy as np
import pytest

from tests.datasetkit import flip_bits, near_copy, unit_vectors
from tubelens.errors import InvalidInput
from tubelens.trainer.splits import (
    Fractions,
    channel_split,
    near_duplicate_groups,
    random_split,
    time_split,
)

SPLITS = ("train", "val", "test")
DAY_US = 86_400 * 10**6


def shares(split: np.ndarray) -> dict[str, float]:
    return {name: float((split == name).mean()) for name in SPLITS}


def groups_crossing(groups: np.ndarray, split: np.ndarray) -> list[int]:
    return sorted(g for g in set(groups.tolist()) if len(set(split[groups == g])) > 1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def planted(rng: np.random.Generator, count: int, copies: dict[int, int]) -> tuple[np.ndarray, list[int]]:
    """`count` random thumbnails; row `copy` of `copies` is a near-duplicate of row `original` by both measures."""
    vectors = unit_vectors(rng, count)
    phashes = [int(h) for h in rng.integers(1, 2**63, count)]
    for copy, original in copies.items():
        vectors[copy] = near_copy(vectors[original], rng, cosine=0.95)
        phashes[copy] = flip_bits(phashes[original], 4)
    return vectors, phashes


# near-duplicate groups


def test_the_pair_rule_needs_both_a_close_phash_and_a_close_embedding(rng: np.random.Generator) -> None:
    base = unit_vectors(rng, 1)[0]
    phash = 0x0123_4567_89AB_CDEF
    cases = {  # (cosine, phash of the second picture or 0 for unknown): near-duplicates?
        (0.95, flip_bits(phash, 10)): True,
        (0.95, flip_bits(phash, 11)): False,  # the hashes say different pictures
        (0.995, flip_bits(phash, 30)): False,  # even a very close embedding cannot overrule them
        (0.85, phash): False,  # same hash, but the embeddings disagree
        (0.98, 0): True,  # no hash: the embedding alone, with a stricter bound
        (0.95, 0): False,
    }
    for (cosine, other_hash), expected in cases.items():
        vectors = np.stack([base, near_copy(base, rng, cosine)])
        groups = near_duplicate_groups(vectors, [phash, other_hash])
        assert bool(groups[0] == groups[1]) is expected, (cosine, other_hash)


def test_groups_follow_chains_of_copies_and_do_not_depend_on_the_block_size(rng: np.random.Generator) -> None:
    vectors = unit_vectors(rng, 40)
    phashes = [0] * 40
    # 5 ~ 17 ~ 33: a copy of a copy; 33 is no near-duplicate of 5 directly.
    vectors[17] = near_copy(vectors[5], rng, cosine=0.975)
    vectors[33] = near_copy(vectors[17], rng, cosine=0.975)
    assert float(vectors[5] @ vectors[33]) < 0.97

    groups = near_duplicate_groups(vectors, phashes)
    for block_rows in (1, 3, 7, 64):
        assert np.array_equal(near_duplicate_groups(vectors, phashes, block_rows=block_rows), groups)

    assert groups[5] == groups[17] == groups[33]
    assert len(set(groups.tolist())) == 38


def test_unnormalized_embeddings_are_compared_by_cosine(rng: np.random.Generator) -> None:
    vectors, phashes = planted(rng, 10, {3: 7})
    groups = near_duplicate_groups(vectors * rng.uniform(0.1, 50, (10, 1)).astype(np.float32), phashes)
    assert groups[3] == groups[7] and len(set(groups.tolist())) == 9


# random split


def test_the_random_split_hits_the_fractions_and_is_seeded() -> None:
    groups = np.arange(1000)

    split = random_split(groups, seed=4)

    assert shares(split) == pytest.approx({"train": 0.70, "val": 0.15, "test": 0.15}, abs=0.005)
    assert np.array_equal(random_split(groups, seed=4), split)
    assert not np.array_equal(random_split(groups, seed=5), split)
    assert shares(random_split(groups, seed=4, fractions=Fractions(0.5, 0.25, 0.25)))["train"] == pytest.approx(0.5)


def test_the_random_split_keeps_near_duplicate_groups_whole(rng: np.random.Generator) -> None:
    vectors, phashes = planted(rng, 300, {i: i + 1 for i in range(0, 60, 2)} | {100: 200, 150: 200})
    groups = near_duplicate_groups(vectors, phashes)
    assert len(set(groups.tolist())) == 300 - 30 - 2

    for seed in range(10):
        assert groups_crossing(groups, random_split(groups, seed=seed)) == []


# held-out channels


def channels_of(sizes: list[int]) -> np.ndarray:
    return np.array([f"UC{index:02d}" for index, size in enumerate(sizes) for _ in range(size)], dtype=object)


def test_no_channel_sits_in_two_splits_and_test_holds_at_least_two(rng: np.random.Generator) -> None:
    channels = channels_of([int(n) for n in rng.integers(5, 60, 20)])
    groups = np.arange(len(channels))

    for seed in range(5):
        split = channel_split(channels, groups, seed=seed)
        owners = {c: set(split[channels == c]) for c in set(channels)}
        assert all(len(splits) == 1 for splits in owners.values())
        assert len({c for c, s in owners.items() if s == {"test"}}) >= 2
        assert shares(split) == pytest.approx({"train": 0.70, "val": 0.15, "test": 0.15}, abs=0.04)
    assert not np.array_equal(channel_split(channels, groups, seed=0), channel_split(channels, groups, seed=1))


@pytest.mark.parametrize(
    ("sizes", "channels_per_split"),
    [
        ([30], {"train": 1, "val": 0, "test": 0}),
        ([30, 30], {"train": 1, "val": 0, "test": 1}),
        ([30, 30, 30], {"train": 1, "val": 1, "test": 1}),
        ([10] * 6, {"train": 3, "val": 1, "test": 2}),
    ],
)
def test_few_channels_still_give_every_split_it_can(sizes: list[int], channels_per_split: dict[str, int]) -> None:
    channels = channels_of(sizes)

    split = channel_split(channels, np.arange(len(channels)), seed=0)

    assert {name: len(set(channels[split == name])) for name in SPLITS} == channels_per_split


def test_a_group_spanning_channels_goes_with_its_majority_channel(rng: np.random.Generator) -> None:
    channels = channels_of([20] * 10)
    # Rows 0, 1 (channel UC00) and 25 (channel UC01) are one thumbnail; UC00 holds the majority.
    vectors, phashes = planted(rng, len(channels), {1: 0, 25: 0})
    groups = near_duplicate_groups(vectors, phashes)

    for seed in range(20):
        split = channel_split(channels, groups, seed=seed)
        assert split[25] == split[0] == split[1] == split[channels == "UC00"][0]
        assert groups_crossing(groups, split) == []
        # Only the minority member left its channel's split.
        uc01 = np.flatnonzero(channels == "UC01")
        assert len(set(split[uc01[uc01 != 25]])) == 1


# time split


def test_the_time_split_tests_on_the_newest_and_trains_on_the_oldest(rng: np.random.Generator) -> None:
    published = rng.integers(0, 365, 500) * DAY_US + rng.integers(0, DAY_US, 500)
    groups = np.arange(500)

    split = time_split(published, groups)

    assert shares(split) == pytest.approx({"train": 0.70, "val": 0.15, "test": 0.15}, abs=0.005)
    assert published[split == "train"].max() < published[split == "val"].min()
    assert published[split == "val"].max() < published[split == "test"].min()


def test_uploads_at_the_same_moment_share_a_split() -> None:
    published = np.repeat(np.arange(10) * DAY_US, 10)  # ten uploads a day; any cut falls inside a day
    split = time_split(published, np.arange(100))

    for day in range(10):
        assert len(set(split[published == day * DAY_US])) == 1
    assert published[split == "train"].max() < published[split == "test"].min()


def test_an_old_original_follows_its_newest_copy_into_test(rng: np.random.Generator) -> None:
    count = 200
    published = np.arange(count) * DAY_US  # row i is i days old from the start
    vectors, phashes = planted(rng, count, {count - 1: 3})  # the newest upload re-uses the 4th oldest thumbnail
    groups = near_duplicate_groups(vectors, phashes)

    split = time_split(published, groups)

    assert split[count - 1] == split[3] == "test"
    assert groups_crossing(groups, split) == []
    # Test is strictly newer than train everywhere except the original that moved with its group.
    others = np.arange(count) != 3
    assert published[(split == "train") & others].max() < published[(split == "test") & others].min()
    assert published[3] < published[split == "train"].max()


def test_fractions_must_be_shares_of_one() -> None:
    with pytest.raises(InvalidInput):
        Fractions(0.8, 0.15, 0.15)
    with pytest.raises(InvalidInput):
        Fractions(1.1, -0.05, -0.05)
    assert Fractions().as_dict() == {"train": 0.70, "val": 0.15, "test": 0.15}
