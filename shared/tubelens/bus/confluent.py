"""The Kafka bus over confluent-kafka (librdkafka): the same contract as `kafka.py`, a faster client.

kafka-python stays the default (pure Python, no native library in the images' trust base); this backend is chosen
with `TUBELENS_KAFKA__CLIENT=confluent`. Both pass the same contract tests (`tests/contract/test_bus_contract.py`) and
`make bench` prints both side by side. Delivery semantics stay in `worker.py`: this file is transport only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import Producer as CkProducer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

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

# librdkafka's local queue fills when the broker is slower than the producer: serve callbacks, then try again.
_QUEUE_FULL_WAIT_S = 0.05


# librdkafka's default total fetch size; raised to the message limit when that is larger.
FETCH_MAX_BYTES = 52_428_800


def _unavailable(message: str) -> DependencyUnavailable:
    return DependencyUnavailable(message, dependency="broker")


def _common(settings: KafkaSettings) -> dict:
    return {
        "bootstrap.servers": settings.bootstrap,
        "client.id": settings.client_id,
        "socket.connection.setup.timeout.ms": settings.connect_timeout_ms,
        # librdkafka logs through its own channel; route it through ours so the JSON logs stay one stream.
        "logger": log,
        **_security(settings),
    }


def _security(settings: KafkaSettings) -> dict:
    """SASL and TLS towards the brokers, the same settings as kafka.py's, in librdkafka's names."""
    options: dict = {"security.protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        options |= {
            "sasl.mechanism": settings.sasl_mechanism,
            "sasl.username": settings.sasl_username,
            "sasl.password": settings.sasl_password.get_secret_value(),
        }
    if settings.security_protocol.endswith("SSL") and settings.ssl_cafile is not None:
        options["ssl.ca.location"] = str(settings.ssl_cafile)
    return options


class ConfluentBusProducer(Producer):
    def __init__(self, settings: KafkaSettings, bus: ConfluentBus) -> None:
        self._bus = bus
        self._producer = CkProducer(
            {
                **_common(settings),
                "acks": "all",
                "enable.idempotence": True,  # as kafka-python's default: no loss, no duplicates, per-key order
                "linger.ms": 5,
                "request.timeout.ms": settings.request_timeout_ms,
                "delivery.timeout.ms": settings.delivery_timeout_ms,
                "message.max.bytes": settings.max_message_bytes,
            }
        )
        self.max_message_bytes = settings.max_message_bytes
        self._failure_lock = threading.Lock()
        self._failures: list[KafkaError] = []

    def publish(self, topic, value, *, key, headers=None) -> None:
        # As in kafka.py: refused here, so the handler's message fails with this reason instead of a failed flush.
        size = record_size(value, as_key(key), headers)
        if size > self.max_message_bytes:
            raise too_large(topic, size, self.max_message_bytes)
        self._bus.ensure_topics([topic])
        encoded_headers = [(k, v.encode()) for k, v in (headers or {}).items()]
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=as_key(key), headers=encoded_headers, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(_QUEUE_FULL_WAIT_S)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise too_large(topic, size, self.max_message_bytes) from None
                raise _unavailable(f"Kafka producer: {exc}") from exc
        self._producer.poll(0)  # serve delivery callbacks of earlier messages without waiting

    def _delivered(self, error: KafkaError | None, _message) -> None:
        if error is not None:
            with self._failure_lock:
                self._failures.append(error)

    def flush(self, timeout_s: float | None = None) -> None:
        remaining = self._producer.flush(-1 if timeout_s is None else timeout_s)
        if remaining:
            raise _unavailable(f"Kafka producer: {remaining} message(s) not acknowledged in time")
        with self._failure_lock:
            failures, self._failures = self._failures, []
        if failures:
            raise _unavailable(f"Kafka producer: {len(failures)} message(s) not delivered: {failures[0].str()}")

    def close(self) -> None:
        self._producer.flush(10)


class ConfluentBusConsumer(ConsumerClient):
    def __init__(self, settings: KafkaSettings, topics: list[str], group: str) -> None:
        self._consumer = Consumer(
            {
                **_common(settings),
                "group.id": group,
                "enable.auto.commit": False,  # at-least-once: the worker commits after the handler succeeded
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(settings.session_timeout_ms // 3, 100),
                # Any message up to the limit fits in one fetch.
                "max.partition.fetch.bytes": settings.max_message_bytes,
                "fetch.max.bytes": max(settings.max_message_bytes, FETCH_MAX_BYTES),
                "receive.message.max.bytes": max(settings.max_message_bytes, FETCH_MAX_BYTES) + 512,
            }
        )
        # assignment() is asked from other threads while the worker blocks in consume(), and librdkafka's own
        # assignment call waits on the handle meanwhile; the rebalance callbacks (run inside consume()) keep a copy.
        self._owned_lock = threading.Lock()
        self._owned: set[TopicPartition] = set()
        self._consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)

    def _assigned(self, _consumer, partitions: list[CkTopicPartition]) -> None:
        with self._owned_lock:
            self._owned |= {(tp.topic, tp.partition) for tp in partitions}

    def _revoked(self, _consumer, partitions: list[CkTopicPartition]) -> None:
        with self._owned_lock:
            self._owned -= {(tp.topic, tp.partition) for tp in partitions}

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        records = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        messages = []
        for record in records:
            error = record.error()
            if error is not None:
                if error.fatal():
                    raise _unavailable(f"Kafka consumer: {error.str()}")
                log.warning("kafka consumer error", extra={"error": error.str()})
                continue
            messages.append(
                Message(
                    topic=record.topic(),
                    partition=record.partition(),
                    offset=record.offset(),
                    key=record.key(),
                    value=record.value() or b"",
                    headers={k: (v or b"").decode(errors="replace") for k, v in (record.headers() or [])},
                )
            )
        return messages

    def pause(self) -> None:
        # Called from the worker's own thread, between consume() calls: the handle's assignment is safe to ask here.
        self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(self._consumer.assignment())

    def keep_alive(self) -> None:
        """Consume while paused, so the group keeps this member (max.poll.interval.ms). A partition assigned
        meanwhile is not paused yet and may return records: rewind to them, so none is skipped, and pause it too."""
        first: dict[TopicPartition, int] = {}
        for record in self._consumer.consume(num_messages=100, timeout=0):
            if record.error() is None:
                tp = (record.topic(), record.partition())
                first[tp] = min(first.get(tp, record.offset()), record.offset())
        for (topic, partition), offset in first.items():
            self._consumer.seek(CkTopicPartition(topic, partition, offset))
        self.pause()

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self._consumer.commit(
                offsets=[CkTopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            # As in kafka.py: a rebalance took the partitions; the new owner re-reads from the last commit.
            log.warning("commit rejected; messages will be redelivered", extra={"error": str(exc)})

    def assignment(self) -> set[TopicPartition]:
        with self._owned_lock:
            return set(self._owned)

    def lag(self) -> dict[TopicPartition, int]:
        lag = {}
        owned = self._consumer.assignment()
        for tp in self._consumer.position(owned) if owned else []:
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                lag[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
        return lag

    def close(self) -> None:
        self._consumer.close()


class ConfluentBus(Bus):
    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._known_topics: set[str] = set()
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None

    def producer(self) -> Producer:
        return ConfluentBusProducer(self.settings, self)

    def consumer(self, topics: list[str], group: str) -> ConsumerClient:
        self.ensure_topics(topics)
        return ConfluentBusConsumer(self.settings, topics, group)

    def ensure_topics(self, topics: list[str]) -> None:
        with self._lock:
            ensure_known_topics(self._known_topics, topics, self._existing_topics, self._create_topic)

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(_common(self.settings))
        return self._admin

    def _existing_topics(self) -> set[str]:
        try:
            metadata = self._admin_client().list_topics(timeout=self.settings.connect_timeout_ms / 1000)
        except KafkaException as exc:
            raise _unavailable(
                f"Kafka admin: no broker answered at {self.settings.bootstrap} within "
                f"{self.settings.connect_timeout_ms / 1000:.0f}s ({exc})"
            ) from exc
        return set(metadata.topics)

    def _create_topic(self, topic: str) -> None:
        futures = self._admin_client().create_topics(
            [NewTopic(topic, num_partitions=self.settings.partitions, replication_factor=1)],
            request_timeout=self.settings.request_timeout_ms / 1000,
        )
        try:
            futures[topic].result()
            log.info("created topic", extra={"topic": topic, "partitions": self.settings.partitions})
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return  # another process won the race
            raise _unavailable(f"Kafka admin: could not create topic {topic!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._admin = None  # AdminClient has no close(); dropping it releases its handle
