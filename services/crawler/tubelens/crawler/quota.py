"""YouTube Data API quota: documented unit costs, counted against a daily budget that survives restarts.

The quota resets at midnight Pacific time. Every request sent is counted (invalid requests cost units too), and
the crawler refuses to send one that would cross the budget rather than find out from a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Gauge

from tubelens.crawler.state import CrawlerState
from tubelens.errors import TubelensError

# https://developers.google.com/youtube/v3/determine_quota_cost
COSTS = {
    "videos.list": 1,
    "channels.list": 1,
    "playlistItems.list": 1,
    "videoCategories.list": 1,
    "search.list": 100,
}
PACIFIC = ZoneInfo("America/Los_Angeles")

QUOTA_REMAINING = Gauge("tubelens_crawler_quota_remaining_units", "API units left in today's budget")
QUOTA_SPENT = Counter("tubelens_crawler_quota_spent_units_total", "API units spent", ["method"])


class QuotaExhausted(TubelensError):
    """Today's budget cannot pay for the call; API work waits for the Pacific-midnight reset."""


class QuotaBudget:
    def __init__(self, state: CrawlerState, per_day: int, reserve: int, clock: Callable[[], float]) -> None:
        self.state = state
        self.limit = per_day - reserve
        self.clock = clock

    def day(self) -> str:
        return datetime.fromtimestamp(self.clock(), PACIFIC).date().isoformat()

    def used(self) -> int:
        return self.state.quota_used(self.day())

    def remaining(self) -> int:
        return max(self.limit - self.used(), 0)

    def spend(self, method: str) -> None:
        cost = COSTS[method]
        day = self.day()
        used = self.state.quota_used(day)
        if used + cost > self.limit:
            QUOTA_REMAINING.set(max(self.limit - used, 0))
            raise QuotaExhausted(f"{method} costs {cost} units; {max(self.limit - used, 0)} left of {self.limit} today")
        self.state.set_quota_used(day, used + cost)
        QUOTA_SPENT.labels(method).inc(cost)
        QUOTA_REMAINING.set(self.limit - used - cost)

    def exhaust(self) -> None:
        """YouTube said quotaExceeded (another client shares the key): stop for the rest of the day."""
        self.state.set_quota_used(self.day(), max(self.limit, self.used()))
        QUOTA_REMAINING.set(0)
