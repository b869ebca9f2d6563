import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tubelens.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DiscoverySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCOVERY_SOURCE_UNSPECIFIED: _ClassVar[DiscoverySource]
    DISCOVERY_SOURCE_RSS: _ClassVar[DiscoverySource]
    DISCOVERY_SOURCE_PLAYLIST: _ClassVar[DiscoverySource]
    DISCOVERY_SOURCE_SEARCH: _ClassVar[DiscoverySource]

class EmbeddingSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBEDDING_SOURCE_UNSPECIFIED: _ClassVar[EmbeddingSource]
    EMBEDDING_SOURCE_THUMBNAIL: _ClassVar[EmbeddingSource]
    EMBEDDING_SOURCE_FRAMES: _ClassVar[EmbeddingSource]
DISCOVERY_SOURCE_UNSPECIFIED: DiscoverySource
DISCOVERY_SOURCE_RSS: DiscoverySource
DISCOVERY_SOURCE_PLAYLIST: DiscoverySource
DISCOVERY_SOURCE_SEARCH: DiscoverySource
EMBEDDING_SOURCE_UNSPECIFIED: EmbeddingSource
EMBEDDING_SOURCE_THUMBNAIL: EmbeddingSource
EMBEDDING_SOURCE_FRAMES: EmbeddingSource

class Envelope(_message.Message):
    __slots__ = ("event_id", "event_type", "schema_version", "produced_at", "trace_id", "producer", "video_discovered", "stats_snapshot", "thumbnail_stored", "frames_extracted", "embedding_computed", "model_trained", "dead_letter")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_AT_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    VIDEO_DISCOVERED_FIELD_NUMBER: _ClassVar[int]
    STATS_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_STORED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_EXTRACTED_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_COMPUTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_TRAINED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    schema_version: int
    produced_at: _timestamp_pb2.Timestamp
    trace_id: str
    producer: str
    video_discovered: VideoDiscovered
    stats_snapshot: StatsSnapshot
    thumbnail_stored: ThumbnailStored
    frames_extracted: FramesExtracted
    embedding_computed: EmbeddingComputed
    model_trained: ModelTrained
    dead_letter: DeadLetter
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., schema_version: _Optional[int] = ..., produced_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ..., producer: _Optional[str] = ..., video_discovered: _Optional[_Union[VideoDiscovered, _Mapping]] = ..., stats_snapshot: _Optional[_Union[StatsSnapshot, _Mapping]] = ..., thumbnail_stored: _Optional[_Union[ThumbnailStored, _Mapping]] = ..., frames_extracted: _Optional[_Union[FramesExtracted, _Mapping]] = ..., embedding_computed: _Optional[_Union[EmbeddingComputed, _Mapping]] = ..., model_trained: _Optional[_Union[ModelTrained, _Mapping]] = ..., dead_letter: _Optional[_Union[DeadLetter, _Mapping]] = ...) -> None: ...

class Thumbnail(_message.Message):
    __slots__ = ("name", "url", "width", "height")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    width: int
    height: int
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class VideoDiscovered(_message.Message):
    __slots__ = ("video_id", "channel_id", "channel_title", "title", "description", "published_at", "category_id", "duration_seconds", "tags", "thumbnails", "media_url", "source", "search_query", "default_language")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TITLE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_URL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_QUERY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    channel_id: str
    channel_title: str
    title: str
    description: str
    published_at: _timestamp_pb2.Timestamp
    category_id: str
    duration_seconds: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    thumbnails: _containers.RepeatedCompositeFieldContainer[Thumbnail]
    media_url: str
    source: DiscoverySource
    search_query: str
    default_language: str
    def __init__(self, video_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., channel_title: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., category_id: _Optional[str] = ..., duration_seconds: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., thumbnails: _Optional[_Iterable[_Union[Thumbnail, _Mapping]]] = ..., media_url: _Optional[str] = ..., source: _Optional[_Union[DiscoverySource, str]] = ..., search_query: _Optional[str] = ..., default_language: _Optional[str] = ...) -> None: ...

class StatsSnapshot(_message.Message):
    __slots__ = ("video_id", "channel_id", "observed_at", "age_seconds", "schedule_slot", "view_count", "like_count", "comment_count", "channel_subscriber_count", "subscriber_count_hidden")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_SLOT_FIELD_NUMBER: _ClassVar[int]
    VIEW_COUNT_FIELD_NUMBER: _ClassVar[int]
    LIKE_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SUBSCRIBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_COUNT_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    channel_id: str
    observed_at: _timestamp_pb2.Timestamp
    age_seconds: int
    schedule_slot: str
    view_count: int
    like_count: int
    comment_count: int
    channel_subscriber_count: int
    subscriber_count_hidden: bool
    def __init__(self, video_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., age_seconds: _Optional[int] = ..., schedule_slot: _Optional[str] = ..., view_count: _Optional[int] = ..., like_count: _Optional[int] = ..., comment_count: _Optional[int] = ..., channel_subscriber_count: _Optional[int] = ..., subscriber_count_hidden: _Optional[bool] = ...) -> None: ...

