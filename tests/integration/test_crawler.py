"""The crawler against the local YouTube stand-in: discovery, exact quota accounting, restarts, refreshes, faults."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.fakeyoutubekit import KEY, make_catalogue
from tubelens import events
from tubelens.bus.memory import MemoryBus
from tubelens.crawler.crawler import Crawler
from tubelens.crawler.main import build_crawler
from tubelens.crawler.settings import CrawlerServiceSettings, CrawlerSettings
from tubelens.devtools.fakeyoutube import FakeYouTube, ServerFaults


@pytest.fixture
def youtube():
    with FakeYouTube(make_catalogue(channels=3, videos_per_channel=40), tick=False) as fake:
        yield fake


class Harness:
    """A crawler wired to the stand-in, an in-process bus and its own state file; `restart()` builds a new one."""

    def __init__(self, youtube: FakeYouTube, state: Path, **overrides) -> None:
        self.youtube, self.state, self.overrides = youtube, state, overrides
        self.bus = MemoryBus()
        self.crawler: Crawler = self._build()

    def _build(self) -> Crawler:
        crawler_settings = CrawlerSettings(
            api_key=KEY,
            api_base=self.youtube.api_base,
            rss_base=self.youtube.feed_url,
            media_url_template=self.youtube.media_url_template,
            channels=[c.id for c in self.youtube.catalogue.channels],
            state_path=self.state,
            backoff_initial_s=0.01,
            backoff_max_s=0.05,
            **self.overrides,
        )
        settings = CrawlerServiceSettings(crawler=crawler_settings, bus="memory", objects="local")
        crawler, _state = build_crawler(settings, self.bus.producer(), clock=lambda: self.youtube.now().timestamp())
        return crawler

    def restart(self) -> None:
        self.crawler.state.close()
        self.crawler = self._build()

    def discovered(self) -> list:
        return [events.decode(m.value).video_discovered for m in self.bus.broker.read_all(events.VIDEOS_DISCOVERED)]

    def snapshots(self) -> list:
        return [events.decode(m.value).stats_snapshot for m in self.bus.broker.read_all(events.VIDEOS_STATS)]

    def units_charged_by_youtube(self) -> int:
        return self.youtube.stats()["units"].get(KEY, 0)


def test_a_backfill_announces_every_visible_upload_once_with_its_metadata(youtube: FakeYouTube, tmp_path: Path) -> None:
    harness = Harness(youtube, tmp_path / "state.sqlite")
    report = harness.crawler.run_once()
    assert not report.errors
    visible = {v.id: v for v in youtube.catalogue.visible(youtube.now())}
    announced = harness.discovered()
    assert Counter(v.video_id for v in announced) == Counter(visible.keys())
    for video in announced:
        truth = visible[video.video_id]
        assert video.channel_id == truth.channel_id and video.title == truth.title
        assert video.category_id == truth.category_id
        assert {t.name for t in video.thumbnails} >= {"default", "medium", "high"}
        assert video.media_url.endswith(f"/media/{video.video_id}.mp4")
    discovery = [s for s in harness.snapshots() if s.schedule_slot == "discovery"]
    assert len(discovery) == len(visible)
    assert all(s.channel_subscriber_count > 0 for s in discovery)


def test_quota_accounting_matches_what_youtube_charged_exactly(youtube: FakeYouTube, tmp_path: Path) -> None:
    harness = Harness(youtube, tmp_path / "state.sqlite", search_queries=["cars"])
    harness.crawler.run_once()
    youtube.advance(2 * 3600)
    harness.crawler.run_once()
    charged = harness.units_charged_by_youtube()
    assert charged >= 200, "two cycles with one search each cost at least 200 units"
    assert harness.crawler.client.quota.used() == charged


def test_a_restart_announces_nothing_again_and_continues_the_schedule(youtube: FakeYouTube, tmp_path: Path) -> None:
    harness = Harness(youtube, tmp_path / "state.sqlite")
    harness.crawler.run_once()
    first = len(harness.discovered())
    harness.restart()
    harness.crawler.run_once()
    assert len(harness.discovered()) == first
    assert harness.crawler.client.quota.used() == harness.units_charged_by_youtube(), "quota survives the restart"


def test_reannounce_brings_back_what_a_lost_broker_had_and_only_since_the_date(
    youtube: FakeYouTube, tmp_path: Path
) -> None:
    harness = Harness(youtube, tmp_path / "state.sqlite")
    harness.crawler.run_once()
    first_batch = {v.video_id for v in harness.discovered()}
    first_ids = {events.decode(m.value).event_id for m in harness.bus.broker.read_all(events.VIDEOS_DISCOVERED)}
    youtube.advance(3 * 86400)
    cut = youtube.now().timestamp()
    harness.crawler.run_once()
    later_batch = {v.video_id for v in harness.discovered()} - first_batch
    assert later_batch, "the catalogue uploads during those three days"

    harness.bus = MemoryBus()  # the broker lost everything; the crawler's seen-set did not
    harness.restart()
    harness.crawler.run_once()
    assert harness.discovered() == [], "the seen-set alone never announces a video twice"

    assert harness.crawler.reannounce(since=cut) == len(later_batch)
    assert {v.video_id for v in harness.discovered()} == later_batch, "only what was first announced since the date"
    assert harness.crawler.reannounce(since=0) == len(first_batch | later_batch)
    again = harness.discovered()
    assert Counter(v.video_id for v in again) == Counter(
        {**dict.fromkeys(first_batch, 1), **dict.fromkeys(later_batch, 2)}
    )
    assert all(v.title and v.channel_id for v in again), "announced with their metadata, as at discovery"
    new_ids = {events.decode(m.value).event_id for m in harness.bus.broker.read_all(events.VIDEOS_DISCOVERED)}
    assert new_ids.isdisjoint(first_ids), "ids of their own: consumers that remember the first ones do not skip them"
    reannounce_stats = [s for s in harness.snapshots() if s.schedule_slot == "reannounce"]
    assert len(reannounce_stats) == len(again) and all(s.channel_subscriber_count > 0 for s in reannounce_stats)
    assert harness.crawler.client.quota.used() == harness.units_charged_by_youtube()


def test_new_uploads_appear_over_time_and_counters_are_refreshed_in_their_slots(
    youtube: FakeYouTube, tmp_path: Path
) -> None:
    harness = Harness(youtube, tmp_path / "state.sqlite", refresh_slots=["1h", "6h", "24h"])
    harness.crawler.run_once()
    before = {v.video_id for v in harness.discovered()}
    for _ in range(4 * 24 * 2):  # four days, a cycle every 30 minutes
        youtube.advance(1800)
        harness.crawler.run_once()
    after = {v.video_id for v in harness.discovered()}
    expected_new = {v.id for v in youtube.catalogue.visible(youtube.now())} - before
    assert expected_new, "the catalogue schedules uploads after its start"
    assert after - before == expected_new
    slot_seconds = {"1h": 3600, "6h": 21600, "24h": 86400}
    for video_id in expected_new:
        age_now = (youtube.now() - youtube.catalogue.video(video_id).published_at).total_seconds()
        observed = [s for s in harness.snapshots() if s.video_id == video_id]
        due = ["discovery"] + [slot for slot, seconds in slot_seconds.items() if seconds <= age_now]
        assert sorted(s.schedule_slot for s in observed) == sorted(due), "observed once in each slot that came due"
        for snapshot in observed[1:]:
            seconds = slot_seconds[snapshot.schedule_slot]
            assert seconds <= snapshot.age_seconds < seconds + 1800, "observed within one cycle of its slot"
    views: dict[str, list[int]] = {}
    for snapshot in harness.snapshots():
        views.setdefault(snapshot.video_id, []).append(snapshot.view_count)
    assert all(seq == sorted(seq) for seq in views.values()), "views never go down"


def test_429_and_5xx_are_retried_with_backoff_and_paid_for(youtube: FakeYouTube, tmp_path: Path) -> None:
    youtube.set_faults(ServerFaults(rate_limits=2, server_errors=2))
    harness = Harness(youtube, tmp_path / "state.sqlite")
    report = harness.crawler.run_once()
    assert not report.errors
    assert len(harness.discovered()) == len(youtube.catalogue.visible(youtube.now()))
    assert {k: n for k, n in youtube.stats()["faults"].items() if n} == {"rate_limited": 2, "server_error": 2}
    assert harness.crawler.client.quota.used() == harness.units_charged_by_youtube()


def test_a_dependency_that_keeps_failing_ends_in_a_clear_error_and_rss_still_runs(
    youtube: FakeYouTube, tmp_path: Path
) -> None:
    youtube.set_faults(ServerFaults(server_error_rate=1.0))
    harness = Harness(youtube, tmp_path / "state.sqlite", max_attempts=3)
    report = harness.crawler.run_once()
    assert any("kept failing after 3 attempts" in error for error in report.errors)
    assert youtube.stats()["requests"].get("rss", 0) == 3, "feeds need no quota and were read"


def test_quota_exceeded_from_youtube_stops_api_calls_for_the_day(youtube: FakeYouTube, tmp_path: Path) -> None:
    youtube.set_faults(ServerFaults(quota_exceeded=True))
    harness = Harness(youtube, tmp_path / "state.sqlite")
    report = harness.crawler.run_once()
    assert report.quota_exhausted
    assert harness.crawler.client.quota.remaining() == 0
    calls = sum(n for endpoint, n in youtube.stats()["requests"].items() if endpoint != "rss")
    harness.crawler.run_once()
    assert sum(n for endpoint, n in youtube.stats()["requests"].items() if endpoint != "rss") == calls


def test_the_crawler_stops_before_its_own_budget_is_spent(youtube: FakeYouTube, tmp_path: Path) -> None:
    harness = Harness(youtube, tmp_path / "state.sqlite", quota_per_day=150, search_queries=["cars", "music"])
    report = harness.crawler.run_once()
    assert report.quota_exhausted
    assert harness.units_charged_by_youtube() <= 150
    assert harness.crawler.client.quota.used() == harness.units_charged_by_youtube()
