"""Topics and the event envelope: how typed events become bus messages and back.

Every message on the bus is a `tubelens.v1.Envelope`. Decoding validates the envelope and raises InvalidInput
for anything malformed, which the worker dead-letters at once instead of retrying.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from tubelens.bus.base import Producer
from tubelens.errors import InvalidInput
from tubelens.v1 import events_pb2

SCHEMA_VERSION = 1

VIDEOS_DISCOVERED = "videos.discovered"
VIDEOS_STATS = "videos.stats"
THUMBNAILS_STORED = "thumbnails.stored"
FRAMES_EXTRACTED = "frames.extracted"
EMBEDDINGS_COMPUTED = "embeddings.computed"
MODELS_TRAINED = "models.trained"

# payload field of the Envelope oneof -> the topic it travels on. Dead letters go to `<topic>.dlq` instead.
TOPIC_OF_PAYLOAD = {
    "video_discovered": VIDEOS_DISCOVERED,
    "stats_snapshot": VIDEOS_STATS,
    "thumbnail_stored": THUMBNAILS_STORED,
    "frames_extracted": FRAMES_EXTRACTED,
    "embedding_computed": EMBEDDINGS_COMPUTED,
    "model_trained": MODELS_TRAINED,
}
TOPICS = tuple(TOPIC_OF_PAYLOAD.values())

_PAYLOAD_FIELDS = {
    field.message_type.full_name: field.name
    for field in events_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields
}


def payload_field(payload: ProtoMessage) -> str:
    try:
        return _PAYLOAD_FIELDS[payload.DESCRIPTOR.full_name]
    except KeyError:
        raise InvalidInput(f"{payload.DESCRIPTOR.full_name} is not an event payload") from None


def wrap(payload: ProtoMessage, *, producer: str, trace_id: str = "", event_id: str = "") -> events_pb2.Envelope:
    """`event_id` defaults to a fresh one; a producer that may send the same fact twice (an import run again) passes
    one derived from the fact, so consumers see the same id both times."""
    envelope = events_pb2.Envelope(
        event_id=event_id or uuid.uuid4().hex,
        event_type=payload.DESCRIPTOR.full_name,
        schema_version=SCHEMA_VERSION,
        trace_id=trace_id or uuid.uuid4().hex,
        producer=producer,
    )
    envelope.produced_at.GetCurrentTime()
    getattr(envelope, payload_field(payload)).CopyFrom(payload)
    return envelope


def encode(envelope: events_pb2.Envelope) -> bytes:
    return envelope.SerializeToString()


def decode(data: bytes) -> events_pb2.Envelope:
    """Parse and validate one envelope; anything malformed is InvalidInput with the reason."""
    envelope = events_pb2.Envelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidInput(f"not a tubelens.v1.Envelope: {exc}") from None
    which = envelope.WhichOneof("payload")
    if which is None:
        raise InvalidInput("envelope has no payload")
    if envelope.schema_version != SCHEMA_VERSION:
        raise InvalidInput(f"unsupported schema_version {envelope.schema_version} (this build reads {SCHEMA_VERSION})")
    expected_type = getattr(envelope, which).DESCRIPTOR.full_name
    if envelope.event_type != expected_type:
        raise InvalidInput(f"event_type {envelope.event_type!r} does not match payload {expected_type}")
    if not envelope.event_id:
        raise InvalidInput("envelope has no event_id")
    return envelope


def headers_of(envelope: events_pb2.Envelope) -> Mapping[str, str]:
    """Routing facts as headers too, so tools can filter without decoding."""
    return {"event_type": envelope.event_type, "event_id": envelope.event_id, "trace_id": envelope.trace_id}


def publish(
    producer: Producer, payload: ProtoMessage, *, key: str, service: str, trace_id: str = ""
) -> events_pb2.Envelope:
    """Wrap `payload` and queue it on its topic, keyed (by video id) so one video's events stay in order."""
    envelope = wrap(payload, producer=service, trace_id=trace_id)
    topic = TOPIC_OF_PAYLOAD[payload_field(payload)]
    producer.publish(topic, encode(envelope), key=key, headers=headers_of(envelope))
    return envelope
