"""A small client for the YouTube Data API v3 and channel RSS feeds, over plain HTTP.

Every API call is paid for from the quota budget before it is sent. 429 and 5xx answers and dropped connections
are retried with full-jitter exponential backoff, a bounded number of times; then Unavailable. quotaExceeded
exhausts today's budget. Other 4xx answers are the request's fault and are not retried.
"""

from __future__ import annotations

import json
import logging
import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import urllib3
from prometheus_client import Counter, Histogram

from tubelens.crawler.quota import QuotaBudget, QuotaExhausted
from tubelens.errors import InvalidInput, Unavailable
from tubelens.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 50  # videos.list and channels.list accept at most 50 ids
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
ATOM = {"atom": "http://www.w3.org/2005/Atom", "yt": "http://www.youtube.com/xml/schemas/2015"}

API_REQUESTS = Counter("tubelens_crawler_api_requests_total", "YouTube requests by outcome", ["method", "status"])
API_SECONDS = Histogram(
    "tubelens_crawler_api_request_duration_seconds", "YouTube request latency", ["method"], buckets=LATENCY_BUCKETS
)


@dataclass(frozen=True)
class FeedEntry:
    video_id: str
    channel_id: str
    published_at: datetime


def chunks(items: list[str], size: int = MAX_IDS_PER_CALL) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class YouTubeClient:
    def __init__(
        self,
        *,
        api_base: str,
        rss_base: str,
        api_key: str,
        quota: QuotaBudget,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.rss_base = rss_base
        self.api_key = api_key
        self.quota = quota
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.sleep = sleep
        # Retries are ours (they must be paid for and logged), so urllib3's are off.
        self.http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout_s), retries=False, maxsize=4)

    # the API

    def videos(self, ids: list[str], parts: str = "snippet,contentDetails,statistics") -> list[dict]:
        items = []
        for batch in chunks(ids):
            items += self._call("videos.list", "videos", {"part": parts, "id": ",".join(batch)})["items"]
        return items

    def channels(self, ids: list[str], parts: str = "snippet,statistics,contentDetails") -> list[dict]:
        items = []
        for batch in chunks(ids):
            items += self._call("channels.list", "channels", {"part": parts, "id": ",".join(batch)})["items"]
        return items

    def playlist_items(self, playlist_id: str, page_token: str | None = None) -> tuple[list[dict], str | None]:
        params = {"part": "snippet,contentDetails", "playlistId": playlist_id, "maxResults": 50}
        page = self._call("playlistItems.list", "playlistItems", _with_token(params, page_token))
        return page["items"], page.get("nextPageToken")

    def search(
        self, *, query: str, published_after: str | None = None, page_token: str | None = None
    ) -> tuple[list[dict], str | None]:
        params: dict[str, Any] = {"part": "snippet", "q": query, "type": "video", "order": "date", "maxResults": 50}
        if published_after:
            params["publishedAfter"] = published_after
        page = self._call("search.list", "search", _with_token(params, page_token))
        return page["items"], page.get("nextPageToken")

    def _call(self, method: str, resource: str, params: dict[str, Any]) -> dict:
        url = f"{self.api_base}/{resource}"
        for attempt in range(1, self.max_attempts + 1):
            self.quota.spend(method)
            status, body = self._get(method, url, {**params, "key": self.api_key})
            if status == 200:
                return json.loads(body)
            reason, message = _google_error(body)
            if status == 403 and reason in QUOTA_REASONS:
                self.quota.exhaust()
                raise QuotaExhausted(f"{method}: YouTube says {reason}: {message}")
            if status not in RETRYABLE_STATUS:
                raise InvalidInput(f"{method}: HTTP {status} {reason}: {message}")
            self._back_off(method, attempt, f"HTTP {status} {reason}")
        raise Unavailable(f"{method}: YouTube kept failing after {self.max_attempts} attempts")

    def _get(self, method: str, url: str, params: dict[str, Any]) -> tuple[int, bytes]:
        """One request; a connection failure reads as status 0 so the caller's retry loop handles it."""
        started = time.perf_counter()
        try:
            response = self.http.request("GET", url, fields=params)
            status, body = response.status, response.data
        except urllib3.exceptions.HTTPError as exc:
            log.warning("youtube request failed", extra={"method": method, "error": repr(exc)})
            status, body = 0, b""
        API_SECONDS.labels(method).observe(time.perf_counter() - started)
        API_REQUESTS.labels(method, str(status)).inc()
        return status, body

    def _back_off(self, method: str, attempt: int, why: str) -> None:
        if attempt == self.max_attempts:
            return
        delay = random.uniform(0, min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1)))
        log.warning(
            "youtube call retried", extra={"method": method, "attempt": attempt, "why": why, "delay_s": round(delay, 3)}
        )
        self.sleep(delay)

    # RSS: free of quota

    def feed(self, channel_id: str) -> list[FeedEntry]:
        for attempt in range(1, self.max_attempts + 1):
            status, body = self._get("rss", self.rss_base, {"channel_id": channel_id})
            if status == 200:
                return parse_feed(body, channel_id)
            if status == 404:
                raise InvalidInput(f"no RSS feed for channel {channel_id}")
            if status not in RETRYABLE_STATUS and status != 0:
                raise InvalidInput(f"RSS feed of {channel_id}: HTTP {status}")
            self._back_off("rss", attempt, f"HTTP {status}")
        raise Unavailable(f"RSS feed of {channel_id} kept failing after {self.max_attempts} attempts")


def _with_token(params: dict[str, Any], page_token: str | None) -> dict[str, Any]:
    return {**params, "pageToken": page_token} if page_token else params


def _google_error(body: bytes) -> tuple[str, str]:
    """(reason, message) from Google's JSON error envelope, tolerating bodies that are not one."""
    try:
        error = json.loads(body)["error"]
        return (error.get("errors") or [{}])[0].get("reason", ""), error.get("message", "")
    except (ValueError, KeyError, TypeError, IndexError):
        return "", body[:200].decode(errors="replace")


def parse_feed(body: bytes, channel_id: str) -> list[FeedEntry]:
    """Entries of a channel's Atom feed. The entry-level yt:channelId is used: in some feeds the feed-level one
    lacks the UC prefix."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise InvalidInput(f"RSS feed of {channel_id} is not XML: {exc}") from None
    entries = []
    for entry in root.findall("atom:entry", ATOM):
        video_id = entry.findtext("yt:videoId", namespaces=ATOM)
        published = entry.findtext("atom:published", namespaces=ATOM)
        if not video_id or not published:
            continue
        entries.append(
            FeedEntry(
                video_id=video_id,
                channel_id=entry.findtext("yt:channelId", default=channel_id, namespaces=ATOM),
                published_at=parse_time(published),
            )
        )
    return entries


def parse_time(text: str) -> datetime:
    """RFC 3339 as YouTube writes it: '2019-03-21T20:37:49.000Z' or '...+00:00'."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
