"""YouTube's display strings, as scraped catalogues hold them: counts ("17.4M subscribers", "1,234 views",
"No views") and dates ("6 years ago", "Streamed 2 days ago", "2021-03-04").

Every parser raises ValueError with the reason on anything it does not recognise: a catalogue row is skipped and
reported, never coerced.

Relative dates: YouTube floors the age it shows ("6 years ago" means 6 <= age < 7 years), so the midpoint of the
interval, 6.5 years before the scrape date, is the estimate with the least worst-case error; a month is 30.44 days
and a year 365.25 days (their mean lengths). A relative date means nothing without the date the page was read, so
parsing one without `as_of` is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_SUFFIXES = {"": 1, "K": 1_000, "M": 1_000_000, "B": 1_000_000_000}
_COUNT = re.compile(r"(?P<number>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(?P<suffix>[KMB]?)", re.IGNORECASE)
_COUNT_WORDS = ("views", "view", "subscribers", "subscriber", "likes", "like", "comments", "comment", "watching")
_NONE_WORDS = {"no", "none"}

_UNIT_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400,
    "week": 7 * 86_400,
    "month": 30.44 * 86_400,
    "year": 365.25 * 86_400,
}
_RELATIVE = re.compile(
    r"(?:(?:streamed|premiered|published)\s+(?:live\s+)?(?:on\s+)?)?(?P<n>\d+)\s+(?P<unit>second|minute|hour|day|week|"
    r"month|year)s?\s+ago",
    re.IGNORECASE,
)
_PREFIX = re.compile(r"^(?:streamed|premiered|published)\s+(?:live\s+)?(?:on\s+)?", re.IGNORECASE)


def parse_count(text: str) -> int:
    """'17.4M subscribers' -> 17_400_000, '1,234 views' -> 1234, '36M' -> 36_000_000, 'No views' -> 0.

    A suffixed figure is as precise as YouTube rounded it (3 significant digits)."""
    words = text.strip().split()
    while words and words[-1].lower() in _COUNT_WORDS:
        words.pop()
    body = " ".join(words)
    if not body:
        raise ValueError(f"{text!r} holds no count")
    if body.lower() in _NONE_WORDS:
        return 0
    match = _COUNT.fullmatch(body)
    if not match:
        raise ValueError(f"{text!r} is not a count (expected e.g. '1,234', '36M views', '17.4M subscribers')")
    number, suffix = match["number"].replace(",", ""), match["suffix"].upper()
    if "." in number and not suffix:
        raise ValueError(f"{text!r} is not a whole count")
    return round(float(number) * _SUFFIXES[suffix])


def parse_date(text: str, *, as_of: datetime | None) -> datetime:
    """An aware UTC datetime from an ISO date or datetime, or from a relative one ('3 weeks ago') given `as_of`."""
    cleaned = text.strip()
    relative = _RELATIVE.fullmatch(cleaned)
    if relative:
        if as_of is None:
            raise ValueError(f"{text!r} is relative: pass the date the catalogue was read (--as-of)")
        n, unit = int(relative["n"]), relative["unit"].lower()
        return as_of - timedelta(seconds=(n + 0.5) * _UNIT_SECONDS[unit])
    return parse_iso(_PREFIX.sub("", cleaned))


def parse_iso(text: str) -> datetime:
    """'2022-02-01' (midnight UTC), '2019-03-21T20:37:49Z' or with an offset; a naive datetime is read as UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO date nor 'N units ago'") from None
    if isinstance(parsed, date) and not isinstance(parsed, datetime):  # pragma: no cover - fromisoformat gives datetime
        parsed = datetime(parsed.year, parsed.month, parsed.day)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_duration(text: str) -> int:
    """'12:34' or '1:02:03' (as YouTube shows it), 'PT1H2M3S', or plain seconds -> seconds."""
    cleaned = text.strip()
    if re.fullmatch(r"\d+", cleaned):
        return int(cleaned)
    if re.fullmatch(r"\d+(?::[0-5]\d){1,2}", cleaned):
        seconds = 0
        for part in cleaned.split(":"):
            seconds = seconds * 60 + int(part)
        return seconds
    match = re.fullmatch(r"P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", cleaned)
    if match and cleaned not in ("P", "PT"):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    raise ValueError(f"{text!r} is not a duration (expected '12:34', '1:02:03', 'PT1H2M3S' or seconds)")
