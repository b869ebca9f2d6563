"""The bus interfaces. Backends implement transport only; delivery semantics live once, in `worker.py`."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tubelens.errors import TooLarge

TopicPartition = tuple[str, int]


def dlq_topic(topic: str) -> str:
    """Every topic has a dead-letter twin that keeps the original bytes plus the reason."""
    return f"{topic}.dlq"


def as_key(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


# Room for the record's own framing (key, headers, batch header) inside max_message_bytes.
RECORD_OVERHEAD_BYTES = 1024


def record_size(value: bytes, key: bytes | None, headers: Mapping[str, str] | None) -> int:
    """What a record weighs against max_message_bytes: its bytes, its key, its headers and the framing."""
    header_bytes = sum(len(k) + len(v.encode()) for k, v in (headers or {}).items())
    return len(value) + len(key or b"") + header_bytes + RECORD_OVERHEAD_BYTES


def too_large(topic: str, size: int, limit: int) -> TooLarge:
    return TooLarge(
        f"an event for {topic} would be {size} bytes, over the {limit}-byte message limit "
        "(TUBELENS_KAFKA__MAX_MESSAGE_BYTES)",
        field="value",
    )


def ensure_known_topics(
    known: set[str], topics: list[str], existing: Callable[[], set[str]], create: Callable[[str], None]
) -> None:
    """Create those of `topics` that neither `known` (topics this process saw exist) nor the broker's listing
    (`existing`, asked only when one is unknown) has, and remember them all. The caller holds its own lock."""
    missing = [t for t in topics if t not in known]
    if not missing:
        return
    present = existing()
    for topic in missing:
        if topic not in present:
            create(topic)
        known.add(topic)


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Producer(abc.ABC):
    """Key-ordered publishing: messages with the same key land on one partition, in publish order."""

    # The largest message the backend takes (None: no limit); `publish` raises TooLarge past it.
    max_message_bytes: int | None = None

    @abc.abstractmethod
    def publish(
        self, topic: str, value: bytes, *, key: str | bytes | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue one message. Delivery is confirmed by `flush`, which raises if any queued message failed."""

    @abc.abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Block until everything queued is durable on the broker; raise Unavailable if anything was not."""

    @abc.abstractmethod
    def close(self) -> None: ...


class ConsumerClient(abc.ABC):
    """One member of a consumer group. Offsets are committed explicitly, never automatically."""

    @abc.abstractmethod
    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """The next messages of the partitions this member owns, in offset order per partition."""

    @abc.abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record `offsets` (the next offset to read, per partition) for the group."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns right now."""

    @abc.abstractmethod
    def pause(self) -> None:
        """Stop fetching from the owned partitions (a dependency is down); membership is kept."""

    @abc.abstractmethod
    def resume(self) -> None:
        """Fetch again after `pause`."""

    @abc.abstractmethod
    def keep_alive(self) -> None:
        """Called while paused, between retries: whatever the backend needs to keep this member in its group."""

    def lag(self) -> dict[TopicPartition, int]:
        """Messages behind the end of each owned partition, where the backend knows it."""
        return {}

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group; owned partitions go to the other members."""


class Bus(abc.ABC):
    @abc.abstractmethod
    def producer(self) -> Producer: ...

    @abc.abstractmethod
    def consumer(self, topics: list[str], group: str) -> ConsumerClient: ...

    @abc.abstractmethod
    def ensure_topics(self, topics: list[str]) -> None:
        """Create the topics that do not exist yet (idempotent)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release shared resources such as admin connections."""
