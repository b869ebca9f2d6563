"""Train / val / test splits that cannot leak: random, held-out channels and time, all by near-duplicate group.

A re-upload, a re-encoded copy or a lightly edited thumbnail would let a model score by remembering the training
picture, so near-duplicates are grouped first and every split places whole groups. Two thumbnails are
near-duplicates when their perceptual hashes differ in at most HAMMING_MAX bits and their embeddings have cosine
similarity of at least COSINE_MIN, or, when either pHash is unknown, a cosine of at least COSINE_MIN_WITHOUT_PHASH
(the embedding alone must be surer). Groups are the connected components of that relation, so a chain of copies
stays together too.

Each split function returns one of "train", "val", "test" per row, in row order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tubelens.errors import InvalidInput
from tubelens.images import NearDuplicatePolicy, hamming_distance
from tubelens.modelkit.schema import SPLITS

TRAIN, VAL, TEST = SPLITS
# What counts as the same picture is the embedding service's definition, so the index and the splits agree.
HAMMING_MAX = NearDuplicatePolicy.max_hamming
COSINE_MIN = NearDuplicatePolicy.min_cosine
COSINE_MIN_WITHOUT_PHASH = NearDuplicatePolicy.min_cosine_without_phash
# Rows of the similarity matrix computed at once: 1024 x 20k float32 is 80 MB.
BLOCK_ROWS = 1024
# Channel assignments tried per seed; the one closest to the target fractions wins.
CHANNEL_TRIES = 256
# Salts so that the random and channel splits of one seed shuffle independently.
_RANDOM_SALT, _CHANNEL_SALT = 1, 2


@dataclass(frozen=True)
class Fractions:
    """Target shares of rows in train, val and test."""

    train: float = 0.70
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        shares = (self.train, self.val, self.test)
        if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-9:
            raise InvalidInput(f"split fractions must be non-negative and sum to 1, got {shares}", field="fractions")

    def as_dict(self) -> dict[str, float]:
        return {TRAIN: self.train, VAL: self.val, TEST: self.test}

    def split_at(self, share: float) -> str:
        """The split of a unit whose rows sit around `share` of the way through an ordering."""
        if share < self.train:
            return TRAIN
        return VAL if share < self.train + self.val else TEST


DEFAULT_FRACTIONS = Fractions()


# near-duplicate groups


def near_duplicate_groups(
    embeddings: np.ndarray,
    phashes: Sequence[int],
    *,
    hamming_max: int = HAMMING_MAX,
    cosine_min: float = COSINE_MIN,
    cosine_min_without_phash: float = COSINE_MIN_WITHOUT_PHASH,
    block_rows: int = BLOCK_ROWS,
) -> np.ndarray:
    """A group label per row (int64); near-duplicates, directly or through a chain, share one. 0 pHash = unknown."""
    count = len(embeddings)
    if len(phashes) != count:
        raise InvalidInput(f"{count} embeddings but {len(phashes)} phashes", field="phashes")
    first, second = near_duplicate_pairs(
        embeddings,
        phashes,
        hamming_max=hamming_max,
        cosine_min=cosine_min,
        cosine_min_without_phash=cosine_min_without_phash,
        block_rows=block_rows,
    )
    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(count, count))
    # Labels are numbered in order of each component's first row: deterministic for a given row order.
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def near_duplicate_pairs(
    embeddings: np.ndarray,
    phashes: Sequence[int],
    *,
    hamming_max: int = HAMMING_MAX,
    cosine_min: float = COSINE_MIN,
    cosine_min_without_phash: float = COSINE_MIN_WITHOUT_PHASH,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Row index pairs (i < j) that are near-duplicates, found block by block over the upper triangle."""
    unit = _normalized(embeddings)
    # The looser cosine bound finds every candidate; the pHash rule then decides which bound applies.
    loosest = min(cosine_min, cosine_min_without_phash)
    first: list[int] = []
    second: list[int] = []
    for start in range(0, len(unit), block_rows):
        similarity = unit[start : start + block_rows] @ unit[start:].T
        rows, cols = np.nonzero(similarity >= loosest)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = start + row, start + col
            if j <= i:
                continue
            required = _cosine_required(phashes[i], phashes[j], hamming_max, cosine_min, cosine_min_without_phash)
            if similarity[row, col] >= required:
                first.append(i)
                second.append(j)
    return np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)


def _cosine_required(a: int, b: int, hamming_max: int, cosine_min: float, cosine_min_without_phash: float) -> float:
    """The cosine a pair needs; infinite when the hashes say the pictures differ."""
    if not a or not b:
        return cosine_min_without_phash
    return cosine_min if hamming_distance(a, b) <= hamming_max else np.inf


def _normalized(embeddings: np.ndarray) -> np.ndarray:
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise InvalidInput(f"embeddings must be [rows, dim], got shape {vectors.shape}", field="embeddings")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


# the three splits


