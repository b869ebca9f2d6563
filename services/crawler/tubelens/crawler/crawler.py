"""One crawl cycle: discover (RSS, uploads backfill, search), announce new videos, refresh counters when due.

A video is announced once: its events are published and flushed, then it is recorded as seen together with its
refresh schedule. A crash between the two re-announces at most the videos in flight (at-least-once; consumers are
idempotent); a normal restart re-announces nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from tubelens import events
from tubelens.bus import Producer
from tubelens.crawler.quota import QuotaExhausted
from tubelens.crawler.settings import CrawlerSettings
from tubelens.crawler.state import CrawlerState
from tubelens.crawler.youtube import YouTubeClient, chunks, parse_time
from tubelens.errors import TubelensError
from tubelens.rpc import reason_of
from tubelens.v1 import events_pb2

log = logging.getLogger(__name__)
SERVICE = "crawler"
REFRESH_BATCH = 500  # due refreshes handled per cycle: 10 videos.list calls

DISCOVERED = Counter("tubelens_crawler_videos_discovered_total", "Videos announced", ["source"])
SNAPSHOTS = Counter("tubelens_crawler_stats_snapshots_total", "Stats snapshots published", ["slot"])
PHASE_FAILURES = Counter("tubelens_crawler_phase_failures_total", "Crawl phases that failed", ["phase", "error"])

SOURCE = events_pb2.DiscoverySource
_DURATION = re.compile(r"P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?")


@dataclass
class CycleReport:
    discovered: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0
    quota_exhausted: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    video_id: str
    source: int
    query: str = ""


def duration_seconds(iso: str) -> int:
    """'PT1H2M3S' -> 3723; YouTube's contentDetails.duration."""
    match = _DURATION.fullmatch(iso or "")
    if not match:
        return 0
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class Crawler:
    def __init__(
        self,
        settings: CrawlerSettings,
        client: YouTubeClient,
        state: CrawlerState,
        producer: Producer,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.client = client
        self.state = state
        self.producer = producer
        self.clock = clock
        self.slots = settings.slot_seconds()

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once()
            stop.wait(self.settings.poll_interval_s)

    def run_once(self) -> CycleReport:
        report = CycleReport()
        candidates: list[Candidate] = []
        self._phase("rss", report, lambda: candidates.extend(self._from_feeds()))
        self._phase("backfill", report, lambda: candidates.extend(self._from_uploads()))
        self._phase("search", report, lambda: candidates.extend(self._from_search()))
        self._phase("announce", report, lambda: self._announce(candidates, report))
        self._phase("refresh", report, lambda: self._refresh(report))
        log.info(
            "crawl cycle",
            extra={
                "discovered": report.discovered,
                "snapshots": report.snapshots,
                "quota_remaining": self.client.quota.remaining(),
            },
        )
        return report

    def _phase(self, name: str, report: CycleReport, work: Callable[[], None]) -> None:
        """A failing phase is logged and counted; the others still run (RSS needs no quota, for one)."""
        try:
            work()
        except QuotaExhausted as exc:
            report.quota_exhausted = True
            log.warning("quota exhausted", extra={"phase": name, "error": exc.message})
        except TubelensError as exc:
            PHASE_FAILURES.labels(name, reason_of(exc)).inc()
            report.errors.append(f"{name}: {exc.message}")
            log.error("crawl phase failed", extra={"phase": name, "error": exc.message})

    # discovery

    def _from_feeds(self) -> list[Candidate]:
        found = []
        for channel_id in self.settings.channels:
            found += [Candidate(e.video_id, SOURCE.DISCOVERY_SOURCE_RSS) for e in self.client.feed(channel_id)]
        return found

    def _from_uploads(self) -> list[Candidate]:
        """Page through each channel's uploads playlist, newest first, a bounded number of pages in all."""
        found = []
        for channel_id in self.settings.channels:
            cursor = f"backfill:{channel_id}"
            token = self.state.cursor(cursor)
            if token == "done":
                continue
            for _ in range(self.settings.backfill_pages):
                items, token = self.client.playlist_items(uploads_playlist(channel_id), token or None)
                found += [Candidate(i["contentDetails"]["videoId"], SOURCE.DISCOVERY_SOURCE_PLAYLIST) for i in items]
                self.state.set_cursor(cursor, token or "done")
                if not token:
                    break
        return found

    def _from_search(self) -> list[Candidate]:
        """Newest videos matching each query since the last cycle: publishedAfter moves forward."""
        found = []
        for query in self.settings.search_queries:
            cursor = f"search:{query}"
            since = self.state.cursor(cursor)
            newest, token = since, None
            for _ in range(self.settings.search_pages):
                items, token = self.client.search(query=query, published_after=since, page_token=token)
                for item in items:
                    found.append(Candidate(item["id"]["videoId"], SOURCE.DISCOVERY_SOURCE_SEARCH, query))
                    published = item["snippet"]["publishedAt"]
                    newest = max(newest or published, published, key=parse_time)
                if not token:
                    break
            if newest:
                self.state.set_cursor(cursor, newest)
        return found

    # announcing

    def _announce(self, candidates: list[Candidate], report: CycleReport) -> None:
        first_seen = {}
        for candidate in candidates:
            first_seen.setdefault(candidate.video_id, candidate)
        new_ids = self.state.unseen(first_seen)
        if not new_ids:
            return
        videos = self.client.videos(new_ids)
        subscribers = self._subscribers({v["snippet"]["channelId"] for v in videos})
        now = self.clock()
        for video in videos:
            candidate = first_seen[video["id"]]
            self._publish_discovered(video, candidate)
            self._publish_snapshot(video, "discovery", subscribers, now)
        self.producer.flush()  # durable on the bus before we remember having sent it
        for video in videos:
            published = parse_time(video["snippet"]["publishedAt"]).timestamp()
            due = {slot: published + seconds for slot, seconds in self.slots.items() if published + seconds > now}
            self.state.record_discovered(video["id"], video["snippet"]["channelId"], published, now, due)
            source = SOURCE.Name(first_seen[video["id"]].source).removeprefix("DISCOVERY_SOURCE_").lower()
            DISCOVERED.labels(source).inc()
            report.discovered[source] = report.discovered.get(source, 0) + 1

    def reannounce(self, since: float) -> int:
        """Announce again every video first announced at or after `since`, with its metadata and counters as YouTube
        has them now: for when the broker lost what the crawler had sent (its seen-set would otherwise keep those
        videos from ever being announced again). The events get ids of their own (caused by this re-announcement),
        so consumers that remember the first ones do not skip them; their effects are idempotent (content-addressed
        objects, upserts by video id), so a video whose first announcement did survive changes nothing. Costs the
        quota of videos.list and channels.list (one unit per 50 ids); returns how many videos were announced."""
        ids = self.state.discovered_since(since)
        cause = f"reannounced/{since:.0f}"
        announced = 0
        for chunk in chunks(ids):
            videos = self.client.videos(chunk)  # a video deleted since is simply not returned
            subscribers = self._subscribers({v["snippet"]["channelId"] for v in videos})
            now = self.clock()
            for video in videos:
                media_url = self.settings.media_url_template.format(video_id=video["id"])
                payload = video_discovered(video, SOURCE.DISCOVERY_SOURCE_UNSPECIFIED, "", media_url)
                events.publish(self.producer, payload, key=video["id"], service=SERVICE, cause=cause)
                snapshot = stats_snapshot(video, "reannounce", subscribers, now)
                events.publish(self.producer, snapshot, key=video["id"], service=SERVICE, cause=cause)
            self.producer.flush()
            announced += len(videos)
        log.info("re-announced", extra={"since": since, "known": len(ids), "announced": announced})
        return announced

    def _subscribers(self, channel_ids: set[str]) -> dict[str, tuple[int, bool]]:
        result = {}
        for channel in self.client.channels(sorted(channel_ids), parts="statistics"):
            stats = channel.get("statistics", {})
            result[channel["id"]] = (int(stats.get("subscriberCount", 0)), bool(stats.get("hiddenSubscriberCount")))
        return result

    def _publish_discovered(self, video: dict, candidate: Candidate) -> None:
        media_url = self.settings.media_url_template.format(video_id=video["id"])
        payload = video_discovered(video, candidate.source, candidate.query, media_url)
        # A root event: its id derives from the video (discovered once), so a re-announcement repeats it.
        events.publish(self.producer, payload, key=video["id"], service=SERVICE, cause="discovered")

    def _publish_snapshot(self, video: dict, slot: str, subscribers: dict, now: float) -> None:
        payload = stats_snapshot(video, slot, subscribers, now)
        # One snapshot per video and schedule slot: the id derives from the slot.
        events.publish(self.producer, payload, key=video["id"], service=SERVICE, cause=f"stats/{slot}")
        SNAPSHOTS.labels(slot).inc()

    # refreshing

    def _refresh(self, report: CycleReport) -> None:
        now = self.clock()
        due = self.state.due(now, REFRESH_BATCH)
        if not due:
            return
        videos = {v["id"]: v for v in self.client.videos(sorted({video_id for video_id, _, _ in due}))}
        subscribers = self._subscribers({v["snippet"]["channelId"] for v in videos.values()})
        for video_id, slot, _published in due:
            if video_id in videos:  # a deleted or private video drops out of the schedule
                self._publish_snapshot(videos[video_id], slot, subscribers, now)
                report.snapshots += 1
        self.producer.flush()
        for video_id, slot, _published in due:
            self.state.done(video_id, slot)


def video_discovered(video: dict, source: int, query: str, media_url: str) -> events_pb2.VideoDiscovered:
    """The videos.discovered payload of one videos.list item (the shape `tubelens import` builds for its rows too).
    A video without `publishedAt` (a catalogue that does not know it) leaves `published_at` unset: unknown."""
    snippet, details = video["snippet"], video.get("contentDetails", {})
    published = snippet.get("publishedAt")
    return events_pb2.VideoDiscovered(
        video_id=video["id"],
        channel_id=snippet["channelId"],
        channel_title=snippet.get("channelTitle", ""),
        title=snippet.get("title", ""),
        description=snippet.get("description", ""),
        published_at=_timestamp(parse_time(published).timestamp()) if published else None,
        category_id=snippet.get("categoryId", ""),
        duration_seconds=duration_seconds(details.get("duration", "")),
        tags=snippet.get("tags", []),
        thumbnails=[
            events_pb2.Thumbnail(name=name, url=t["url"], width=t.get("width", 0), height=t.get("height", 0))
            for name, t in snippet.get("thumbnails", {}).items()
        ],
        media_url=media_url,
        source=source,
        search_query=query,
        default_language=snippet.get("defaultLanguage", ""),
    )


def stats_snapshot(video: dict, slot: str, subscribers: dict, now: float) -> events_pb2.StatsSnapshot:
    """The videos.stats payload of one videos.list item observed at `now`; `subscribers` maps channel id to
    (count, hidden). Without `publishedAt` the age is unknown and left 0 (read `published_at`'s presence)."""
    stats = video.get("statistics", {})
    channel_id = video["snippet"]["channelId"]
    published = video["snippet"].get("publishedAt")
    age = max(int(now - parse_time(published).timestamp()), 0) if published else 0
    count, hidden = subscribers.get(channel_id, (0, False))
    return events_pb2.StatsSnapshot(
        video_id=video["id"],
        channel_id=channel_id,
        observed_at=_timestamp(now),
        age_seconds=age,
        schedule_slot=slot,
        view_count=int(stats.get("viewCount", 0)),
        like_count=int(stats.get("likeCount", 0)),
        comment_count=int(stats.get("commentCount", 0)),
        channel_subscriber_count=count,
        subscriber_count_hidden=hidden,
    )


def uploads_playlist(channel_id: str) -> str:
    """A channel's uploads playlist id is its id with UC replaced by UU: saves a channels.list call."""
    return "UU" + channel_id.removeprefix("UC")


def _timestamp(epoch: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(epoch * 1e9))
    return stamp