class StoredImage(_message.Message):
    __slots__ = ("variant", "ref", "width", "height")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    variant: str
    ref: _common_pb2.ObjectRef
    width: int
    height: int
    def __init__(self, variant: _Optional[str] = ..., ref: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class ThumbnailStored(_message.Message):
    __slots__ = ("video_id", "source_url", "source_format", "images", "phash")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PHASH_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    source_url: str
    source_format: str
    images: _containers.RepeatedCompositeFieldContainer[StoredImage]
    phash: int
    def __init__(self, video_id: _Optional[str] = ..., source_url: _Optional[str] = ..., source_format: _Optional[str] = ..., images: _Optional[_Iterable[_Union[StoredImage, _Mapping]]] = ..., phash: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "timestamp_seconds", "ref")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    index: int
    timestamp_seconds: float
    ref: _common_pb2.ObjectRef
    def __init__(self, index: _Optional[int] = ..., timestamp_seconds: _Optional[float] = ..., ref: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class FramesExtracted(_message.Message):
    __slots__ = ("video_id", "media", "sample_fps", "duration_seconds", "frames", "dropped_leading", "dropped_trailing", "audio_features", "audio_seconds", "audio_bands")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FPS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_LEADING_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TRAILING_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FEATURES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_BANDS_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    media: _common_pb2.ObjectRef
    sample_fps: float
    duration_seconds: float
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    dropped_leading: int
    dropped_trailing: int
    audio_features: _common_pb2.ObjectRef
    audio_seconds: int
    audio_bands: int
    def __init__(self, video_id: _Optional[str] = ..., media: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., sample_fps: _Optional[float] = ..., duration_seconds: _Optional[float] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., dropped_leading: _Optional[int] = ..., dropped_trailing: _Optional[int] = ..., audio_features: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., audio_seconds: _Optional[int] = ..., audio_bands: _Optional[int] = ...) -> None: ...

class Concept(_message.Message):
    __slots__ = ("class_index", "label", "score", "count")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    score: float
    count: int
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class EmbeddingComputed(_message.Message):
    __slots__ = ("video_id", "source", "model", "dim", "count", "vectors", "concepts", "top_concepts")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    TOP_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    source: EmbeddingSource
    model: _common_pb2.ModelSpec
    dim: int
    count: int
    vectors: _common_pb2.ObjectRef
    concepts: _common_pb2.ObjectRef
    top_concepts: _containers.RepeatedCompositeFieldContainer[Concept]
    def __init__(self, video_id: _Optional[str] = ..., source: _Optional[_Union[EmbeddingSource, str]] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., dim: _Optional[int] = ..., count: _Optional[int] = ..., vectors: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., concepts: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., top_concepts: _Optional[_Iterable[_Union[Concept, _Mapping]]] = ...) -> None: ...

class ModelTrained(_message.Message):
    __slots__ = ("task", "version", "archive", "metrics", "dataset_snapshot_id", "code_version", "promoted", "replaces_version", "trained_at")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DATASET_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    REPLACES_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    task: str
    version: str
    archive: _common_pb2.ObjectRef
    metrics: _containers.ScalarMap[str, float]
    dataset_snapshot_id: str
    code_version: str
    promoted: bool
    replaces_version: str
    trained_at: _timestamp_pb2.Timestamp
    def __init__(self, task: _Optional[str] = ..., version: _Optional[str] = ..., archive: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., dataset_snapshot_id: _Optional[str] = ..., code_version: _Optional[str] = ..., promoted: _Optional[bool] = ..., replaces_version: _Optional[str] = ..., trained_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("original_topic", "partition", "offset", "key", "value", "headers", "reason", "error_type", "attempts", "consumer_group", "failed_at", "value_ref", "value_size")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ORIGINAL_TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_GROUP_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    VALUE_REF_FIELD_NUMBER: _ClassVar[int]
    VALUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    original_topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: _containers.ScalarMap[str, str]
    reason: str
    error_type: str
    attempts: int
    consumer_group: str
    failed_at: _timestamp_pb2.Timestamp
    value_ref: _common_pb2.ObjectRef
    value_size: int
    def __init__(self, original_topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., reason: _Optional[str] = ..., error_type: _Optional[str] = ..., attempts: _Optional[int] = ..., consumer_group: _Optional[str] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value_ref: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., value_size: _Optional[int] = ...) -> None: ...
