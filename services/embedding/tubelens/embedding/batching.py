"""A micro-batcher: requests from many threads share one forward pass.

One worker thread owns the model, so concurrent callers queue instead of oversubscribing the cores, and whatever
queued while a batch ran goes into the next one. The worker takes the oldest request, then keeps adding whole
requests until the batch holds `max_images` or `window_s` has passed since that oldest request arrived, runs one
inference, and hands every caller its own rows. Callers decode their images before submitting, so an undecodable
image fails its own request and no one else's.

The window defaults to zero: on a CPU a bigger batch is no cheaper per image (onnxruntime on 2 cores: ~178
images/s at batch 1, ~149 at batch 32), so waiting for company only adds latency; with 4 callers sending one image
each, a 10 ms window cut throughput from ~177 to ~113 images/s (`python -m tests.bench.embedding`). Give it a
window where batching pays, such as on a GPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Histogram

from tubelens.errors import NotReady
from tubelens.modelkit.backbone import Embeddings
from tubelens.modelkit.preprocess import DEFAULT_MAX_PIXELS, INPUT_SIZE, ImageInput, to_batch

logger = logging.getLogger(__name__)

BATCH_IMAGES = Histogram(
    "tubelens_embedding_batch_images",
    "Images per forward pass the micro-batcher ran",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass
class _Request:
    batch: np.ndarray
    future: Future[Embeddings] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """submit(batch) -> Future[Embeddings]; embed(images) decodes, submits and waits. Thread-safe.

    A request larger than `max_images` is never split: it runs as a batch of its own.
    """

    def __init__(
        self,
        infer: Callable[[np.ndarray], Embeddings],
        *,
        max_images: int = 32,
        window_s: float = 0.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if max_images < 1 or window_s < 0:
            raise ValueError(f"max_images must be at least 1 and window_s not negative, got {max_images}, {window_s}")
        self._infer = infer
        self.max_images = max_images
        self.window_s = window_s
        self.max_pixels = max_pixels
        self._pending: deque[_Request] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="embedding-batcher", daemon=True)
        self._worker.start()

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def embed(self, images: Sequence[ImageInput]) -> Embeddings:
        """Decode in the calling thread (InvalidInput names the bad image), then wait for this request's rows."""
        return self.submit(to_batch(images, max_pixels=self.max_pixels)).result()

    def submit(self, batch: np.ndarray) -> Future[Embeddings]:
        """Queue a prepared float32 [N, 3, 224, 224] batch; NotReady once the batcher is closing."""
        if batch.dtype != np.float32 or batch.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            # Checked here, not in the worker: one malformed request must not fail the batch it would join.
            raise ValueError(f"expected float32 [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {batch.dtype} {batch.shape}")
        request = _Request(batch)
        with self._changed:
            if self._closed:
                raise NotReady("the embedding batcher is shutting down")
            self._pending.append(request)
            self._changed.notify()
        return request.future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, stop the worker."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join(timeout)

    def _run(self) -> None:
        while requests := self._next_batch():
            self._serve(requests)

    def _next_batch(self) -> list[_Request]:
        """The next requests to run together; empty once closed and drained."""
        with self._changed:
            while not self._pending and not self._closed:
                self._changed.wait()
            if not self._pending:
                return []
            requests = [self._pending.popleft()]
            images = len(requests[0].batch)
            deadline = requests[0].submitted + self.window_s
            while images < self.max_images:
                if self._pending:
                    if images + len(self._pending[0].batch) > self.max_images:
                        break
                    requests.append(self._pending.popleft())
                    images += len(requests[-1].batch)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._changed.wait(remaining)
            return requests

    def _serve(self, requests: list[_Request]) -> None:
        live = [request for request in requests if request.future.set_running_or_notify_cancel()]
        if not live:
            return
        batch = np.concatenate([request.batch for request in live])
        BATCH_IMAGES.observe(len(batch))
        try:
            result = self._infer(batch)
        except Exception as exc:  # the worker must outlive a failed batch; its callers get the error
            logger.exception("embedding batch failed", extra={"images": len(batch), "requests": len(live)})
            for request in live:
                request.future.set_exception(exc)
            return
        start = 0
        for request in live:
            end = start + len(request.batch)
            request.future.set_result(Embeddings(result.vectors[start:end], result.probabilities[start:end]))
            start = end