def random_split(groups: np.ndarray, *, seed: int, fractions: Fractions = DEFAULT_FRACTIONS) -> np.ndarray:
    """Whole groups in a seeded random order, cut at the target fractions of rows."""
    labels, sizes = np.unique(groups, return_counts=True)
    order = np.random.default_rng([seed, _RANDOM_SALT]).permutation(len(labels))
    unit_split = _cut(sizes[order], keys=None, fractions=fractions)
    return _rows_of(groups, labels[order], unit_split)


def time_split(published_us: np.ndarray, groups: np.ndarray, *, fractions: Fractions = DEFAULT_FRACTIONS) -> np.ndarray:
    """Oldest rows train, newest test, by group: a group's newest member dates it, so a re-upload pulls its
    original forward with it. Groups of equal date share a split, so test is strictly newer than train."""
    published_us = np.asarray(published_us, dtype=np.int64)
    labels, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    newest = np.full(len(labels), np.iinfo(np.int64).min)
    np.maximum.at(newest, inverse, published_us)
    order = np.lexsort((labels, newest))
    unit_split = _cut(sizes[order], keys=newest[order], fractions=fractions)
    return _rows_of(groups, labels[order], unit_split)


def channel_split(
    channels: Sequence[str], groups: np.ndarray, *, seed: int, fractions: Fractions = DEFAULT_FRACTIONS
) -> np.ndarray:
    """Whole channels held out in val and test, so a model is scored on channels it never saw.

    With six channels or more, test holds at least two (one channel's quirks would decide the score) and val at
    least one; with three to five, one each; with two, one trains and one tests; one channel only trains. Among
    CHANNEL_TRIES seeded orders the assignment with row shares closest to `fractions` wins. A near-duplicate group
    that spans channels goes whole to its majority channel's split (ties: the lowest channel id), so only its
    minority members sit apart from the rest of their channel.
    """
    channels = np.asarray(channels, dtype=object)
    names, counts = np.unique(channels, return_counts=True)
    by_channel = dict(zip(names.tolist(), _assign_channels(counts, seed=seed, fractions=fractions), strict=True))
    split = np.array([by_channel[c] for c in channels], dtype="<U5")
    for members in _groups_spanning_channels(channels, groups):
        split[members] = by_channel[_majority(channels[members])]
    return split


def _assign_channels(counts: np.ndarray, *, seed: int, fractions: Fractions) -> list[str]:
    """A split per channel: the best of several seeded orders, each cut into test, val and train in turn."""
    n = len(counts)
    if n < 2:
        return [TRAIN] * n
    min_test = 2 if n >= 6 else 1
    min_val = 1 if n >= 3 else 0
    target = np.array([fractions.test, fractions.val]) * counts.sum()
    rng = np.random.default_rng([seed, _CHANNEL_SALT])
    best: tuple[float, list[str]] | None = None
    for _ in range(CHANNEL_TRIES):
        order = rng.permutation(n)
        cumulative = np.concatenate([[0], np.cumsum(counts[order])])
        tests = _closest_cut(cumulative, target[0], low=min_test, high=n - min_val - 1)
        vals = _closest_cut(cumulative[tests:] - cumulative[tests], target[1], low=min_val, high=n - tests - 1)
        error = abs(cumulative[tests] - target[0]) + abs(cumulative[tests + vals] - cumulative[tests] - target[1])
        if best is None or error < best[0]:
            assignment = [TRAIN] * n
            for position, channel in enumerate(order.tolist()):
                if position < tests:
                    assignment[channel] = TEST
                elif position < tests + vals:
                    assignment[channel] = VAL
            best = (error, assignment)
    assert best is not None
    return best[1]


def _closest_cut(cumulative: np.ndarray, target: float, *, low: int, high: int) -> int:
    """How many leading channels (between low and high) bring the row count closest to `target`."""
    candidates = np.arange(low, high + 1)
    return int(candidates[np.argmin(np.abs(cumulative[candidates] - target))])


def _groups_spanning_channels(channels: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(groups, kind="stable")
    boundaries = np.flatnonzero(np.diff(groups[order])) + 1
    return [members for members in np.split(order, boundaries) if len(set(channels[members])) > 1]


def _majority(channels: np.ndarray) -> str:
    tally = Counter(channels.tolist())
    return min(tally, key=lambda channel: (-tally[channel], channel))


def _cut(sizes: np.ndarray, *, keys: np.ndarray | None, fractions: Fractions) -> list[str]:
    """A split per unit in order, from the share of rows around its middle; units with equal keys form one block
    (they share a split), and with no keys every unit is its own block."""
    cumulative = np.concatenate([[0], np.cumsum(sizes)])
    splits: list[str] = []
    start = 0
    while start < len(sizes):
        end = start + 1
        while keys is not None and end < len(sizes) and keys[end] == keys[start]:
            end += 1
        middle = (cumulative[start] + cumulative[end]) / 2
        splits += [fractions.split_at(middle / cumulative[-1])] * (end - start)
        start = end
    return splits


def _rows_of(groups: np.ndarray, ordered_labels: np.ndarray, unit_split: list[str]) -> np.ndarray:
    by_label = dict(zip(ordered_labels.tolist(), unit_split, strict=True))
    return np.array([by_label[g] for g in np.asarray(groups).tolist()], dtype="<U5")
