"""The Kafka bus over kafka-python: idempotent acks=all producer, explicit commits, topics created on demand."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from tubelens.bus.base import (
    Bus,
    ConsumerClient,
    Message,
    Producer,
    TopicPartition,
    as_key,
    ensure_known_topics,
    record_size,
    too_large,
)
from tubelens.errors import DependencyUnavailable
from tubelens.settings import KafkaSettings

log = logging.getLogger(__name__)


def _connect(what: str, settings: KafkaSettings, factory):
    """kafka-python retries the bootstrap with backoff for `bootstrap_timeout_ms`; past that, a clear error."""
    try:
        return factory()
    except KafkaTimeoutError as exc:
        raise DependencyUnavailable(
            f"Kafka {what}: no broker answered at {settings.bootstrap} within "
            f"{settings.connect_timeout_ms / 1000:.0f}s ({exc})",
            dependency="broker",
        ) from exc


# kafka-python's default total fetch size; raised to the message limit when that is larger.
FETCH_MAX_BYTES = 52_428_800
def _common(settings: KafkaSettings) -> dict:
    return {
        "bootstrap_servers": settings.bootstrap.split(","),
        "client_id": settings.client_id,
        "request_timeout_ms": settings.request_timeout_ms,
        "bootstrap_timeout_ms": settings.connect_timeout_ms,
        **_security(settings),
    }


def _security(settings: KafkaSettings) -> dict:
    """SASL and TLS towards the brokers, when the settings ask for them."""
    options: dict = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        options |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    if settings.security_protocol.endswith("SSL") and settings.ssl_cafile is not None:
        options["ssl_cafile"] = str(settings.ssl_cafile)
    return options


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
                max_request_size=settings.max_message_bytes,
            ),
        )
        self.max_message_bytes = settings.max_message_bytes
        self._failure_lock = threading.Lock()
        self._failures: list[BaseException] = []

    def publish(self, topic, value, *, key, headers=None) -> None:
        # Refused here, before the broker would refuse it in the background: the handler's message fails with this
        # reason (dead-lettered) instead of a failed flush taking the worker down.
        size = record_size(value, as_key(key), headers)
        if size > self.max_message_bytes:
            raise too_large(topic, size, self.max_message_bytes)
        self._bus.ensure_topics([topic])
        try:
            future = self._producer.send(
                topic,
                value=value,
                key=as_key(key),
                headers=[(k, v.encode()) for k, v in (headers or {}).items()],
            )
        except MessageSizeTooLargeError:
            raise too_large(topic, size, self.max_message_bytes) from None
        future.add_errback(self._record_failure)

    def _record_failure(self, exc: BaseException) -> None:
        with self._failure_lock:
            self._failures.append(exc)

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError as exc:
            raise DependencyUnavailable(
                f"Kafka producer: messages not acknowledged in time ({exc})", dependency="broker"
            ) from exc
        with self._failure_lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DependencyUnavailable(
                f"Kafka producer: {len(failures)} message(s) not delivered: {failures[0]!r}", dependency="broker"
            )

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
                # Any message up to the limit fits in one fetch (and a larger one still arrives whole, to be
                # dead-lettered: fetches return at least one record batch).
                max_partition_fetch_bytes=settings.max_message_bytes,
                fetch_max_bytes=max(settings.max_message_bytes, FETCH_MAX_BYTES),
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

    def pause(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.paused())

    def keep_alive(self) -> None:
        """Poll while paused, so the group keeps this member (max.poll.interval.ms). A partition assigned meanwhile
        is not paused yet and may return records: rewind to them, so none is skipped, and pause it too."""
        batches = self._consumer.poll(timeout_ms=0)
        for tp, records in batches.items():
            if records:
                self._consumer.seek(tp, min(r.offset for r in records))
        self.pause()

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
            ensure_known_topics(
                self._known_topics,
                topics,
                lambda: set(self._admin_client().list_topics()),
                lambda topic: self._create_topic(self._admin_client(), topic),
            )

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
            raise DependencyUnavailable(
                f"Kafka admin: could not create topic {topic!r}: {exc}", dependency="broker"
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
