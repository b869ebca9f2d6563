"""Event-bus throughput: 1 KB events/s produced and consumed, through Kafka (tansu on loopback) over each client
(kafka-python, the default, and confluent-kafka), and in-process.

Run with `python -m tests.bench.bus`. Consumption is timed from the first message received to the last, so the
consumer-group join (about half the session timeout) is not counted; "worker" adds the production loop around
the raw consumer: per-message metrics and retry bookkeeping, a flush and a commit per batch. Two ratios: the
worker's consumption against its own raw client's, and each row's produce and worker consumption against
kafka-python's in the same run.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tubelens.bus import Bus, Message, Worker
from tubelens.bus.confluent import ConfluentBus
from tubelens.bus.kafka import KafkaBus
from tubelens.bus.memory import MemoryBus
from tubelens.devtools.servers import start_broker
from tubelens.settings import KafkaSettings

PAYLOAD = os.urandom(1024)
EVENTS = 50_000


def bench_produce(bus: Bus, topic: str, count: int) -> float:
    bus.ensure_topics([topic])
    producer = bus.producer()
    started = time.perf_counter()
    for seq in range(count):
        producer.publish(topic, PAYLOAD, key=f"video-{seq % 1000}")
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


def bench_raw_consume(bus: Bus, topic: str, count: int) -> float:
    consumer = bus.consumer([topic], f"raw-{uuid.uuid4().hex[:8]}")
    seen, first_at = 0, None
    while seen < count:
        batch = consumer.poll(1.0, 1000)
        if batch and first_at is None:
            first_at = time.perf_counter()
        seen += len(batch)
    elapsed = time.perf_counter() - first_at
    consumer.close()
    return count / elapsed


def bench_worker_consume(bus: Bus, topic: str, count: int) -> float:
    lock, seen, marks = threading.Lock(), [0], {}
    done = threading.Event()

    def handle(message: Message) -> None:
        with lock:
            seen[0] += 1
            marks.setdefault("first", time.perf_counter())
            if seen[0] == count:
                marks["last"] = time.perf_counter()
                done.set()

    worker = Worker(bus, [topic], f"worker-{uuid.uuid4().hex[:8]}", handle, service="bench", max_batch=500)
    thread = worker.start_thread()
    done.wait(timeout=600)
    worker.stop()
    thread.join()
    return count / (marks["last"] - marks["first"])


def bench(bus: Bus, name: str, count: int) -> dict:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    row = {"bus": name, "events": count, "produce_s": bench_produce(bus, topic, count)}
    row["consume_raw_s"] = bench_raw_consume(bus, topic, count)
    row["consume_worker_s"] = bench_worker_consume(bus, topic, count)
    return row


def print_table(rows: list[dict]) -> None:
    table = Table(title="event bus throughput (1 KB events per second; Kafka is tansu on loopback)")
    columns = ("bus", "events", "produce", "consume (raw)", "consume (worker)", "worker / raw",
               "produce / kafka-python", "worker / kafka-python")
    for column in columns:
        table.add_column(column, justify="left" if column == "bus" else "right")
    reference = rows[0]
    for row in rows:
        table.add_row(
            row["bus"], f"{row['events']:,}", f"{row['produce_s']:,.0f}", f"{row['consume_raw_s']:,.0f}",
            f"{row['consume_worker_s']:,.0f}", f"{row['consume_worker_s'] / row['consume_raw_s']:.2f}",
            f"{row['produce_s'] / reference['produce_s']:.2f}",
            f"{row['consume_worker_s'] / reference['consume_worker_s']:.2f}",
        )
    Console().print(table)


def main(count: int = EVENTS) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-bus-") as workdir:
        broker = start_broker(Path(workdir) / "broker")
        try:
            settings = KafkaSettings(bootstrap=broker.address, partitions=4, session_timeout_ms=6000)
            rows = []
            for name, bus in (
                ("kafka-python", KafkaBus(settings)),
                ("confluent-kafka", ConfluentBus(settings)),
                ("in-process", MemoryBus()),
            ):
                rows.append(bench(bus, name, count))
                bus.close()
        finally:
            broker.stop()
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
