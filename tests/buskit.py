"""Helpers for bus tests: run workers in threads and wait for what they record."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tubelens import events
from tubelens.bus import Bus, Message, RetryPolicy, Worker
from tubelens.v1 import events_pb2

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05)


def discovered(video_id: str, seq: int = 0) -> events_pb2.VideoDiscovered:
    return events_pb2.VideoDiscovered(video_id=video_id, channel_id="UCtest", title=f"video {video_id} #{seq}")


def publish_discovered(bus: Bus, topic: str, video_id: str, seq: int) -> events_pb2.Envelope:
    """Publish an event on `topic` (tests own their topics, so not the production topic name)."""
    envelope = events.wrap(discovered(video_id, seq), producer="test")
    producer = bus.producer()
    producer.publish(topic, events.encode(envelope), key=video_id, headers=events.headers_of(envelope))
    producer.flush()
    return envelope


class Recorder:
    """A handler that decodes envelopes and remembers what it saw, in order, per worker."""

    def __init__(self, on_message: Callable[[Message, events_pb2.Envelope], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, events_pb2.Envelope, Message]] = []
        self.on_message = on_message

    def handler(self, name: str) -> Callable[[Message], None]:
        def handle(message: Message) -> None:
            envelope = events.decode(message.value)
            if self.on_message:
                self.on_message(message, envelope)
            with self.lock:
                self.seen.append((name, envelope, message))

        return handle

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def titles(self) -> list[str]:
        with self.lock:
            return [env.video_discovered.title for _, env, _ in self.seen]

    def per_member(self) -> Counter:
        with self.lock:
            return Counter(name for name, _, _ in self.seen)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"saw {self.count()} of {n} messages within {timeout}s")
            time.sleep(0.02)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


@contextmanager
def running(*workers: Worker) -> Iterator[tuple[Worker, ...]]:
    threads = [w.start_thread() for w in workers]
    try:
        yield workers
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), "worker did not stop within 30 s"
