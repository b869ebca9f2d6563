"""The popularity labels every part of the system agrees on (seed 000): seven log10 view buckets."""

from __future__ import annotations

from bisect import bisect_right

# <1e3, <1e4, <1e5, <1e6, <1e7, <1e8, >=1e8; lower bounds inclusive.
BUCKET_EDGES = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
BUCKET_NAMES = ("<1K", "1K-10K", "10K-100K", "100K-1M", "1M-10M", "10M-100M", ">=100M")


def view_bucket(views: int) -> int:
    """0..6 over BUCKET_EDGES, lower bounds inclusive: 999 -> 0, 1000 -> 1, 1e8 -> 6."""
    return bisect_right(BUCKET_EDGES, views)


# The genre labels are YouTube categories; their names as videoCategories.list?regionCode=US gives them:
# (id, title, assignable).
VIDEO_CATEGORIES = (
    ("1", "Film & Animation", True),
    ("2", "Autos & Vehicles", True),
    ("10", "Music", True),
    ("15", "Pets & Animals", True),
    ("17", "Sports", True),
    ("18", "Short Movies", False),
    ("19", "Travel & Events", True),
    ("20", "Gaming", True),
    ("21", "Videoblogging", False),
    ("22", "People & Blogs", True),
    ("23", "Comedy", True),
    ("24", "Entertainment", True),
    ("25", "News & Politics", True),
    ("26", "Howto & Style", True),
    ("27", "Education", True),
    ("28", "Science & Technology", True),
    ("29", "Nonprofits & Activism", True),
    ("30", "Movies", False),
    ("31", "Anime/Animation", False),
    ("32", "Action/Adventure", False),
    ("33", "Classics", False),
    ("34", "Comedy", False),
    ("35", "Documentary", False),
    ("36", "Drama", False),
    ("37", "Family", False),
    ("38", "Foreign", False),
    ("39", "Horror", False),
    ("40", "Sci-Fi/Fantasy", False),
    ("41", "Thriller", False),
    ("42", "Shorts", False),
    ("43", "Shows", False),
    ("44", "Trailers", False),
)


def category_name(category_id: str) -> str:
    """The category's title, or the id itself when YouTube lists no such category."""
    return _CATEGORY_NAMES.get(category_id, category_id)


_CATEGORY_NAMES = {category_id: title for category_id, title, _ in VIDEO_CATEGORIES}
