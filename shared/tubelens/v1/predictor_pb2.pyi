import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tubelens.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageInput(_message.Message):
    __slots__ = ("image_bytes", "image_url", "video_id")
    IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    image_bytes: bytes
    image_url: str
    video_id: str
    def __init__(self, image_bytes: _Optional[bytes] = ..., image_url: _Optional[str] = ..., video_id: _Optional[str] = ...) -> None: ...

class VideoContext(_message.Message):
    __slots__ = ("title", "channel_id", "channel_subscribers", "published_at")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    title: str
    channel_id: str
    channel_subscribers: int
    published_at: _timestamp_pb2.Timestamp
    def __init__(self, title: _Optional[str] = ..., channel_id: _Optional[str] = ..., channel_subscribers: _Optional[int] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ViewBucket(_message.Message):
    __slots__ = ("index", "lower_views", "upper_views", "probability")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LOWER_VIEWS_FIELD_NUMBER: _ClassVar[int]
    UPPER_VIEWS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    index: int
    lower_views: int
    upper_views: int
    probability: float
    def __init__(self, index: _Optional[int] = ..., lower_views: _Optional[int] = ..., upper_views: _Optional[int] = ..., probability: _Optional[float] = ...) -> None: ...

class Popularity(_message.Message):
    __slots__ = ("buckets", "predicted_bucket", "expected_views", "views_low", "views_high", "interval_level", "channel_percentile", "at_age_seconds")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_BUCKET_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VIEWS_FIELD_NUMBER: _ClassVar[int]
    VIEWS_LOW_FIELD_NUMBER: _ClassVar[int]
    VIEWS_HIGH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    AT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[ViewBucket]
    predicted_bucket: int
    expected_views: float
    views_low: float
    views_high: float
    interval_level: float
    channel_percentile: float
    at_age_seconds: int
    def __init__(self, buckets: _Optional[_Iterable[_Union[ViewBucket, _Mapping]]] = ..., predicted_bucket: _Optional[int] = ..., expected_views: _Optional[float] = ..., views_low: _Optional[float] = ..., views_high: _Optional[float] = ..., interval_level: _Optional[float] = ..., channel_percentile: _Optional[float] = ..., at_age_seconds: _Optional[int] = ...) -> None: ...

class PredictPopularityRequest(_message.Message):
    __slots__ = ("id", "model", "thumbnail", "context")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    thumbnail: ImageInput
    context: VideoContext
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., thumbnail: _Optional[_Union[ImageInput, _Mapping]] = ..., context: _Optional[_Union[VideoContext, _Mapping]] = ...) -> None: ...

class PredictPopularityResponse(_message.Message):
    __slots__ = ("id", "model", "popularity")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    popularity: Popularity
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., popularity: _Optional[_Union[Popularity, _Mapping]] = ...) -> None: ...

class ThumbnailCandidate(_message.Message):
    __slots__ = ("label", "image")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    label: str
    image: ImageInput
    def __init__(self, label: _Optional[str] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ...) -> None: ...

class CompareThumbnailsRequest(_message.Message):
    __slots__ = ("id", "model", "candidates", "context")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    candidates: _containers.RepeatedCompositeFieldContainer[ThumbnailCandidate]
    context: VideoContext
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[ThumbnailCandidate, _Mapping]]] = ..., context: _Optional[_Union[VideoContext, _Mapping]] = ...) -> None: ...

class RankedCandidate(_message.Message):
    __slots__ = ("rank", "index", "label", "probability_best", "popularity")
    RANK_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_BEST_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_FIELD_NUMBER: _ClassVar[int]
    rank: int
    index: int
    label: str
    probability_best: float
    popularity: Popularity
    def __init__(self, rank: _Optional[int] = ..., index: _Optional[int] = ..., label: _Optional[str] = ..., probability_best: _Optional[float] = ..., popularity: _Optional[_Union[Popularity, _Mapping]] = ...) -> None: ...

class CompareThumbnailsResponse(_message.Message):
    __slots__ = ("id", "model", "ranked")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RANKED_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    ranked: _containers.RepeatedCompositeFieldContainer[RankedCandidate]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., ranked: _Optional[_Iterable[_Union[RankedCandidate, _Mapping]]] = ...) -> None: ...

class ClassifyChannelRequest(_message.Message):
    __slots__ = ("id", "model", "thumbnail", "top_k")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    thumbnail: ImageInput
    top_k: int
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., thumbnail: _Optional[_Union[ImageInput, _Mapping]] = ..., top_k: _Optional[int] = ...) -> None: ...

