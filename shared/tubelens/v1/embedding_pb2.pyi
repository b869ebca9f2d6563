from tubelens.v1 import common_pb2 as _common_pb2
from tubelens.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedRequest(_message.Message):
    __slots__ = ("id", "images", "with_concepts")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    WITH_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    with_concepts: bool
    def __init__(self, id: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., with_concepts: _Optional[bool] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ConceptList(_message.Message):
    __slots__ = ("concepts",)
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    concepts: _containers.RepeatedCompositeFieldContainer[_events_pb2.Concept]
    def __init__(self, concepts: _Optional[_Iterable[_Union[_events_pb2.Concept, _Mapping]]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("id", "model", "dim", "vectors", "concepts")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    dim: int
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    concepts: _containers.RepeatedCompositeFieldContainer[ConceptList]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., dim: _Optional[int] = ..., vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., concepts: _Optional[_Iterable[_Union[ConceptList, _Mapping]]] = ...) -> None: ...

class SimilarRequest(_message.Message):
    __slots__ = ("id", "image", "video_id", "vector", "k", "phash")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    PHASH_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    video_id: str
    vector: Vector
    k: int
    phash: int
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., video_id: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., k: _Optional[int] = ..., phash: _Optional[int] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("video_id", "score", "near_duplicate", "cosine")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    score: float
    near_duplicate: bool
    cosine: float
    def __init__(self, video_id: _Optional[str] = ..., score: _Optional[float] = ..., near_duplicate: _Optional[bool] = ..., cosine: _Optional[float] = ...) -> None: ...

class SimilarResponse(_message.Message):
    __slots__ = ("id", "model", "matches", "exact", "indexed")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: _common_pb2.ModelSpec
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    exact: bool
    indexed: int
    def __init__(self, id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., exact: _Optional[bool] = ..., indexed: _Optional[int] = ...) -> None: ...
