"""`tubelens_bus_messages_published_total`, counted once per message the broker confirmed.

A wrapper rather than a line in each backend: the count needs the publishing service's name, which only the
service knows, and it must follow `flush`, the moment publishing is confirmed (a message queued and then lost in a
failed flush was never published; the consumer's redelivery publishes it again, and that one counts).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping

from tubelens import metrics
from tubelens.bus.base import Producer


class CountedProducer(Producer):
    def __init__(self, inner: Producer, service: str) -> None:
        self.inner = inner
        self.service = service
        self.max_message_bytes = inner.max_message_bytes
        self._queued: Counter[str] = Counter()
        self._lock = threading.Lock()

    def publish(
        self, topic: str, value: bytes, *, key: str | bytes | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.inner.publish(topic, value, key=key, headers=headers)
        with self._lock:
            self._queued[topic] += 1

    def flush(self, timeout_s: float | None = None) -> None:
        # What was queued before this flush is what it confirms; what is queued meanwhile waits for the next one.
        with self._lock:
            confirming, self._queued = self._queued, Counter()
        self.inner.flush(timeout_s)
        for topic, count in confirming.items():
            metrics.BUS_PUBLISHED.labels(self.service, topic).inc(count)

    def close(self) -> None:
        # Every service flushes before it commits or exits; what close() still delivers goes uncounted rather
        # than turn a shutdown into a failure.
        self.inner.close()


def counted(producer: Producer, service: str) -> Producer:
    """`producer`, counting what it publishes under `service`."""
    return CountedProducer(producer, service)
