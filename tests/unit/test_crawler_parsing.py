"""The crawler reads YouTube's real formats: Atom feeds (with their quirks), ISO 8601 durations, quota days."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tubelens.crawler.crawler import duration_seconds, uploads_playlist
from tubelens.crawler.quota import QuotaBudget, QuotaExhausted
from tubelens.crawler.settings import parse_slot
from tubelens.crawler.state import CrawlerState
from tubelens.crawler.youtube import parse_feed, parse_time
from tubelens.errors import InvalidInput

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "youtube-rss"


def test_real_feeds_parse_into_fifteen_entries_with_uc_channel_ids() -> None:
    feeds = sorted(REFERENCE.glob("*.xml"))
    assert len(feeds) == 3, f"the captured feeds are expected in {REFERENCE} (shared/ beside the checkout)"
    for feed in feeds:
        channel_id = "UC" + feed.stem.rsplit("_UC", 1)[1]
        entries = parse_feed(feed.read_bytes(), channel_id)
        assert len(entries) == 15
        assert all(len(e.video_id) == 11 for e in entries)
        # The feed-level channelId lacks the UC prefix in some feeds; entries carry the real id.
        assert {e.channel_id for e in entries} == {channel_id}
        assert all(e.published_at.tzinfo is not None for e in entries)


def test_a_feed_that_is_not_xml_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="not XML"):
        parse_feed(b"<html><body>oops", "UCx")


@pytest.mark.parametrize(
    ("iso", "seconds"), [("PT4M13S", 253), ("PT1H2M3S", 3723), ("PT45S", 45), ("P1DT1S", 86401), ("", 0)]
)
def test_iso_8601_durations(iso: str, seconds: int) -> None:
    assert duration_seconds(iso) == seconds


def test_youtube_timestamps_with_z_or_offset() -> None:
    assert parse_time("2019-03-21T20:37:49.000Z") == datetime(2019, 3, 21, 20, 37, 49, tzinfo=UTC)
    assert parse_time("2025-04-16T17:50:36+00:00").year == 2025


def test_refresh_slots_and_uploads_playlist() -> None:
    assert [parse_slot(s) for s in ("1h", "6h", "24h", "7d", "30m")] == [3600, 21600, 86400, 604800, 1800]
    with pytest.raises(ValueError, match="not a positive number"):
        parse_slot("soon")
    assert uploads_playlist("UC_x5XG1OV2P6uZZ5FSM9Ttw") == "UU_x5XG1OV2P6uZZ5FSM9Ttw"


def test_quota_is_counted_per_pacific_day_survives_a_restart_and_refuses_before_overspending(
    tmp_path: Path,
) -> None:
    now = [datetime(2026, 11, 22, 7, 59, tzinfo=UTC).timestamp()]  # 23:59 the day before, in Pacific time
    budget = QuotaBudget(CrawlerState(tmp_path / "s.sqlite"), per_day=250, reserve=50, clock=lambda: now[0])
    budget.spend("search.list")
    budget.spend("videos.list")
    assert budget.remaining() == 99
    with pytest.raises(QuotaExhausted, match="search.list costs 100 units; 99 left of 200"):
        budget.spend("search.list")
    restarted = QuotaBudget(CrawlerState(tmp_path / "s.sqlite"), per_day=250, reserve=50, clock=lambda: now[0])
    assert restarted.remaining() == 99
    now[0] += 120  # past Pacific midnight: a new day's budget
    assert restarted.remaining() == 200
