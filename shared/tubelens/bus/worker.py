"""The consume loop, written once for every backend: at-least-once with bounded retries and a dead-letter queue.

For each polled batch: handle every message (retrying retryable failures with exponential backoff), dead-letter
the ones that cannot succeed (the original bytes plus the reason go to `<topic>.dlq`), flush whatever the handler
and the DLQ published, and only then commit. A crash anywhere before the commit means redelivery, never loss.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from tubelens import events, metrics
from tubelens.bus.base import Bus, ConsumerClient, Message, Producer, TopicPartition, dlq_topic
from tubelens.errors import TubelensError
from tubelens.logs import log_context
from tubelens.rpc import reason_of
from tubelens.v1 import events_pb2

log = logging.getLogger(__name__)

Handler = Callable[[Message], None]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff: spreads retries of many consumers hitting one failing dependency."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def is_retryable(exc: BaseException) -> bool:
    """Typed errors say so themselves; unknown exceptions get the benefit of the doubt (bounded)."""
    if isinstance(exc, TubelensError):
        return exc.retryable
    return True


class _Stopped(Exception):
    """Stop was requested while a message waited for its next attempt; it stays uncommitted."""


class Worker:
    def __init__(
        self,
        bus: Bus,
        topics: list[str],
        group: str,
        handler: Handler,
        *,
        service: str,
        producer: Producer | None = None,
        retry: RetryPolicy = RetryPolicy(),
        max_batch: int = 500,
        before_commit: Callable[[], None] | None = None,
        poll_timeout_s: float = 0.5,
    ) -> None:
        self.bus = bus
        self.topics = list(topics)
        self.group = group
        self.handler = handler
        self.service = service
        self.producer = producer or bus.producer()
        self._owns_producer = producer is None
        self.retry = retry
        self.max_batch = max_batch
        # For handlers that buffer effects across a batch (an index shard): made durable before the offsets move.
        self.before_commit = before_commit
        self.poll_timeout_s = poll_timeout_s
        self._stop = threading.Event()
        self._consumer: ConsumerClient | None = None
        self.ready = threading.Event()

    def stop(self) -> None:
        """Finish the message in hand, commit what is done, leave the group. Safe from a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        self.bus.ensure_topics(self.topics + [dlq_topic(t) for t in self.topics])
        self._consumer = self.bus.consumer(self.topics, self.group)
        self.ready.set()
        log.info("consuming", extra={"topics": self.topics, "group": self.group})
        try:
            while not self._stop.is_set():
                batch = self._consumer.poll(self.poll_timeout_s, self.max_batch)
                if batch:
                    self._process(batch)
                self._report_lag()
        finally:
            self._consumer.close()
            if self._owns_producer:
                self.producer.close()
            log.info("stopped consuming", extra={"topics": self.topics, "group": self.group})

    def assignment(self) -> set[TopicPartition]:
        return self._consumer.assignment() if self._consumer is not None else set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"worker-{self.group}", daemon=True)
        thread.start()
        return thread

    def _process(self, batch: list[Message]) -> None:
        done: dict[TopicPartition, int] = {}
        try:
            for message in batch:
                if self._stop.is_set():
                    break
                self._handle(message)
                done[(message.topic, message.partition)] = message.offset + 1
        except _Stopped:
            pass
        finally:
            if done:
                # Effects first, then the offsets: what the handler published must be durable before we move on.
                if self.before_commit is not None:
                    self.before_commit()
                self.producer.flush()
                self._consumer.commit(done)

    def _handle(self, message: Message) -> None:
        labels = (self.service, message.topic, self.group)
        started = time.perf_counter()
        with log_context(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=(message.key or b"").decode(errors="replace"),
        ):
            for attempt in range(1, self.retry.max_attempts + 1):
                try:
                    self.handler(message)
                except Exception as exc:  # noqa: BLE001 - every failure is either retried or dead-lettered
                    metrics.BUS_FAILED.labels(*labels, reason_of(exc)).inc()
                    if not is_retryable(exc) or attempt == self.retry.max_attempts:
                        self._dead_letter(message, exc, attempt)
                        break
                    delay = self.retry.delay(attempt)
                    log.warning(
                        "handler failed; retrying",
                        extra={"attempt": attempt, "delay_s": round(delay, 3), "error": repr(exc)},
                    )
                    if self._stop.wait(delay):
                        raise _Stopped from exc
                else:
                    metrics.BUS_PROCESSED.labels(*labels).inc()
                    break
        metrics.BUS_HANDLE_SECONDS.labels(*labels).observe(time.perf_counter() - started)

    def _dead_letter(self, message: Message, exc: BaseException, attempts: int) -> None:
        reason = str(exc) or type(exc).__name__
        if is_retryable(exc):
            reason = f"gave up after {attempts} attempts: {reason}"
        letter = events_pb2.DeadLetter(
            original_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key or b"",
            value=message.value,
            headers=dict(message.headers),
            reason=reason,
            error_type=type(exc).__name__,
            attempts=attempts,
            consumer_group=self.group,
        )
        letter.failed_at.GetCurrentTime()
        envelope = events.wrap(letter, producer=self.service)
        self.producer.publish(
            dlq_topic(message.topic),
            events.encode(envelope),
            key=message.key,
            headers=events.headers_of(envelope),
        )
        metrics.BUS_DEAD_LETTERED.labels(self.service, message.topic, self.group, reason_of(exc)).inc()
        log.error(
            "dead-lettered",
            extra={
                "reason": reason,
                "error_type": type(exc).__name__,
                "trace": "".join(traceback.format_exception_only(exc)).strip(),
            },
        )

    def _report_lag(self) -> None:
        for (topic, partition), lag in self._consumer.lag().items():
            metrics.BUS_LAG.labels(self.service, topic, self.group, str(partition)).set(lag)
