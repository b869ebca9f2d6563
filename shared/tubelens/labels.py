"""The popularity labels every part of the system agrees on (seed 000): seven log10 view buckets."""

from __future__ import annotations

from bisect import bisect_right

# <1e3, <1e4, <1e5, <1e6, <1e7, <1e8, >=1e8; lower bounds inclusive.
BUCKET_EDGES = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
BUCKET_NAMES = ("<1K", "1K-10K", "10K-100K", "100K-1M", "1M-10M", "10M-100M", ">=100M")


def view_bucket(views: int) -> int:
    """0..6 over BUCKET_EDGES, lower bounds inclusive: 999 -> 0, 1000 -> 1, 1e8 -> 6."""
    return bisect_right(BUCKET_EDGES, views)
