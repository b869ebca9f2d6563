"""Events travel as validated envelopes on the topic that their payload type names."""

from __future__ import annotations

import pytest

from tubelens import events
from tubelens.bus.memory import MemoryBus
from tubelens.errors import InvalidInput
from tubelens.v1 import events_pb2


def test_an_envelope_round_trips_with_its_metadata() -> None:
    payload = events_pb2.VideoDiscovered(video_id="dQw4w9WgXcQ", title="t", tags=["a", "b"])
    envelope = events.wrap(payload, producer="crawler", trace_id="trace-1")
    decoded = events.decode(events.encode(envelope))
    assert decoded.video_discovered == payload
    assert decoded.event_type == "tubelens.v1.VideoDiscovered"
    assert decoded.schema_version == events.SCHEMA_VERSION
    assert decoded.trace_id == "trace-1" and decoded.producer == "crawler"
    assert len(decoded.event_id) == 32 and decoded.produced_at.seconds > 0


def test_every_payload_type_has_a_topic() -> None:
    payloads = {f.name for f in events_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields}
    assert payloads - set(events.TOPIC_OF_PAYLOAD) == {"dead_letter"}, "dead letters go to <topic>.dlq instead"


def envelope_bytes(**fields) -> bytes:
    """A serialized envelope around a valid VideoDiscovered, with `fields` overriding the valid defaults."""
    valid = {
        "event_id": "x",
        "schema_version": 1,
        "event_type": "tubelens.v1.VideoDiscovered",
        "video_discovered": events_pb2.VideoDiscovered(video_id="v"),
    }
    return events_pb2.Envelope(**{k: v for k, v in {**valid, **fields}.items() if v is not None}).SerializeToString()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xff\xff", "not a tubelens.v1.Envelope"),
        (envelope_bytes(video_discovered=None, event_type=None), "no payload"),
        (envelope_bytes(event_type="tubelens.v1.ModelTrained"), "does not match payload tubelens.v1.VideoDiscovered"),
        (envelope_bytes(schema_version=99), "unsupported schema_version 99"),
        (envelope_bytes(event_id=None), "no event_id"),
    ],
)
def test_malformed_envelopes_are_invalid_input_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        events.decode(data)


def test_publish_routes_by_payload_type_keys_by_video_and_sets_headers() -> None:
    bus = MemoryBus()
    stats = events_pb2.StatsSnapshot(video_id="vid1", view_count=1234)
    envelope = events.publish(bus.producer(), stats, key="vid1", service="crawler", cause="stats/1h")
    [message] = bus.broker.read_all(events.VIDEOS_STATS)
    assert message.key == b"vid1"
    assert message.headers == {
        "event_type": "tubelens.v1.StatsSnapshot",
        "event_id": envelope.event_id,
        "trace_id": envelope.trace_id,
    }
    assert events.decode(message.value).stats_snapshot.view_count == 1234


def test_a_non_event_message_cannot_be_published() -> None:
    with pytest.raises(InvalidInput, match="not an event payload"):
        events.wrap(events_pb2.Frame(index=1), producer="x")