class ChannelScore(_message.Message):
    __slots__ = ("channel_id", "channel_title", "probability")
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TITLE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    channel_title: str
    probability: float
    def __init__(self, channel_id: _Optional[str] = ..., channel_title: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ClassifyChannelResponse(_message.Message):
    __slots__ = ("id", "model", "channels")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    channels: _containers.RepeatedCompositeFieldContainer[ChannelScore]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., channels: _Optional[_Iterable[_Union[ChannelScore, _Mapping]]] = ...) -> None: ...

class FrameSequence(_message.Message):
    __slots__ = ("frames", "audio_features", "audio_bands")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FEATURES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_BANDS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    audio_features: _containers.RepeatedScalarFieldContainer[float]
    audio_bands: int
    def __init__(self, frames: _Optional[_Iterable[bytes]] = ..., audio_features: _Optional[_Iterable[float]] = ..., audio_bands: _Optional[int] = ...) -> None: ...

class PredictGenreRequest(_message.Message):
    __slots__ = ("id", "model", "video_id", "frames", "top_k")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    video_id: str
    frames: FrameSequence
    top_k: int
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., video_id: _Optional[str] = ..., frames: _Optional[_Union[FrameSequence, _Mapping]] = ..., top_k: _Optional[int] = ...) -> None: ...

class GenreScore(_message.Message):
    __slots__ = ("category_id", "name", "probability")
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    category_id: str
    name: str
    probability: float
    def __init__(self, category_id: _Optional[str] = ..., name: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class PredictGenreResponse(_message.Message):
    __slots__ = ("id", "model", "genres")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    genres: _containers.RepeatedCompositeFieldContainer[GenreScore]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., genres: _Optional[_Iterable[_Union[GenreScore, _Mapping]]] = ...) -> None: ...

class FindSimilarRequest(_message.Message):
    __slots__ = ("id", "query", "k")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    id: str
    query: ImageInput
    k: int
    def __init__(self, id: _Optional[str] = ..., query: _Optional[_Union[ImageInput, _Mapping]] = ..., k: _Optional[int] = ...) -> None: ...

class SimilarVideo(_message.Message):
    __slots__ = ("video_id", "score", "near_duplicate", "title", "channel_id", "cosine")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    score: float
    near_duplicate: bool
    title: str
    channel_id: str
    cosine: float
    def __init__(self, video_id: _Optional[str] = ..., score: _Optional[float] = ..., near_duplicate: _Optional[bool] = ..., title: _Optional[str] = ..., channel_id: _Optional[str] = ..., cosine: _Optional[float] = ...) -> None: ...

class FindSimilarResponse(_message.Message):
    __slots__ = ("id", "model", "matches")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    matches: _containers.RepeatedCompositeFieldContainer[SimilarVideo]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., matches: _Optional[_Iterable[_Union[SimilarVideo, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "task", "is_default", "loaded", "metrics", "dataset_snapshot_id", "trained_at")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DATASET_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    task: str
    is_default: bool
    loaded: bool
    metrics: _containers.ScalarMap[str, float]
    dataset_snapshot_id: str
    trained_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[str] = ..., is_default: _Optional[bool] = ..., loaded: _Optional[bool] = ..., metrics: _Optional[_Mapping[str, float]] = ..., dataset_snapshot_id: _Optional[str] = ..., trained_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ...) -> None: ...

class GetModelMetadataRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelSpec
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("model", "platform", "inputs", "outputs", "labels", "versions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    platform: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    labels: _containers.RepeatedScalarFieldContainer[str]
    versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., platform: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., versions: _Optional[_Iterable[str]] = ...) -> None: ...

class ServerLiveRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerLiveResponse(_message.Message):
    __slots__ = ("live",)
    LIVE_FIELD_NUMBER: _ClassVar[int]
    live: bool
    def __init__(self, live: _Optional[bool] = ...) -> None: ...

class ServerReadyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerReadyResponse(_message.Message):
    __slots__ = ("ready", "models")
    READY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    models: _containers.RepeatedCompositeFieldContainer[ModelReadiness]
    def __init__(self, ready: _Optional[bool] = ..., models: _Optional[_Iterable[_Union[ModelReadiness, _Mapping]]] = ...) -> None: ...

class ModelReadiness(_message.Message):
    __slots__ = ("name", "version", "ready", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    ready: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., ready: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class ModelReadyRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelSpec
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ...) -> None: ...

class ModelReadyResponse(_message.Message):
    __slots__ = ("ready", "model", "detail")
    READY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    model: _common_pb2.ModelSpec
    detail: str
    def __init__(self, ready: _Optional[bool] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...
