"""YouTube's display strings as scraped catalogues hold them: counts and (relative) dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tubelens.crawler.display import parse_count, parse_date, parse_duration

AS_OF = datetime(2022, 2, 1, tzinfo=UTC)
DAY = 86_400


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("17.4M subscribers", 17_400_000),
        ("36M views", 36_000_000),
        ("1,234 views", 1234),
        ("No views", 0),
        ("1 view", 1),
        ("2.5K", 2500),
        ("1B views", 1_000_000_000),
        ("987", 987),
    ],
)
def test_counts(text: str, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["", "views", "lots of views", "1.5 views", "12,34 views", "-3 views"])
def test_bad_counts_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_count(text)


@pytest.mark.parametrize(
    ("text", "age_days"),
    [
        ("6 years ago", 6.5 * 365.25),
        ("3 weeks ago", 3.5 * 7),
        ("Streamed 2 days ago", 2.5),
        ("1 day ago", 1.5),
        ("5 months ago", 5.5 * 30.44),
        ("Premiered 4 hours ago", 4.5 / 24),
    ],
)
def test_relative_dates_are_the_midpoint_of_youtubes_floor(text: str, age_days: float) -> None:
    assert parse_date(text, as_of=AS_OF) == AS_OF - timedelta(seconds=age_days * DAY)


def test_relative_dates_need_the_scrape_date() -> None:
    with pytest.raises(ValueError, match="--as-of"):
        parse_date("6 years ago", as_of=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-03-04", datetime(2021, 3, 4, tzinfo=UTC)),
        ("2019-03-21T20:37:49Z", datetime(2019, 3, 21, 20, 37, 49, tzinfo=UTC)),
        ("2019-03-21T22:37:49+02:00", datetime(2019, 3, 21, 20, 37, 49, tzinfo=UTC)),
    ],
)
def test_iso_dates(text: str, expected: datetime) -> None:
    assert parse_date(text, as_of=None) == expected


@pytest.mark.parametrize("text", ["yesterday", "6 eons ago", "2021-13-01"])
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date(text, as_of=AS_OF)


@pytest.mark.parametrize(("text", "seconds"), [("12:34", 754), ("1:02:03", 3723), ("PT1H2M3S", 3723), ("90", 90)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
