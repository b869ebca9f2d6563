"""Concept word clouds as HTML: font size by weight, a fixed centre-out order, no randomness and no images.

Seed 002 found the same few concepts ("stage", "theater curtain") on top for popular and unpopular videos alike; a
cloud per group hides that unless words seen in both are told apart, so shared words are grey and only the
concepts one group has alone are in colour. Both clouds share one size scale, so that equal weights look equal.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from html import escape

MAX_WORDS = 40
SMALLEST_PX = 12.0
LARGEST_PX = 44.0
SHARED_COLOUR = "#8a8f98"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e")


def top_words(words: list[tuple[str, float]], limit: int = MAX_WORDS) -> list[tuple[str, float]]:
    """The `limit` heaviest concepts with a positive, finite weight (repeated labels summed), heaviest first, ties
    by label so the order never depends on the input's."""
    totals: dict[str, float] = {}
    for label, weight in words:
        if math.isfinite(weight) and weight > 0:
            totals[label] = totals.get(label, 0.0) + float(weight)
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:limit]


def centre_out(ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Heaviest in the middle, the next ones alternating right and left of it: the usual cloud silhouette."""
    placed: deque[tuple[str, float]] = deque()
    for rank, word in enumerate(ranked):
        if rank % 2:
            placed.appendleft(word)
        else:
            placed.append(word)
    return list(placed)


def font_px(weight: float, heaviest: float) -> float:
    """Area rather than height grows with weight (square root), so one dominant concept does not dwarf the rest."""
    share = math.sqrt(weight / heaviest) if heaviest > 0 else 0.0
    return round(SMALLEST_PX + (LARGEST_PX - SMALLEST_PX) * share, 1)


def colour(label: str, shared: bool) -> str:
    # crc32, not hash(): Python salts str hashes per process, and the page must come out the same on every run.
    return SHARED_COLOUR if shared else PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def cloud_html(words: list[tuple[str, float]], heaviest: float, shared: set[str]) -> str:
    """One cloud as a flex box of spans; `heaviest` is the weight drawn largest across every cloud on the page."""
    if not words:
        return '<p class="empty">No concepts were recorded for this group.</p>'
    spans = []
    for label, weight in centre_out(words):
        style = f"font-size:{font_px(weight, heaviest)}px;color:{colour(label, label in shared)}"
        tip = escape(f"{label}: {weight:g}{' (in both groups)' if label in shared else ''}")
        spans.append(f'<span class="word" style="{style}" title="{tip}">{escape(label.replace("_", " "))}</span>')
    return f'<div class="cloud">{"".join(spans)}</div>'


def clouds_html(popular: list[tuple[str, float]], unpopular: list[tuple[str, float]]) -> tuple[str, str]:
    """The popular and unpopular clouds, drawn on one scale, with the concepts both share in grey."""
    top_popular, top_unpopular = top_words(popular), top_words(unpopular)
    shared = {label for label, _ in top_popular} & {label for label, _ in top_unpopular}
    heaviest = max((weight for _, weight in top_popular + top_unpopular), default=0.0)
    return cloud_html(top_popular, heaviest, shared), cloud_html(top_unpopular, heaviest, shared)
