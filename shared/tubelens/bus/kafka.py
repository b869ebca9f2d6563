"""The Kafka bus over kafka-python: idempotent acks=all producer, explicit commits, topics created on demand."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from tubelens.bus.base import Bus, ConsumerClient, Message, Producer, TopicPartition, as_key
from tubelens.errors import Unavailable
from tubelens.settings import KafkaSettings

log = logging.getLogger(__name__)


def _connect(what: str, settings: KafkaSettings, factory):
    """kafka-python retries the bootstrap with backoff for `bootstrap_timeout_ms`; past that, a clear error."""
    try:
        return factory()
    except KafkaTimeoutError as exc:
        raise Unavailable(
            f"Kafka {what}: no broker answered at {settings.bootstrap} within "
            f"{settings.connect_timeout_ms / 1000:.0f}s ({exc})"
        ) from exc


def _common(settings: KafkaSettings) -> dict:
    return {
        "bootstrap_servers": settings.bootstrap.split(","),
        "client_id": settings.client_id,
        "request_timeout_ms": settings.request_timeout_ms,
        "bootstrap_timeout_ms": settings.connect_timeout_ms,
    }


class KafkaBusProducer(Producer):
    def __init__(self, settings: KafkaSettings, bus: KafkaBus) -> None:
        self._settings = settings
        self._bus = bus
        self._producer = _connect(
            "producer",
            settings,
            lambda: KafkaProducer(
                **_common(settings),
                acks="all",  # with idempotence (kafka-python's default): no loss, no duplicates, per-key order
                linger_ms=5,
                delivery_timeout_ms=settings.delivery_timeout_ms,
            ),
        )
        self._failure_lock = threading.Lock()
        self._failures: list[BaseException] = []

    def publish(self, topic, value, *, key, headers=None) -> None:
        self._bus.ensure_topics([topic])
        future = self._producer.send(
            topic,
            value=value,
            key=as_key(key),
            headers=[(k, v.encode()) for k, v in (headers or {}).items()],
        )
        future.add_errback(self._record_failure)

    def _record_failure(self, exc: BaseException) -> None:
        with self._failure_lock:
            self._failures.append(exc)

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError as exc:
            raise Unavailable(f"Kafka producer: messages not acknowledged in time ({exc})") from exc
        with self._failure_lock:
            failures, self._failures = self._failures, []
        if failures:
            raise Unavailable(f"Kafka producer: {len(failures)} message(s) not delivered: {failures[0]!r}")

    def close(self) -> None:
        self._producer.close(timeout=10)


class KafkaBusConsumer(ConsumerClient):
    def __init__(self, settings: KafkaSettings, topics: list[str], group: str) -> None:
        self._consumer = _connect(
            "consumer",
            settings,
            lambda: KafkaConsumer(
                *topics,
                **_common(settings),
                group_id=group,
                enable_auto_commit=False,  # at-least-once: the worker commits after the handler succeeded
                auto_offset_reset="earliest",
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=max(settings.session_timeout_ms // 3, 100),
            ),
        )

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Message(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                headers={k: v.decode(errors="replace") for k, v in (record.headers or [])},
            )
            for records in batches.values()
            for record in records
        ]

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self._consumer.commit(
                {KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            )
        except CommitFailedError as exc:
            # The group rebalanced under us: the new owner re-reads from the last commit (at-least-once).
            log.warning("commit rejected after a rebalance; messages will be redelivered", extra={"error": str(exc)})

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def lag(self) -> dict[TopicPartition, int]:
        lag = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag[(tp.topic, tp.partition)] = max(highwater - self._consumer.position(tp), 0)
        return lag

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaBus(Bus):
    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._known_topics: set[str] = set()
        self._lock = threading.Lock()
        self._admin: KafkaAdminClient | None = None

    def producer(self) -> Producer:
        return KafkaBusProducer(self.settings, self)

    def consumer(self, topics: list[str], group: str) -> ConsumerClient:
        self.ensure_topics(topics)
        return KafkaBusConsumer(self.settings, topics, group)

    def ensure_topics(self, topics: list[str]) -> None:
        with self._lock:
            missing = [t for t in topics if t not in self._known_topics]
            if not missing:
                return
            admin = self._admin_client()
            existing = set(admin.list_topics())
            for topic in missing:
                if topic not in existing:
                    self._create_topic(admin, topic)
                self._known_topics.add(topic)

    def _admin_client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = _connect("admin", self.settings, lambda: KafkaAdminClient(**_common(self.settings)))
        return self._admin

    def _create_topic(self, admin: KafkaAdminClient, topic: str) -> None:
        try:
            admin.create_topics([NewTopic(topic, num_partitions=self.settings.partitions, replication_factor=1)])
            log.info("created topic", extra={"topic": topic, "partitions": self.settings.partitions})
        except TopicAlreadyExistsError:
            pass  # another process won the race
        except KafkaError as exc:
            raise Unavailable(f"Kafka admin: could not create topic {topic!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
