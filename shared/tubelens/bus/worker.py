"""The consume loop, written once for every backend: at-least-once with bounded retries and a dead-letter queue.

For each polled batch: handle every message (retrying retryable failures with exponential backoff), dead-letter
the ones that cannot succeed (the reason and a claim check of the original bytes go to `<topic>.dlq`), flush
whatever the handler and the DLQ published, and only then commit. A crash anywhere before the commit means
redelivery, never loss.

Two kinds of failure are kept apart. A failure of the message itself (bad input, a bug) spends one of its
`max_attempts`; past them it is dead-lettered. A dependency that is down (DependencyUnavailable: the object store,
the broker, TorchServe) is nobody's fault: consuming pauses, the message stays uncommitted and is retried with capped
backoff for as long as the outage lasts, readiness says not ready, and nothing is dead-lettered for it.

Event ids are derived from their cause (`tubelens.events`), so a redelivered input's outputs carry the ids they had
the first time: ids already applied here (a bounded set) are skipped, so a duplicate has no second effect.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tubelens import events, metrics
from tubelens.bus.base import Bus, ConsumerClient, Message, Producer, TopicPartition, dlq_topic
from tubelens.errors import DependencyUnavailable, TooLarge, TubelensError
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
    outage_backoff_max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff: spreads retries of many consumers hitting one failing dependency."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def outage_delay(self, retry: int) -> float:
        """The wait before the `retry`th retry while a dependency is down: exponential, capped, without end."""
        ceiling = min(self.outage_backoff_max_s, self.backoff_initial_s * 2 ** min(retry - 1, 30))
        return random.uniform(ceiling / 2, ceiling)


# Dead-letter reasons are for people and the DLQ must stay small: a longer one is cut.
MAX_REASON_CHARS = 2000
CLAIM_PREFIX = "dead-letters"


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
        claims: Any | None = None,
        seen_ids: int = 100_000,
        on_readiness: Callable[[bool], None] | None = None,
    ) -> None:
        """`claims` (an ObjectStore) keeps the original bytes of dead letters; `seen_ids` bounds the set of applied
        event ids; `on_readiness(ready)` hears when consuming pauses for an outage and resumes."""
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
        self.claims = claims
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_limit = seen_ids
        self.on_readiness = on_readiness
        self.paused = False
        self.error: BaseException | None = None  # why the consume loop died, when it did
        self._stop = threading.Event()
        self._consumer: ConsumerClient | None = None
        self.ready = threading.Event()

    def stop(self) -> None:
        """Finish the message in hand, commit what is done, leave the group. Safe from a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def serving(self) -> bool:
        """Ready: consuming, not paused for an outage, not dead."""
        return self.ready.is_set() and not self.paused and self.error is None

    def raise_if_dead(self) -> None:
        """Re-raise what killed the consume loop (from a thread that watches it)."""
        if self.error is not None:
            raise RuntimeError(f"the consume loop of {self.group} died: {self.error!r}") from self.error

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            self.ready.clear()
            self._tell_readiness(False)
            log.critical("consume loop died", extra={"group": self.group, "error": repr(exc)})
            raise

    def _run(self) -> None:
        self.bus.ensure_topics(self.topics + [dlq_topic(t) for t in self.topics])
        self._consumer = self.bus.consumer(self.topics, self.group)
        self.ready.set()
        self._tell_readiness(True)
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
        thread = threading.Thread(target=self._run_in_thread, name=f"worker-{self.group}", daemon=True)
        thread.start()
        return thread

    def _run_in_thread(self) -> None:
        # What killed the loop is in self.error, for the thread that watches it (raise_if_dead).
        with contextlib.suppress(BaseException):
            self.run()

    def _process(self, batch: list[Message]) -> None:
        done: dict[TopicPartition, int] = {}
        try:
            for message in batch:
                if self._stop.is_set():
                    break
                self._handle(message)
                done[(message.topic, message.partition)] = message.offset + 1
            if done and self.before_commit is not None:
                # Effects first, then the offsets. A handler's batch work may meet an outage too: it is redone
                # (idempotently) once the dependency is back.
                self._until_available(self.before_commit)
        except _Stopped:
            if self.before_commit is not None:
                return  # its batch work was not done: nothing is committed, all of it is redelivered
        if done:
            # A failed flush is not retried: the messages it lost are gone from the producer, so committing after
            # a retry would lose them. It ends the loop (and the process) instead, and the batch is redelivered.
            self.producer.flush()
            self._consumer.commit(done)

    def _handle(self, message: Message) -> None:
        labels = (self.service, message.topic, self.group)
        started = time.perf_counter()
        event_id = message.headers.get("event_id", "")
        with log_context(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=(message.key or b"").decode(errors="replace"),
        ):
            if event_id and event_id in self._seen:
                metrics.BUS_DUPLICATES.labels(*labels).inc()
                log.info("duplicate event skipped", extra={"event_id": event_id})
                return
            attempt = outage = 0
            while True:
                try:
                    self._check_size(message)
                    self.handler(message)
                except DependencyUnavailable as exc:
                    # Not the message's fault: pause, keep it, retry until the dependency is back.
                    metrics.BUS_FAILED.labels(*labels, reason_of(exc)).inc()
                    outage += 1
                    self._pause(exc)
                    self._wait(self.retry.outage_delay(outage), exc)
                except Exception as exc:  # noqa: BLE001 - every failure is either retried or dead-lettered
                    metrics.BUS_FAILED.labels(*labels, reason_of(exc)).inc()
                    attempt += 1
                    if not is_retryable(exc) or attempt >= self.retry.max_attempts:
                        self._until_available(lambda e=exc, n=attempt: self._dead_letter(message, e, n))
                        break
                    delay = self.retry.delay(attempt)
                    log.warning(
                        "handler failed; retrying",
                        extra={"attempt": attempt, "delay_s": round(delay, 3), "error": repr(exc)},
                    )
                    self._wait(delay, exc)
                else:
                    metrics.BUS_PROCESSED.labels(*labels).inc()
                    self._remember(event_id)
                    break
            self._resume()
        metrics.BUS_HANDLE_SECONDS.labels(*labels).observe(time.perf_counter() - started)

    def _check_size(self, message: Message) -> None:
        """A message over the limit was published past a misconfigured producer: it fails here, dead-lettered."""
        limit = self.producer.max_message_bytes
        if limit is not None and len(message.value) > limit:
            raise TooLarge(
                f"the message is {len(message.value)} bytes, over the {limit}-byte message limit "
                "(TUBELENS_KAFKA__MAX_MESSAGE_BYTES)",
                field="value",
            )

    def _remember(self, event_id: str) -> None:
        if not event_id or self._seen_limit <= 0:
            return
        self._seen[event_id] = None
        if len(self._seen) > self._seen_limit:
            self._seen.popitem(last=False)

    def _until_available(self, step: Callable[[], None]) -> None:
        """Run `step`, pausing and retrying for as long as a dependency it needs is unavailable."""
        outage = 0
        while True:
            try:
                step()
            except DependencyUnavailable as exc:
                outage += 1
                self._pause(exc)
                self._wait(self.retry.outage_delay(outage), exc)
            else:
                self._resume()
                return

    def _wait(self, delay: float, cause: BaseException) -> None:
        """Sleep `delay` seconds, keeping the group membership alive; _Stopped when a stop comes meanwhile."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(left, 1.0)):
                raise _Stopped from cause
            if self.paused and self._consumer is not None:
                self._consumer.keep_alive()

    def _pause(self, exc: DependencyUnavailable) -> None:
        if self.paused:
            log.warning("still unavailable; consuming stays paused", extra={"dependency": exc.dependency})
            return
        self.paused = True
        if self._consumer is not None:
            self._consumer.pause()
        metrics.BUS_PAUSED.labels(self.service, self.group).set(1)
        metrics.BUS_PAUSES.labels(self.service, self.group, exc.dependency).inc()
        self._tell_readiness(False)
        log.warning(
            "dependency unavailable; consuming paused", extra={"dependency": exc.dependency, "error": str(exc)}
        )

    def _resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self._consumer is not None:
            self._consumer.resume()
        metrics.BUS_PAUSED.labels(self.service, self.group).set(0)
        self._tell_readiness(True)
        log.info("dependency back; consuming resumed")

    def _tell_readiness(self, ready: bool) -> None:
        if self.on_readiness is not None:
            self.on_readiness(ready)

    def _dead_letter(self, message: Message, exc: BaseException, attempts: int) -> None:
        reason = str(exc) or type(exc).__name__
        if is_retryable(exc):
            reason = f"gave up after {attempts} attempts: {reason}"
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + " [cut]"
        letter = events_pb2.DeadLetter(
            original_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key or b"",
            headers=dict(message.headers),
            reason=reason,
            error_type=type(exc).__name__,
            attempts=attempts,
            consumer_group=self.group,
            value_size=len(message.value),
        )
        self._keep_original(letter, message)
        letter.failed_at.GetCurrentTime()
        # Derived from the input, so dead-lettering a redelivered message again gives the same id.
        cause = message.headers.get("event_id") or f"{message.topic}/{message.partition}/{message.offset}"
        envelope = events.wrap(letter, producer=self.service, cause=f"{cause}/{self.group}", key=message.key)
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

    def _keep_original(self, letter: events_pb2.DeadLetter, message: Message) -> None:
        """The claim check: the original bytes in the object store (content-addressed, so a second dead letter of
        the same bytes stores nothing new), their reference in the letter. Inline only without a store."""
        if self.claims is not None:
            info = self.claims.put_content(
                message.value, prefix=CLAIM_PREFIX, content_type="application/octet-stream", suffix=".bin"
            )
            letter.value_ref.CopyFrom(info.to_ref())
            return
        limit = self.producer.max_message_bytes
        if limit is None or len(message.value) * 2 < limit:
            letter.value = message.value
        else:
            log.error("no object store for the claim check: the original bytes are not kept", extra={})

    def _report_lag(self) -> None:
        for (topic, partition), lag in self._consumer.lag().items():
            metrics.BUS_LAG.labels(self.service, topic, self.group, str(partition)).set(lag)
