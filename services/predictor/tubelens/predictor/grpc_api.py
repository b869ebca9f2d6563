"""The Predictor gRPC API (`protos/tubelens/v1/predictor.proto`): a thin adapter over the protocol-neutral core.

Each RPC resolves its pictures (`inputs`: bytes, an allowlisted URL or a known video), turns the request's messages
into the core's plain values, calls `PredictorCore`, and turns its answer into the response message. Errors are typed
(tubelens.errors) and the shared interceptor turns them into gRPC codes; nothing here speaks in status codes. Each
RPC names its task first and the version that answered last (`annotate`): the interceptor counts every call under
them (`metrics.record_request`), a request refused before any model ran included.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from tubelens.errors import InvalidInput, NotFound
from tubelens.predictor import core
from tubelens.predictor.core import CHANNEL, GENRE, POPULARITY, SIMILARITY, Answer, PredictorCore
from tubelens.predictor.inputs import ImageResolver, too_many
from tubelens.predictor.models import ServedModel
from tubelens.predictor.readiness import ModelState, Readiness
from tubelens.rpc import annotate, current_request_id
from tubelens.v1 import common_pb2, predictor_pb2, predictor_pb2_grpc


class PredictorServicer(predictor_pb2_grpc.PredictorServicer):
    def __init__(self, core: PredictorCore, images: ImageResolver, readiness: Readiness) -> None:
        self.core = core
        self.images = images
        self.readiness = readiness

    def PredictPopularity(self, request, context) -> predictor_pb2.PredictPopularityResponse:  # noqa: N802
        version = _selected(request.model, POPULARITY)
        image = self.images.image(request.thumbnail, "thumbnail")
        answer = _answered(self.core.popularity(image, _context(request.context), version))
        return predictor_pb2.PredictPopularityResponse(
            id=current_request_id(), model=_spec(answer), popularity=_popularity(answer.value)
        )

    def CompareThumbnails(self, request, context) -> predictor_pb2.CompareThumbnailsResponse:  # noqa: N802
        version = _selected(request.model, POPULARITY)
        if len(request.candidates) < 2:
            raise InvalidInput("give at least two candidates to compare", field="candidates")
        too_many(len(request.candidates), self.core.limits.max_candidates, "candidates")
        images = [self.images.image(c.image, f"candidates[{i}].image") for i, c in enumerate(request.candidates)]
        answer = _answered(self.core.compare(images, _context(request.context), version))
        ranked = [
            predictor_pb2.RankedCandidate(
                rank=r.rank,
                index=r.index,
                label=request.candidates[r.index].label,
                probability_best=r.probability_best,
                popularity=_popularity(r.popularity),
            )
            for r in answer.value
        ]
        return predictor_pb2.CompareThumbnailsResponse(id=current_request_id(), model=_spec(answer), ranked=ranked)

    def ClassifyChannel(self, request, context) -> predictor_pb2.ClassifyChannelResponse:  # noqa: N802
        version = _selected(request.model, CHANNEL)
        image = self.images.image(request.thumbnail, "thumbnail")
        answer = _answered(self.core.channel(image, request.top_k, version))
        channels = [
            predictor_pb2.ChannelScore(channel_id=s.label, channel_title=s.name, probability=s.probability)
            for s in answer.value
        ]
        return predictor_pb2.ClassifyChannelResponse(id=current_request_id(), model=_spec(answer), channels=channels)

    def PredictGenre(self, request, context) -> predictor_pb2.PredictGenreResponse:  # noqa: N802
        version = _selected(request.model, GENRE)
        source = request.WhichOneof("source")
        if source == "video_id":
            call = lambda: self.core.genre_of_video(request.video_id, request.top_k, version)  # noqa: E731
        elif source == "frames":
            frames, audio = self._sent_frames(request.frames)
            call = lambda: self.core.genre_of_frames(frames, audio, request.top_k, version)  # noqa: E731
        else:
            raise InvalidInput("give a video_id or frames", field="source")
        answer = _answered(call())
        genres = [
            predictor_pb2.GenreScore(category_id=s.label, name=s.name, probability=s.probability) for s in answer.value
        ]
        return predictor_pb2.PredictGenreResponse(id=current_request_id(), model=_spec(answer), genres=genres)

    def _sent_frames(self, sent: predictor_pb2.FrameSequence) -> tuple[list, np.ndarray]:
        if not sent.frames:
            raise InvalidInput("frames.frames is empty", field="frames.frames")
        too_many(len(sent.frames), self.core.limits.max_frames, "frames.frames")
        images = [
            self.images.image(predictor_pb2.ImageInput(image_bytes=data), f"frames.frames[{i}]")
            for i, data in enumerate(sent.frames)
        ]
        return images, _audio(sent)

    def FindSimilar(self, request, context) -> predictor_pb2.FindSimilarResponse:  # noqa: N802
        annotate(task=SIMILARITY)
        query, k = request.query, request.k or 10
        if query.WhichOneof("source") == "video_id":
            call = lambda: self.core.similar_to_video(query.video_id, k, current_request_id())  # noqa: E731
        else:
            image = self.images.image(query, "query")
            call = lambda: self.core.similar_to_image(image, k, current_request_id())  # noqa: E731
        answer = _answered(call())
        matches = [
            predictor_pb2.SimilarVideo(
                video_id=m.video_id,
                score=m.score,
                near_duplicate=m.near_duplicate,
                title=m.title,
                channel_id=m.channel_id,
                cosine=m.cosine,
            )
            for m in answer.value
        ]
        return predictor_pb2.FindSimilarResponse(id=current_request_id(), model=_spec(answer), matches=matches)

    def ListModels(self, request, context) -> predictor_pb2.ListModelsResponse:  # noqa: N802
        return predictor_pb2.ListModelsResponse(models=[_version(m) for m in self.core.models(request.task)])

    def GetModelMetadata(self, request, context) -> predictor_pb2.ModelMetadata:  # noqa: N802
        found = self.core.metadata(request.model.name, request.model.version or None)
        annotate(task=found.model.task, version=found.model.version)
        return predictor_pb2.ModelMetadata(
            model=_version(found.model),
            platform=found.model.platform,
            inputs=[_tensor(spec) for spec in found.inputs],
            outputs=[_tensor(spec) for spec in found.outputs],
            labels=found.labels,
            versions=found.versions,
        )

    def ServerLive(self, request, context) -> predictor_pb2.ServerLiveResponse:  # noqa: N802
        return predictor_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context) -> predictor_pb2.ServerReadyResponse:  # noqa: N802
        states = self.readiness.states()
        return predictor_pb2.ServerReadyResponse(
            ready=bool(states) and all(state.ready for state in states), models=[_readiness(s) for s in states]
        )

    def ModelReady(self, request, context) -> predictor_pb2.ModelReadyResponse:  # noqa: N802
        if not request.model.name:
            raise InvalidInput("name the model (its task)", field="model.name")
        state = self.readiness.model(request.model.name, request.model.version or None)
        return predictor_pb2.ModelReadyResponse(
            ready=state.ready, model=common_pb2.ModelSpec(name=state.task, version=state.version), detail=state.detail
        )


def _answered(answer: Answer) -> Answer:
    """Name the version that answered, for the request metrics."""
    annotate(version=answer.model.version or "none")
    return answer


def _selected(spec: common_pb2.ModelSpec, task: str) -> str | None:
    """The version a request asks for (None: the promoted one). A model name must be the RPC's task; the call is
    labelled with it from here on, so that even a refused request is counted under its task."""
    annotate(task=task)
    if spec.name and spec.name != task:
        raise NotFound(f"model {spec.name!r} does not answer this call; it is served by {task!r}", field="model.name")
    return spec.version or None


def _context(message: predictor_pb2.VideoContext) -> core.VideoContext:
    published = message.published_at.ToDatetime(tzinfo=UTC) if message.HasField("published_at") else None
    return core.VideoContext(
        title=message.title,
        channel_id=message.channel_id,
        channel_subscribers=int(message.channel_subscribers) or None,
        published_at=published,
    )


def _spec(answer: Answer) -> common_pb2.ModelSpec:
    return common_pb2.ModelSpec(name=answer.model.task, version=answer.model.version)


def _popularity(value: core.Popularity) -> predictor_pb2.Popularity:
    return predictor_pb2.Popularity(
        buckets=[
            predictor_pb2.ViewBucket(
                index=b.index, lower_views=b.lower_views, upper_views=b.upper_views, probability=b.probability
            )
            for b in value.buckets
        ],
        predicted_bucket=value.predicted_bucket,
        expected_views=value.expected_views,
        views_low=value.views_low,
        views_high=value.views_high,
        interval_level=value.interval_level,
        channel_percentile=value.channel_percentile,
        at_age_seconds=value.at_age_seconds,
    )


def _audio(sent: predictor_pb2.FrameSequence) -> np.ndarray:
    bands = sent.audio_bands
    values = np.asarray(sent.audio_features, dtype=np.float32)
    if bands == 0 or len(values) == 0 or len(values) % bands:
        raise InvalidInput(
            f"frames.audio_features holds {len(values)} numbers, not whole rows of audio_bands={bands}",
            field="frames.audio_features",
        )
    return values.reshape(-1, bands)


def _version(model: ServedModel) -> predictor_pb2.ModelVersion:
    trained_at = Timestamp()
    if model.published_at:
        trained_at.FromDatetime(datetime.fromisoformat(model.published_at))
    return predictor_pb2.ModelVersion(
        name=model.task,
        version=model.version,
        task=model.task,
        is_default=model.is_default,
        loaded=True,
        metrics={k: float(v) for k, v in model.metrics.items() if isinstance(v, int | float)},
        dataset_snapshot_id=model.snapshot_id,
        trained_at=trained_at,
    )


def _readiness(state: ModelState) -> predictor_pb2.ModelReadiness:
    return predictor_pb2.ModelReadiness(
        name=state.task, version=state.version, ready=state.ready, detail=state.detail
    )


def _tensor(spec: core.TensorSpec) -> predictor_pb2.TensorSpec:
    return predictor_pb2.TensorSpec(name=spec.name, datatype=spec.datatype, shape=spec.shape)
