"""ImageNet concepts: the top 5 per image, and a video's concepts aggregated over its frames."""

from __future__ import annotations

import numpy as np
import pytest

from tubelens.embedding.concepts import aggregate_concepts, labels, top_concepts
from tubelens.v1 import events_pb2

TABBY, EGYPTIAN, ESPRESSO, CUP, STAGE = 281, 285, 967, 968, 819


def concept(class_index: int, score: float) -> events_pb2.Concept:
    return events_pb2.Concept(class_index=class_index, label=labels()[class_index], score=score)


def test_labels_follow_the_standard_imagenet_order() -> None:
    names = labels()
    assert len(names) == 1000
    assert (names[0], names[TABBY], names[ESPRESSO], names[STAGE], names[999]) == (
        "tench",
        "tabby cat",
        "espresso",
        "stage",
        "toilet paper",
    )


def test_top_concepts_are_the_five_most_likely_best_first() -> None:
    probabilities = np.full((2, 1000), 1e-4, dtype=np.float32)
    probabilities[0, [ESPRESSO, CUP, 3, 10, 20, 30]] = [0.6, 0.2, 0.05, 0.04, 0.03, 0.02]
    probabilities[1, [TABBY, EGYPTIAN]] = [0.5, 0.4]

    first, second = top_concepts(probabilities)

    assert [(c.class_index, c.label) for c in first] == [
        (ESPRESSO, "espresso"),
        (CUP, "tea cup"),
        (3, "tiger shark"),
        (10, "brambling"),
        (20, "American dipper"),
    ]
    assert [c.score for c in first] == np.float32([0.6, 0.2, 0.05, 0.04, 0.03]).tolist()
    # Ties among the rest go to the lower class index.
    assert [c.class_index for c in second] == [TABBY, EGYPTIAN, 0, 1, 2]
    assert all(c.count == 0 for c in first + second)


def test_aggregation_counts_frames_and_averages_confidence_where_seen() -> None:
    frames = [
        [concept(STAGE, 0.8), concept(TABBY, 0.1)],
        [concept(STAGE, 0.6), concept(ESPRESSO, 0.3)],
        [concept(ESPRESSO, 0.5), concept(STAGE, 0.4)],
        [concept(TABBY, 0.5)],
    ]

    aggregated = aggregate_concepts(frames)

    assert [(c.class_index, c.label, c.count) for c in aggregated] == [
        (STAGE, "stage", 3),
        (ESPRESSO, "espresso", 2),
        (TABBY, "tabby cat", 2),
    ]
    assert [c.score for c in aggregated] == pytest.approx([0.6, 0.4, 0.3])


def test_equal_counts_rank_by_confidence_then_class_index_and_limit_keeps_the_first() -> None:
    frames = [[concept(CUP, 0.2), concept(ESPRESSO, 0.2), concept(TABBY, 0.9)]]

    assert [c.class_index for c in aggregate_concepts(frames)] == [TABBY, ESPRESSO, CUP]
    assert [c.class_index for c in aggregate_concepts(frames, limit=2)] == [TABBY, ESPRESSO]


def test_no_frames_aggregate_to_no_concepts() -> None:
    assert aggregate_concepts([]) == []
