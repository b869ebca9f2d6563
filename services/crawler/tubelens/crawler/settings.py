"""The crawler's settings: TUBELENS_CRAWLER__<FIELD>."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from tubelens.settings import TubelensSettings

SLOT_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_slot(slot: str) -> int:
    """'6h' -> 21600 seconds."""
    number, unit = slot[:-1], slot[-1:]
    if unit not in SLOT_UNITS or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"refresh slot {slot!r} is not a positive number of m, h or d (e.g. 6h)")
    return int(number) * SLOT_UNITS[unit]


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Lists come from the environment as comma-separated strings, not JSON.
CommaList = Annotated[list[str], NoDecode]


class CrawlerSettings(BaseModel):
    api_key: SecretStr
    api_base: str = "https://www.googleapis.com/youtube/v3"
    rss_base: str = "https://www.youtube.com/feeds/videos.xml"
    # The Data API gives no media file; a deployment that has one names it with this template ({video_id}).
    media_url_template: str = ""
    channels: CommaList = Field(default_factory=list, description="channel ids (UC...) to follow")
    search_queries: CommaList = Field(default_factory=list, description="keywords or themes to discover by")
    quota_per_day: int = Field(default=10_000, ge=1, description="units; YouTube's default project quota")
    quota_reserve: int = Field(default=0, ge=0, description="units never spent by the crawler")
    refresh_slots: CommaList = Field(default_factory=lambda: ["1h", "6h", "24h", "7d"])
    backfill_pages: int = Field(default=4, ge=0, description="uploads-playlist pages (50 videos) per channel")
    search_pages: int = Field(default=1, ge=1, description="pages per search query per cycle (100 units each)")
    poll_interval_s: float = Field(default=300.0, gt=0)
    state_path: Path = Path(".tubelens") / "crawler.sqlite"
    max_attempts: int = Field(default=5, ge=1)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)

    _split_lists = field_validator("channels", "search_queries", "refresh_slots", mode="before")(_split)

    @field_validator("refresh_slots")
    @classmethod
    def _valid_slots(cls, slots: list[str]) -> list[str]:
        for slot in slots:
            parse_slot(slot)
        return slots

    def slot_seconds(self) -> dict[str, int]:
        return {slot: parse_slot(slot) for slot in self.refresh_slots}


class CrawlerServiceSettings(TubelensSettings):
    service: str = "crawler"
    crawler: CrawlerSettings
