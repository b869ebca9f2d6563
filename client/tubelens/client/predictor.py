"""`PredictorClient`: every Predictor RPC as a method, with a deadline, retries on UNAVAILABLE and typed errors.

Answers are the generated response messages (`tubelens.v1.predictor_pb2`), documented in docs/api.md.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tubelens.client.errors import ApiError, DeadlineExceededError, UnavailableError, api_error
from tubelens.v1 import common_pb2, predictor_pb2, predictor_pb2_grpc

Response = TypeVar("Response")
DEFAULT_TIMEOUT_S = 10.0
READY_POLL_S = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a call that ended UNAVAILABLE is tried again: up to `attempts` tries in all, each after a full-jitter
    backoff (anywhere from 0 to min(max, initial * 2^n) seconds), never past the call's deadline."""

    attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def backoff(self, retry: int) -> float:
        return random.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * 2**retry))


NO_RETRIES = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Tls:
    """Server TLS (`root_certificates`: the CA to trust, None for the system's) and, with both of
    `certificate_chain` and `private_key`, mutual TLS; `server_name` checks another name than the address's."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str = ""


def image(data: bytes) -> predictor_pb2.ImageInput:
    """A picture sent inline (JPEG, PNG or WebP, under the server's size cap)."""
    return predictor_pb2.ImageInput(image_bytes=data)


def image_url(url: str) -> predictor_pb2.ImageInput:
    """A picture the server fetches (its host must be on the server's allowlist)."""
    return predictor_pb2.ImageInput(image_url=url)


def video(video_id: str) -> predictor_pb2.ImageInput:
    """The stored thumbnail of a video the server knows."""
    return predictor_pb2.ImageInput(video_id=video_id)


class PredictorClient:
    """A client of one predictor address. Thread-safe (gRPC channels are); close it, or use it as a context manager."""

    def __init__(
        self,
        address: str,
        *,
        tls: Tls | None = None,
        token: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen
        channel: grpc.Channel | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.retry = retry
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = channel or _open_channel(address, tls, retry)
        self._stub = predictor_pb2_grpc.PredictorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- predictions -------------------------------------------------------------------------------------------------

    def predict_popularity(
        self,
        thumbnail: predictor_pb2.ImageInput,
        *,
        title: str = "",
        channel_id: str = "",
        channel_subscribers: int = 0,
        published_at: datetime | None = None,
        version: str = "",
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> predictor_pb2.PredictPopularityResponse:
        request = predictor_pb2.PredictPopularityRequest(
            id=request_id,
            model=_spec("popularity", version),
            thumbnail=thumbnail,
            context=_context(title, channel_id, channel_subscribers, published_at),
        )
        return self._call(self._stub.PredictPopularity, request, timeout_s)

    def compare_thumbnails(
        self,
        candidates: Sequence[tuple[str, predictor_pb2.ImageInput]],
        *,
        title: str = "",
        channel_id: str = "",
        channel_subscribers: int = 0,
        published_at: datetime | None = None,
        version: str = "",
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> predictor_pb2.CompareThumbnailsResponse:
        """`candidates`: (label, picture) pairs, ranked in the answer by their chance of drawing the most views."""
        request = predictor_pb2.CompareThumbnailsRequest(
            id=request_id,
            model=_spec("popularity", version),
            candidates=[predictor_pb2.ThumbnailCandidate(label=label, image=picture) for label, picture in candidates],
            context=_context(title, channel_id, channel_subscribers, published_at),
        )
        return self._call(self._stub.CompareThumbnails, request, timeout_s)

    def classify_channel(
        self,
        thumbnail: predictor_pb2.ImageInput,
        *,
        top_k: int = 0,
        version: str = "",
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> predictor_pb2.ClassifyChannelResponse:
        request = predictor_pb2.ClassifyChannelRequest(
            id=request_id, model=_spec("channel", version), thumbnail=thumbnail, top_k=top_k
        )
        return self._call(self._stub.ClassifyChannel, request, timeout_s)

    def predict_genre(
        self,
        *,
        video_id: str = "",
        frames: Sequence[bytes] = (),
        audio_features: Sequence[Sequence[float]] = (),
        top_k: int = 0,
        version: str = "",
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> predictor_pb2.PredictGenreResponse:
        """A known video's genres, or those of sent frames (encoded pictures) with their per-second audio rows."""
        request = predictor_pb2.PredictGenreRequest(id=request_id, model=_spec("genre", version), top_k=top_k)
        if video_id:
            request.video_id = video_id
        else:
            bands = len(audio_features[0]) if audio_features else 0
            request.frames.CopyFrom(
                predictor_pb2.FrameSequence(
                    frames=list(frames),
                    audio_features=[value for row in audio_features for value in row],
                    audio_bands=bands,
                )
            )
        return self._call(self._stub.PredictGenre, request, timeout_s)

    def find_similar(
        self, query: predictor_pb2.ImageInput, *, k: int = 0, request_id: str = "", timeout_s: float | None = None
    ) -> predictor_pb2.FindSimilarResponse:
        request = predictor_pb2.FindSimilarRequest(id=request_id, query=query, k=k)
        return self._call(self._stub.FindSimilar, request, timeout_s)

    # --- models and readiness ----------------------------------------------------------------------------------------

    def list_models(self, task: str = "", *, timeout_s: float | None = None) -> predictor_pb2.ListModelsResponse:
        return self._call(self._stub.ListModels, predictor_pb2.ListModelsRequest(task=task), timeout_s)

    def model_metadata(
        self, name: str, *, version: str = "", timeout_s: float | None = None
    ) -> predictor_pb2.ModelMetadata:
        request = predictor_pb2.GetModelMetadataRequest(model=_spec(name, version))
        return self._call(self._stub.GetModelMetadata, request, timeout_s)

    def server_live(self, *, timeout_s: float | None = None) -> bool:
        return self._call(self._stub.ServerLive, predictor_pb2.ServerLiveRequest(), timeout_s).live

    def server_ready(self, *, timeout_s: float | None = None) -> predictor_pb2.ServerReadyResponse:
        return self._call(self._stub.ServerReady, predictor_pb2.ServerReadyRequest(), timeout_s)

    def model_ready(
        self, name: str, *, version: str = "", timeout_s: float | None = None
    ) -> predictor_pb2.ModelReadyResponse:
        request = predictor_pb2.ModelReadyRequest(model=_spec(name, version))
        return self._call(self._stub.ModelReady, request, timeout_s)

    def wait_until_ready(self, *, timeout_s: float = 300.0) -> predictor_pb2.ServerReadyResponse:
        """Poll ServerReady until every model is loaded and warm; DeadlineExceededError with the last answer's
        reasons when `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            left = deadline - time.monotonic()
            try:
                answer = self.server_ready(timeout_s=max(min(left, self.timeout_s), 0.001))
            except UnavailableError as exc:  # not listening yet: the server is still starting
                last = exc.message
            else:
                if answer.ready:
                    return answer
                last = "; ".join(f"{m.name}: {m.detail}" for m in answer.models if not m.ready) or "not ready"
            if time.monotonic() + READY_POLL_S > deadline:
                raise DeadlineExceededError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"not ready within {timeout_s:g}s: {last}"
                )
            time.sleep(READY_POLL_S)

    # --- internals ---------------------------------------------------------------------------------------------------

    def _call(self, method: Callable[..., Response], request: object, timeout_s: float | None) -> Response:
        """One call with its deadline, retried on UNAVAILABLE while attempts and the deadline last."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            try:
                return method(request, timeout=max(left, 0.001), metadata=self._metadata)
            except grpc.RpcError as exc:
                error = api_error(exc)
            pause = self.retry.backoff(attempt - 1)
            if not _retry_worth_it(error, attempt, self.retry, deadline - time.monotonic() - pause):
                raise error from None
            time.sleep(pause)


def _retry_worth_it(error: ApiError, attempt: int, retry: RetryPolicy, left_after_pause: float) -> bool:
    return error.retryable and attempt < retry.attempts and left_after_pause > 0


def _open_channel(address: str, tls: Tls | None, retry: RetryPolicy) -> grpc.Channel:
    # The channel's own reconnection backoff (1 s and growing, by default) would otherwise answer every retry of a
    # server that just came up with UNAVAILABLE until it elapses: pace it like the retries.
    options = [
        ("grpc.initial_reconnect_backoff_ms", max(1, int(retry.initial_backoff_s * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(1, int(retry.max_backoff_s * 1000))),
    ]
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(tls.root_certificates, tls.private_key, tls.certificate_chain)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(address, credentials, options=options)


def _spec(name: str, version: str) -> common_pb2.ModelSpec:
    return common_pb2.ModelSpec(name=name, version=version)


def _context(
    title: str, channel_id: str, subscribers: int, published_at: datetime | None
) -> predictor_pb2.VideoContext:
    context = predictor_pb2.VideoContext(title=title, channel_id=channel_id, channel_subscribers=subscribers)
    if published_at is not None:
        stamp = Timestamp()
        stamp.FromDatetime(published_at)
        context.published_at.CopyFrom(stamp)
    return context
