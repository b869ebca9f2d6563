"""The in-process bus for the embedded mode: same interfaces and the same group semantics as Kafka.

Partitions are append-only lists. A consumer group spreads partitions over its members; when membership changes,
a partition moves only after its old owner has given it up at its next poll (by which time the worker has
committed what it processed), so a healthy rebalance never hands out a message twice — as with Kafka's protocol.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from tubelens.bus.base import Bus, ConsumerClient, Message, Producer, TopicPartition, as_key, record_size, too_large


@dataclass
class _Group:
    members: list[int] = field(default_factory=list)
    subscriptions: dict[int, list[str]] = field(default_factory=dict)
    owner: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class MemoryBroker:
    """Shared state of one in-process bus; thread-safe."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self._logs: dict[str, list[list[Message]]] = {}
        self._groups: dict[str, _Group] = {}
        self._cond = threading.Condition()
        self._member_ids = itertools.count(1)

    # topics

    def ensure_topic(self, topic: str) -> None:
        with self._cond:
            self._ensure_topic_locked(topic)

    def _ensure_topic_locked(self, topic: str) -> list[list[Message]]:
        if topic not in self._logs:
            self._logs[topic] = [[] for _ in range(self.partitions)]
        return self._logs[topic]

    def topics(self) -> list[str]:
        with self._cond:
            return sorted(self._logs)

    def append(self, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, str]) -> None:
        with self._cond:
            partitions = self._ensure_topic_locked(topic)
            index = self._partition_for(key, topic, partitions)
            log = partitions[index]
            log.append(Message(topic, index, len(log), key, value, dict(headers)))
            self._cond.notify_all()

    def _partition_for(self, key: bytes | None, topic: str, partitions: list[list[Message]]) -> int:
        if key is None:  # spread unkeyed messages: the shortest partition
            return min(range(len(partitions)), key=lambda i: len(partitions[i]))
        return zlib.crc32(key) % len(partitions)

    def read_all(self, topic: str) -> list[Message]:
        """Every message of a topic, for tests and reports."""
        with self._cond:
            return [m for log in self._logs.get(topic, []) for m in log]

    # groups

    def join(self, group: str, topics: list[str]) -> int:
        with self._cond:
            for topic in topics:
                self._ensure_topic_locked(topic)
            member = next(self._member_ids)
            state = self._groups.setdefault(group, _Group())
            state.members.append(member)
            state.subscriptions[member] = list(topics)
            self._cond.notify_all()
            return member

    def leave(self, group: str, member: int) -> None:
        with self._cond:
            state = self._groups[group]
            state.members.remove(member)
            state.subscriptions.pop(member, None)
            for tp in [tp for tp, owner in state.owner.items() if owner == member]:
                del state.owner[tp]
            self._cond.notify_all()

    def _desired(self, state: _Group, member: int) -> set[TopicPartition]:
        """Round-robin over the members subscribed to each topic, deterministic for a given membership."""
        desired: set[TopicPartition] = set()
        for topic in state.subscriptions[member]:
            subscribers = [m for m in state.members if topic in state.subscriptions[m]]
            for partition in range(len(self._logs[topic])):
                if subscribers[partition % len(subscribers)] == member:
                    desired.add((topic, partition))
        return desired

    def fetch(
        self,
        group: str,
        member: int,
        positions: dict[TopicPartition, int],
        max_records: int,
        timeout_s: float,
    ) -> list[Message]:
        """Rebalance this member's partitions, then return up to `max_records` past its positions."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                state = self._groups[group]
                self._rebalance_member(state, member, positions)
                batch = self._collect(positions, max_records)
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    return batch
                self._cond.wait(remaining)

    def _rebalance_member(self, state: _Group, member: int, positions: dict[TopicPartition, int]) -> None:
        desired = self._desired(state, member)
        for tp in [tp for tp in positions if tp not in desired]:
            del positions[tp]
            if state.owner.get(tp) == member:
                del state.owner[tp]
                self._cond.notify_all()
        for tp in desired - positions.keys():
            if tp not in state.owner:
                state.owner[tp] = member
                positions[tp] = state.committed.get(tp, 0)

    def _collect(self, positions: dict[TopicPartition, int], max_records: int) -> list[Message]:
        batch: list[Message] = []
        for (topic, partition), position in sorted(positions.items()):
            taken = self._logs[topic][partition][position : position + max_records - len(batch)]
            batch.extend(taken)
            positions[(topic, partition)] = position + len(taken)
            if len(batch) >= max_records:
                break
        return batch

    def commit(self, group: str, member: int, offsets: Mapping[TopicPartition, int]) -> None:
        with self._cond:
            state = self._groups[group]
            for tp, offset in offsets.items():
                if state.owner.get(tp) == member:  # a former owner's late commit must not move the offset
                    state.committed[tp] = offset

    def committed(self, group: str) -> dict[TopicPartition, int]:
        with self._cond:
            return dict(self._groups.get(group, _Group()).committed)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        with self._cond:
            return {(t, p): len(self._logs[t][p]) for t, p in tps}


class MemoryProducer(Producer):
    def __init__(self, broker: MemoryBroker, max_message_bytes: int | None = None) -> None:
        self._broker = broker
        self.max_message_bytes = max_message_bytes

    def publish(self, topic, value, *, key, headers=None) -> None:
        if self.max_message_bytes is not None:
            size = record_size(value, as_key(key), headers)
            if size > self.max_message_bytes:
                raise too_large(topic, size, self.max_message_bytes)
        self._broker.append(topic, as_key(key), value, headers or {})

    def flush(self, timeout_s: float | None = None) -> None:
        """Appends are synchronous: nothing is ever pending."""

    def close(self) -> None:
        """Nothing to release: the broker outlives its producers."""


class MemoryConsumer(ConsumerClient):
    def __init__(self, broker: MemoryBroker, topics: list[str], group: str) -> None:
        self._broker = broker
        self._group = group
        self._member = broker.join(group, topics)
        self._positions: dict[TopicPartition, int] = {}

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        return self._broker.fetch(self._group, self._member, self._positions, max_records, timeout_s)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._broker.commit(self._group, self._member, offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def pause(self) -> None:
        """Fetching happens only in `poll`, which the worker does not call while paused."""

    def resume(self) -> None:
        """See `pause`."""

    def keep_alive(self) -> None:
        """Membership here does not lapse."""

    def lag(self) -> dict[TopicPartition, int]:
        ends = self._broker.end_offsets(list(self._positions))
        return {tp: ends[tp] - position for tp, position in self._positions.items()}

    def close(self) -> None:
        self._broker.leave(self._group, self._member)


class MemoryBus(Bus):
    def __init__(
        self, broker: MemoryBroker | None = None, partitions: int = 4, max_message_bytes: int | None = None
    ) -> None:
        self.broker = broker or MemoryBroker(partitions)
        self.max_message_bytes = max_message_bytes

    def producer(self) -> Producer:
        return MemoryProducer(self.broker, self.max_message_bytes)

    def consumer(self, topics: list[str], group: str) -> ConsumerClient:
        return MemoryConsumer(self.broker, topics, group)

    def ensure_topics(self, topics: list[str]) -> None:
        for topic in topics:
            self.broker.ensure_topic(topic)

    def close(self) -> None:
        """The broker's state lives as long as the process; there is no connection to release."""
