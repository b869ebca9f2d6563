"""The embedding service's event handler: thumbnails.stored and frames.extracted in, embeddings.computed out.

Thumbnails are decoded as their messages arrive (a bad image is dead-lettered on its own) and embedded together
just before the batch commits, so the backbone sees full batches instead of one image at a time. Then, in order:
vectors and concepts are stored content-addressed, the index takes the vectors, an index shard of them is written,
and the events are published; only after that does the worker flush and commit. A crash anywhere before the
commit redelivers the batch, and every step is idempotent (content-addressed objects, upserts by video id).
Frames are embedded per video at once: a video brings its own batch.
"""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from tubelens import events
from tubelens.bus import Message, Producer
from tubelens.embedding.concepts import aggregate_concepts, top_concepts
from tubelens.embedding.index import SimilarityIndex
from tubelens.errors import InvalidInput
from tubelens.logs import log_context
from tubelens.modelkit.backbone import Backbone, Embeddings
from tubelens.modelkit.preprocess import PREFERRED_VARIANTS, to_batch
from tubelens.objects import ObjectStore
from tubelens.v1 import events_pb2

log = logging.getLogger(__name__)

EMBEDDED = Counter("tubelens_embedding_images_embedded_total", "Images embedded from events", ["source"])
TOP_CONCEPTS_PER_VIDEO = 20


@dataclass
class _PendingThumbnail:
    stored: events_pb2.ThumbnailStored
    trace_id: str
    cause: str  # the input event's id: the published event's id derives from it
    pixels: np.ndarray  # [1, 3, 224, 224]


class EmbeddingHandler:
    def __init__(
        self,
        backbone: Backbone,
        *,
        store: ObjectStore,
        producer: Producer,
        index: SimilarityIndex,
        shard_prefix: str,
        inference_batch: int = 8,
        service: str = "embedding",
    ) -> None:
        self.backbone = backbone
        self.store = store
        self.producer = producer
        self.index = index
        self.shard_prefix = shard_prefix
        self.inference_batch = inference_batch
        self.service = service
        self._pending: list[_PendingThumbnail] = []
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="embedding-io")

    def __call__(self, message: Message) -> None:
        envelope = events.decode(message.value)
        which = envelope.WhichOneof("payload")
        if which == "thumbnail_stored":
            self._take_thumbnail(envelope.thumbnail_stored, envelope.trace_id, envelope.event_id)
        elif which == "frames_extracted":
            with log_context(video_id=envelope.frames_extracted.video_id):
                self._embed_frames(envelope.frames_extracted, envelope.trace_id, envelope.event_id)
        else:
            raise InvalidInput(f"the embedding service does not consume {envelope.event_type}")

    def before_commit(self) -> None:
        """Embed the batch's thumbnails, store, index, shard and publish them.

        Storing and publishing one chunk's results (I/O) overlaps the next chunk's forward pass (CPU)."""
        if not self._pending:
            return
        # Kept until everything below succeeded: after a failure (an outage) the worker calls this again and it redoes
        # the batch, which is idempotent (content-addressed objects, upserts, derived event ids).
        pending = self._pending
        finishing = []
        for start in range(0, len(pending), self.inference_batch):
            chunk = pending[start : start + self.inference_batch]
            result = self.backbone.infer(np.concatenate([p.pixels for p in chunk]))
            finishing += [
                self._io.submit(self._finish_thumbnail, item, vector, concepts)
                for item, vector, concepts in zip(
                    chunk, result.vectors, top_concepts(result.probabilities), strict=True
                )
            ]
        for future in finishing:
            future.result()  # re-raises: nothing is committed past a failed write
        self.index.save_shard(self.store, self.shard_prefix)  # the vectors changed since the last shard
        self._pending = []
        EMBEDDED.labels("thumbnail").inc(len(pending))

    def close(self) -> None:
        self._io.shutdown(wait=True)

    def _take_thumbnail(self, stored: events_pb2.ThumbnailStored, trace_id: str, cause: str) -> None:
        image = _preferred_image(stored)
        pixels = to_batch([self.store.get(image.ref.key)], max_pixels=self.backbone.max_pixels)
        self._pending.append(_PendingThumbnail(stored, trace_id, cause, pixels))

    def _finish_thumbnail(self, item: _PendingThumbnail, vector: np.ndarray, concepts: list) -> None:
        video_id = item.stored.video_id
        vectors_ref = self._put_vectors(vector[None, :], "thumbnails")
        self.index.upsert(video_id, vector, phash=item.stored.phash or None)
        # One image's top 5 travel in the event itself: no concepts object to write.
        self._publish(
            video_id, events_pb2.EMBEDDING_SOURCE_THUMBNAIL, 1, vectors_ref, None, concepts, item.trace_id, item.cause
        )

    def _embed_frames(self, extracted: events_pb2.FramesExtracted, trace_id: str, cause: str) -> None:
        if not extracted.frames:
            log.info("no frames to embed")
            return
        pixels = to_batch([self.store.get(f.ref.key) for f in extracted.frames], max_pixels=self.backbone.max_pixels)
        result = self._infer(pixels)
        per_frame = top_concepts(result.probabilities)
        vectors_ref = self._put_vectors(result.vectors, "frames")
        concepts_ref = self._put_concepts(per_frame, "frames")
        aggregated = aggregate_concepts(per_frame, limit=TOP_CONCEPTS_PER_VIDEO)
        self._publish(
            extracted.video_id,
            events_pb2.EMBEDDING_SOURCE_FRAMES,
            len(per_frame),
            vectors_ref,
            concepts_ref,
            aggregated,
            trace_id,
            cause,
        )
        EMBEDDED.labels("frame").inc(len(per_frame))

    def _infer(self, pixels: np.ndarray) -> Embeddings:
        parts = [
            self.backbone.infer(pixels[start : start + self.inference_batch])
            for start in range(0, len(pixels), self.inference_batch)
        ]
        return Embeddings(np.concatenate([p.vectors for p in parts]), np.concatenate([p.probabilities for p in parts]))

    def _put_vectors(self, vectors: np.ndarray, kind: str):
        out = io.BytesIO()
        np.save(out, vectors.astype(np.float32), allow_pickle=False)
        return self.store.put_content(
            out.getvalue(), prefix=f"embeddings/{kind}", content_type="application/x-npy", suffix=".npy"
        ).to_ref()

    def _put_concepts(self, per_row: list[list[events_pb2.Concept]], kind: str):
        rows = [
            [{"class_index": c.class_index, "label": c.label, "score": round(c.score, 6)} for c in row]
            for row in per_row
        ]
        body = json.dumps(rows, separators=(",", ":")).encode()
        return self.store.put_content(
            body, prefix=f"concepts/{kind}", content_type="application/json", suffix=".json"
        ).to_ref()

    def _publish(self, video_id, source, count, vectors_ref, concepts_ref, top, trace_id, cause) -> None:
        payload = events_pb2.EmbeddingComputed(
            video_id=video_id,
            source=source,
            model=self.backbone.model,
            dim=self.backbone.dim,
            count=count,
            vectors=vectors_ref,
            concepts=concepts_ref,
            top_concepts=top,
        )
        events.publish(self.producer, payload, key=video_id, service=self.service, trace_id=trace_id, cause=cause)


def _preferred_image(stored: events_pb2.ThumbnailStored) -> events_pb2.StoredImage:
    by_variant = {image.variant: image for image in stored.images}
    for variant in PREFERRED_VARIANTS:
        if variant in by_variant:
            return by_variant[variant]
    raise InvalidInput(f"thumbnails.stored for {stored.video_id} names no usable image", field="images")
