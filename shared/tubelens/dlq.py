"""`tubelens dlq list|show|replay TOPIC`: what was dead-lettered from a topic, and putting it back.

`replay` re-publishes each dead letter's original bytes (from the claim check, or inline) to the original topic
with the original key and headers, and commits its place in the dead-letter topic under the group
`tubelens-dlq-replay`: a second replay publishes only letters that arrived since. The event ids are the original
ones, so a consumer that had applied an event already skips it.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Iterator

from tubelens import events
from tubelens.bus import Bus, Message, dlq_topic, open_bus
from tubelens.errors import InvalidInput, NotFound
from tubelens.settings import load_settings
from tubelens.v1 import events_pb2

REPLAY_GROUP = "tubelens-dlq-replay"
IDLE_S = 3.0  # no new letter for this long after joining: the end of the topic


def add_commands(commands) -> None:
    dlq = commands.add_parser("dlq", help="inspect and replay dead-lettered messages")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in (
        ("list", "one line per dead letter of TOPIC"),
        ("show", "one dead letter of TOPIC in full (by its offset in TOPIC.dlq)"),
        ("replay", "re-publish the original bytes of TOPIC's dead letters to TOPIC; prints counts"),
    ):
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("topic", metavar="TOPIC", help="the original topic, e.g. videos.discovered")
        if name == "show":
            parser.add_argument("offset", type=int, help="offset of the letter in TOPIC.dlq")
        parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    bus = open_bus(settings)
    try:
        if args.action == "replay":
            from tubelens.objects import open_store

            counts = replay(bus, args.topic, open_store(settings))
            print(json.dumps(counts))
            return 0
        letters = list(read_letters(bus, args.topic, f"tubelens-dlq-read-{uuid.uuid4().hex[:8]}", commit=False))
        if args.action == "list":
            for message, letter in letters:
                print(json.dumps(summary(message, letter)))
            return 0
        for message, letter in letters:
            if message.offset == args.offset:
                print(json.dumps(summary(message, letter) | {"headers": dict(letter.headers)}, indent=2))
                return 0
        raise NotFound(f"no dead letter at offset {args.offset} of {dlq_topic(args.topic)}", field="offset")
    finally:
        bus.close()


def summary(message: Message, letter: events_pb2.DeadLetter) -> dict:
    return {
        "dlq_partition": message.partition,
        "dlq_offset": message.offset,
        "original": f"{letter.original_topic}/{letter.partition}/{letter.offset}",
        "key": letter.key.decode(errors="replace"),
        "group": letter.consumer_group,
        "error_type": letter.error_type,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "size": letter.value_size or len(letter.value),
        "claim": letter.value_ref.key,
    }


def read_letters(bus: Bus, topic: str, group: str, *, commit: bool) -> Iterator[tuple[Message, events_pb2.DeadLetter]]:
    """Every dead letter of `topic` the group has not committed, until the topic stays idle for IDLE_S."""
    consumer = bus.consumer([dlq_topic(topic)], group)
    try:
        idle_since = None  # the clock starts once the group handed this member its partitions
        while idle_since is None or time.monotonic() - idle_since < IDLE_S:
            batch = consumer.poll(0.5, 500)
            if idle_since is None and consumer.assignment():
                idle_since = time.monotonic()
            if not batch:
                continue
            idle_since = time.monotonic()
            for message in batch:
                envelope = events.decode(message.value)
                if envelope.WhichOneof("payload") != "dead_letter":
                    raise InvalidInput(f"{message.topic}/{message.partition}/{message.offset} is not a dead letter")
                yield message, envelope.dead_letter
                if commit:
                    consumer.commit({(message.topic, message.partition): message.offset + 1})
    finally:
        consumer.close()


def original_bytes(letter: events_pb2.DeadLetter, store) -> bytes:
    if letter.value_ref.key:
        return store.get(letter.value_ref.key)
    return letter.value


def replay(bus: Bus, topic: str, store) -> dict[str, int]:
    """Re-publish every letter not replayed yet; each is flushed before its place is committed (at-least-once)."""
    producer = bus.producer()
    counts = {"replayed": 0, "missing_bytes": 0}
    try:
        for _message, letter in read_letters(bus, topic, REPLAY_GROUP, commit=True):
            value = original_bytes(letter, store)
            if not value:
                counts["missing_bytes"] += 1
                continue
            producer.publish(letter.original_topic or topic, value, key=letter.key or None, headers=letter.headers)
            producer.flush()
            counts["replayed"] += 1
    finally:
        producer.close()
    return counts
