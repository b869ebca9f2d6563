"""The crawler's durable memory: which videos it has announced, when their counters are due, its cursors and the
quota it spent today. SQLite on a volume: a restart resumes where it stopped and never re-announces a video."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    video_id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    published_at REAL NOT NULL,
    discovered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule (
    video_id TEXT NOT NULL,
    slot TEXT NOT NULL,
    due_at REAL NOT NULL,
    PRIMARY KEY (video_id, slot)
);
CREATE INDEX IF NOT EXISTS schedule_due ON schedule (due_at);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quota (day TEXT PRIMARY KEY, used INTEGER NOT NULL);
"""


class CrawlerState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)  # autocommit; `transaction()` groups writes
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a crawler restart must never re-announce a video
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def unseen(self, video_ids: Iterable[str]) -> list[str]:
        """The ids not announced yet, in the order given, without repeats."""
        result, seen_here = [], set()
        for video_id in video_ids:
            if video_id in seen_here:
                continue
            seen_here.add(video_id)
            if self.db.execute("SELECT 1 FROM videos WHERE video_id = ?", (video_id,)).fetchone() is None:
                result.append(video_id)
        return result

    def record_discovered(
        self, video_id: str, channel_id: str, published_at: float, now: float, due: dict[str, float]
    ) -> None:
        """Mark announced and schedule its refreshes, atomically."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR IGNORE INTO videos VALUES (?, ?, ?, ?)", (video_id, channel_id, published_at, now)
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO schedule VALUES (?, ?, ?)", [(video_id, s, at) for s, at in due.items()]
            )

    def due(self, now: float, limit: int) -> list[tuple[str, str, float]]:
        """(video_id, slot, published_at) of refreshes due by `now`, oldest first."""
        return self.db.execute(
            "SELECT s.video_id, s.slot, v.published_at FROM schedule s JOIN videos v USING (video_id) "
            "WHERE s.due_at <= ? ORDER BY s.due_at LIMIT ?",
            (now, limit),
        ).fetchall()

    def done(self, video_id: str, slot: str) -> None:
        self.db.execute("DELETE FROM schedule WHERE video_id = ? AND slot = ?", (video_id, slot))

    def discovered_since(self, since: float) -> list[str]:
        """The ids first announced at or after `since` (epoch seconds), in announcement order."""
        rows = self.db.execute(
            "SELECT video_id FROM videos WHERE discovered_at >= ? ORDER BY discovered_at, video_id", (since,)
        )
        return [row[0] for row in rows]

    def video_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]

    def cursor(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_cursor(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (name, value))

    def quota_used(self, day: str) -> int:
        row = self.db.execute("SELECT used FROM quota WHERE day = ?", (day,)).fetchone()
        return row[0] if row else 0

    def set_quota_used(self, day: str, used: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO quota VALUES (?, ?)", (day, used))
