"""`tubelens dlq list|show|replay` against tansu, as an operator runs it: a real process, its output, its counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY

from tests.buskit import Recorder, publish_discovered, running, wait_until
from tubelens import events
from tubelens.bus import Message, Worker
from tubelens.bus.kafka import KafkaBus
from tubelens.errors import InvalidInput
from tubelens.objects.local import LocalObjectStore
from tubelens.settings import KafkaSettings


def tubelens(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("tubelens")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_dead_letters_are_listed_shown_and_replayed_once(broker, tmp_path: Path, unique: str) -> None:
    topic, group = f"dlqcli-{unique}", f"g-{unique}"
    bus = KafkaBus(KafkaSettings(bootstrap=broker.address, partitions=2, session_timeout_ms=6000))
    store = LocalObjectStore(tmp_path / "objects", "tubelens")
    store.ensure_bucket()
    sent = publish_discovered(bus, topic, "v1", 1)
    refuse = True

    def handle(message: Message) -> None:
        if refuse:
            raise InvalidInput("the handler refused it")

    replayed = Recorder()
    watcher = Worker(bus, [topic], group + "-watch", replayed.handler("w"), service="test", seen_ids=0)
    with running(Worker(bus, [topic], group, handle, service="test", claims=store), watcher):
        wait_until(lambda: replayed.count() == 1, timeout=60, what="the original seen")
        labels = {"service": "test", "topic": topic, "group": group, "error": "INVALID_INPUT"}
        wait_until(lambda: REGISTRY.get_sample_value("tubelens_bus_messages_dead_lettered_total", labels) == 1,
                   timeout=60, what="one dead letter")
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("TUBELENS_")
        } | {
            "TUBELENS_ENV_FILE": str(tmp_path / "absent.env"),
            "TUBELENS_KAFKA__BOOTSTRAP": broker.address,
            "TUBELENS_OBJECTS": "local",
            "TUBELENS_LOCAL__ROOT": str(tmp_path / "objects"),
        }
        listed = tubelens("dlq", "list", topic, env=env)
        assert listed.returncode == 0, listed.stderr
        [line] = [json.loads(text) for text in listed.stdout.splitlines()]
        assert line["reason"] == "the handler refused it" and line["key"] == "v1" and line["claim"]
        shown = tubelens("dlq", "show", topic, str(line["dlq_offset"]), env=env)
        assert shown.returncode == 0 and json.loads(shown.stdout)["headers"]["event_id"] == sent.event_id
        refuse = False
        first = tubelens("dlq", "replay", topic, env=env)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == {"replayed": 1, "missing_bytes": 0}
        again = tubelens("dlq", "replay", topic, env=env)
        assert json.loads(again.stdout) == {"replayed": 0, "missing_bytes": 0}  # idempotent
        replayed.wait_for(2)
    original, copy = (env for _, env, _ in replayed.seen)
    assert copy.event_id == original.event_id == sent.event_id  # the original bytes, the original id
    assert events.encode(copy) == events.encode(original)
    bus.close()
