"""The Embedder gRPC API: vectors for images, and the nearest indexed thumbnails.

Requests from many callers share forward passes through the micro-batcher. Typed errors only: the interceptor in
`tubelens.rpc` turns them into status codes (an undecodable image is INVALID_ARGUMENT naming its index).
"""

from __future__ import annotations

import numpy as np

from tubelens.embedding.batching import MicroBatcher
from tubelens.embedding.concepts import top_concepts
from tubelens.embedding.index import SimilarityIndex
from tubelens.embedding.settings import EmbeddingSettings
from tubelens.errors import InvalidInput, TooLarge
from tubelens.images import phash
from tubelens.modelkit.backbone import Backbone
from tubelens.modelkit.preprocess import decode
from tubelens.rpc import current_request_id
from tubelens.v1 import embedding_pb2, embedding_pb2_grpc

DEFAULT_K = 10
MAX_K = 1000


class EmbedderService(embedding_pb2_grpc.EmbedderServicer):
    def __init__(
        self, backbone: Backbone, batcher: MicroBatcher, index: SimilarityIndex, settings: EmbeddingSettings
    ) -> None:
        self.backbone = backbone
        self.batcher = batcher
        self.index = index
        self.settings = settings

    def Embed(self, request: embedding_pb2.EmbedRequest, context) -> embedding_pb2.EmbedResponse:  # noqa: N802
        if not request.images:
            raise InvalidInput("no images to embed", field="images")
        if len(request.images) > self.settings.max_images_per_request:
            raise TooLarge(
                f"{len(request.images)} images; at most {self.settings.max_images_per_request} per request",
                field="images",
            )
        for position, image in enumerate(request.images):
            self._check_size(image, f"images[{position}]")
        result = self.batcher.embed(list(request.images))
        response = embedding_pb2.EmbedResponse(
            id=current_request_id(),
            model=self.backbone.model,
            dim=self.backbone.dim,
            vectors=[embedding_pb2.Vector(values=row.tolist()) for row in result.vectors],
        )
        if request.with_concepts:
            response.concepts.extend(
                embedding_pb2.ConceptList(concepts=row) for row in top_concepts(result.probabilities)
            )
        return response

    def Similar(self, request: embedding_pb2.SimilarRequest, context) -> embedding_pb2.SimilarResponse:  # noqa: N802
        k = request.k or DEFAULT_K
        if k > MAX_K:
            raise InvalidInput(f"k is {k}; at most {MAX_K}", field="k")
        which = request.WhichOneof("query")
        if which == "video_id":
            matches = self.index.query_id(request.video_id, k)
        elif which == "image":
            self._check_size(request.image, "image")
            image = decode(request.image, max_pixels=self.batcher.max_pixels)
            # The query's perceptual hash lets the index tell a copy of this very picture from its look-alikes.
            matches = self.index.query(self.batcher.embed([image]).vectors[0], k, phash=phash(image) or None)
        elif which == "vector":
            vector = np.asarray(request.vector.values, dtype=np.float32)
            if vector.shape != (self.index.dim,):
                raise InvalidInput(f"vector has {vector.size} values; the index holds {self.index.dim}", field="vector")
            matches = self.index.query(vector, k, phash=request.phash or None)
        else:
            raise InvalidInput("give an image, a vector or a video_id to search with", field="query")
        return embedding_pb2.SimilarResponse(
            id=current_request_id(),
            model=self.backbone.model,
            matches=[
                embedding_pb2.Match(
                    video_id=m.video_id, score=m.score, near_duplicate=m.near_duplicate, cosine=m.cosine
                )
                for m in matches
            ],
            exact=self.index.exact,
            indexed=len(self.index),
        )

    def _check_size(self, image: bytes, field: str) -> None:
        if len(image) > self.settings.max_image_bytes:
            raise TooLarge(f"{field} is {len(image)} bytes; the cap is {self.settings.max_image_bytes}", field=field)
