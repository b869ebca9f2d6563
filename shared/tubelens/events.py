"""Topics and the event envelope: how typed events become bus messages and back.

Every message on the bus is a `tubelens.v1.Envelope`. Decoding validates the envelope and raises InvalidInput
for anything malformed, which the worker dead-letters at once instead of retrying.

Event ids are derived, not random: a uuid5 over what caused the event (the input event's id, or for a root event
such as a discovery the fact observed), the event's type and its key. A redelivered input re-publishes its outputs
under the same ids, so a consumer can tell a duplicate from a new event (the worker skips ids it already applied).
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


# The namespace of every derived event id (uuid5 of the DNS namespace and the project's name).
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "events.tubelens")


def derived_id(cause: str, event_type: str, key: str | bytes | None) -> str:
    """The id of the event of `event_type` and `key` that `cause` produces: the same inputs, the same id.

    `cause` is the input event's id for an event a handler publishes, or a description of the observation for a root
    event (`discovered`, `stats/<slot>`)."""
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    return uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join((cause, event_type, key or ""))).hex


def wrap(
    payload: ProtoMessage, *, producer: str, trace_id: str = "", cause: str = "", key: str | bytes | None = None
) -> events_pb2.Envelope:
    """The envelope of `payload`. With a `cause` its id is derived (see `derived_id`); without one (tests, ad hoc
    tools) it is a random uuid4 and a re-publication cannot be recognised."""
    event_type = payload.DESCRIPTOR.full_name
    envelope = events_pb2.Envelope(
        event_id=derived_id(cause, event_type, key) if cause else uuid.uuid4().hex,
        event_type=event_type,
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
    producer: Producer, payload: ProtoMessage, *, key: str, service: str, cause: str, trace_id: str = ""
) -> events_pb2.Envelope:
    """Wrap `payload` and queue it on its topic, keyed (by video id) so one video's events stay in order. `cause`
    (the input event's id, or the observation of a root event) makes its id reproducible."""
    if not cause:
        raise ValueError("events.publish needs the cause of the event, so its id can be derived")
    envelope = wrap(payload, producer=service, trace_id=trace_id, cause=cause, key=key)
    topic = TOPIC_OF_PAYLOAD[payload_field(payload)]
    producer.publish(topic, encode(envelope), key=key, headers=headers_of(envelope))
    return envelope
