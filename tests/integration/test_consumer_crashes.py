"""A consuming service process over the real broker: killed or stopped mid-stream, it loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.buskit import discovered, wait_until
from tubelens import events
from tubelens.bus.kafka import KafkaBus
from tubelens.devtools.servers import ServerProcess
from tubelens.settings import KafkaSettings

BATCH = 20


@pytest.fixture
def topic(broker: ServerProcess, unique: str) -> str:
    return f"crash-{unique}"


def publish(broker: ServerProcess, topic: str, count: int) -> set[str]:
    bus = KafkaBus(KafkaSettings(bootstrap=broker.address, partitions=4))
    producer = bus.producer()
    for seq in range(count):
        envelope = events.wrap(discovered(f"video-{seq}", seq), producer="test")
        producer.publish(topic, events.encode(envelope), key=f"video-{seq}")
    producer.flush()
    producer.close()
    bus.close()
    return {f"video video-{seq} #{seq}" for seq in range(count)}


def start_recorder(broker: ServerProcess, topic: str, out: Path, log: Path, delay_ms: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "TUBELENS_ENV_FILE": str(out.parent / "no-such.env"),
        "TUBELENS_SERVICE": "recorder",
        "TUBELENS_BUS": "kafka",
        "TUBELENS_OBJECTS": "local",
        "TUBELENS_METRICS_PORT": "0",
        "TUBELENS_KAFKA__BOOTSTRAP": broker.address,
        "TUBELENS_KAFKA__PARTITIONS": "4",
        "TUBELENS_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "TUBELENS_CONSUMER__BATCH_SIZE": str(BATCH),
        "RECORDER_TOPIC": topic,
        "RECORDER_OUT": str(out),
        "RECORDER_DELAY_MS": str(delay_ms),
    }
    with open(log, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.recorder_service"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )


def scrape_processed(log: Path, topic: str) -> float:
    """tubelens_bus_messages_processed_total for `topic`, read from the /metrics port the service logged."""
    [port] = [json.loads(line)["port"] for line in log.read_text().splitlines() if '"metrics listening"' in line]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "tubelens_bus_messages_processed_total" and sample.labels["topic"] == topic
    )


def recorded(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


@contextmanager
def recorder(broker: ServerProcess, topic: str, tmp_path: Path, *, delay_ms: int, stop_with: signal.Signals):
    """A recorder process that is stopped with `stop_with` when the block ends, however it ends."""
    proc = start_recorder(broker, topic, tmp_path / "seen.txt", tmp_path / "recorder.log", delay_ms)
    try:
        yield proc
    finally:
        proc.send_signal(stop_with)
        proc.wait(timeout=30)


def test_a_consumer_killed_with_sigkill_mid_stream_and_restarted_loses_nothing(
    broker: ServerProcess, topic: str, tmp_path: Path
) -> None:
    expected = publish(broker, topic, 1000)
    out = tmp_path / "seen.txt"
    with recorder(broker, topic, tmp_path, delay_ms=5, stop_with=signal.SIGKILL):
        wait_until(lambda: len(recorded(out)) >= 200, timeout=60, what="200 events handled before the kill")
    assert len(recorded(out)) < 1000, "the kill should land mid-stream"

    with recorder(broker, topic, tmp_path, delay_ms=0, stop_with=signal.SIGTERM) as second:
        wait_until(lambda: set(recorded(out)) >= expected, timeout=90, what="every event handled after restart")
    assert second.returncode == 0, (tmp_path / "recorder.log").read_text()[-2000:]

    seen = recorded(out)
    assert set(seen) == expected
    redelivered = len(seen) - len(expected)
    # At-least-once: only what was handled but not yet committed when the process died comes again.
    assert redelivered <= BATCH, f"{redelivered} redeliveries for a kill mid-batch of {BATCH}"


def test_sigterm_finishes_the_message_in_hand_commits_and_exits_cleanly(
    broker: ServerProcess, topic: str, tmp_path: Path
) -> None:
    expected = publish(broker, topic, 500)
    out, log = tmp_path / "seen.txt", tmp_path / "recorder.log"
    with recorder(broker, topic, tmp_path, delay_ms=10, stop_with=signal.SIGTERM) as first:
        wait_until(lambda: len(recorded(out)) >= 100, timeout=60, what="100 events handled")
        processed = scrape_processed(log, topic)
        assert processed >= 100 - BATCH, "the service's /metrics counts what it handled"
    assert first.returncode == 0, log.read_text()[-2000:]
    assert '"msg": "stop requested"' in log.read_text()
    assert len(recorded(out)) < 500

    with recorder(broker, topic, tmp_path, delay_ms=0, stop_with=signal.SIGTERM) as second:
        wait_until(lambda: set(recorded(out)) >= expected, timeout=90, what="the rest handled by the next process")
    assert second.returncode == 0

    counts = Counter(recorded(out))
    assert set(counts) == expected
    assert max(counts.values()) == 1, "a graceful stop commits everything it handled: no redelivery"
