"""The Predictor gRPC API (`protos/tubelens/v1/predictor.proto`): requests in, model answers out.

Each RPC resolves its pictures (`inputs`), embeds them with the same backbone the trainer's snapshots were embedded
with, builds the head's feature rows with the trainer's own feature code (`assemble`), and asks the model manager,
which routes to the promoted version unless the request names one. Errors are typed (tubelens.errors) and the shared
interceptor turns them into gRPC codes with an ErrorInfo trailer; nothing here speaks in status codes.

Tasks served: `popularity` (a log10-views regressor with a predictive spread: buckets, expected views and an interval
come from one model), `channel` (a classifier over the image embedding) and `genre` (frames + audio).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image
from prometheus_client import Counter, Histogram

from tubelens.errors import InvalidInput, NotFound, TubelensError
from tubelens.labels import BUCKET_EDGES, category_name
from tubelens.metrics import LATENCY_BUCKETS
from tubelens.modelkit.registry import ModelRegistry
from tubelens.predictor.assemble import HeadInfo, facts_from_context, feature_rows, image_rows
from tubelens.predictor.catalogue import Catalogue
from tubelens.predictor.inputs import ImageResolver, too_many
from tubelens.predictor.models import ModelManager, Prediction, ServedModel
from tubelens.rpc import current_request_id
from tubelens.v1 import common_pb2, embedding_pb2, predictor_pb2, predictor_pb2_grpc

POPULARITY, CHANNEL, GENRE = "popularity", "channel", "genre"
EMBEDDING_DIM = 1280

REQUESTS = Counter(
    "tubelens_predictor_requests_total",
    "Predictor RPCs by the model version that answered and outcome",
    ["rpc", "task", "version", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "tubelens_predictor_request_seconds",
    "Predictor RPC latency by the model version that answered",
    ["rpc", "task", "version"],
    buckets=LATENCY_BUCKETS,
)


@dataclass(frozen=True)
class ApiLimits:
    horizon_s: int = 7 * 86400  # the age a popularity prediction is for when the caller gives no publish time
    interval_level: float = 0.8  # the central interval of predicted views
    max_candidates: int = 16
    max_frames: int = 64
    default_top_k: int = 5
    comparison_draws: int = 20_000  # Monte Carlo draws behind CompareThumbnails' probability_best


Embed = Callable[[list[Image.Image]], np.ndarray]  # float32 [n, 1280], L2-normalized
Similar = Callable[[embedding_pb2.SimilarRequest], embedding_pb2.SimilarResponse]


class PredictorService(predictor_pb2_grpc.PredictorServicer):
    def __init__(
        self,
        manager: ModelManager,
        registry: ModelRegistry,
        *,
        images: ImageResolver,
        embed: Embed,
        similar: Similar,
        catalogue: Callable[[], Catalogue],
        load_array: Callable[[str], np.ndarray],
        workdir: Path,
        limits: ApiLimits = ApiLimits(),  # noqa: B008 - frozen
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.manager = manager
        self.registry = registry
        self.images = images
        self.embed = embed
        self.similar = similar
        self.catalogue = catalogue
        self.load_array = load_array
        self.workdir = workdir
        self.limits = limits
        self.now = now
        self._heads: dict[tuple[str, str], HeadInfo] = {}
        self._heads_lock = Lock()

    # --- popularity ----------------------------------------------------------------------------------------------

    def PredictPopularity(self, request, context) -> predictor_pb2.PredictPopularityResponse:  # noqa: N802
        version = _selected(request.model, POPULARITY)
        image = self.images.image(request.thumbnail, "thumbnail")
        with _observed("PredictPopularity", POPULARITY) as record:
            prediction, age = self._popularity([image], request.context, version)
            record(prediction.version)
        return predictor_pb2.PredictPopularityResponse(
            id=current_request_id(),
            model=_spec(prediction),
            popularity=self._popularity_message(prediction.rows[0], request.context.channel_id, age),
        )

    def CompareThumbnails(self, request, context) -> predictor_pb2.CompareThumbnailsResponse:  # noqa: N802
        version = _selected(request.model, POPULARITY)
        if len(request.candidates) < 2:
            raise InvalidInput("give at least two candidates to compare", field="candidates")
        too_many(len(request.candidates), self.limits.max_candidates, "candidates")
        images = [self.images.image(c.image, f"candidates[{i}].image") for i, c in enumerate(request.candidates)]
        with _observed("CompareThumbnails", POPULARITY) as record:
            prediction, age = self._popularity(images, request.context, version)
            record(prediction.version)
        means = np.array([row["prediction"] for row in prediction.rows])
        best = probability_best(means, float(prediction.rows[0]["sigma"]), self.limits.comparison_draws)
        order = sorted(range(len(means)), key=lambda i: (-best[i], -means[i], i))
        ranked = [
            predictor_pb2.RankedCandidate(
                rank=rank,
                index=index,
                label=request.candidates[index].label,
                probability_best=float(best[index]),
                popularity=self._popularity_message(prediction.rows[index], request.context.channel_id, age),
            )
            for rank, index in enumerate(order, start=1)
        ]
        return predictor_pb2.CompareThumbnailsResponse(id=current_request_id(), model=_spec(prediction), ranked=ranked)

    def _popularity(
        self, images: list[Image.Image], video: predictor_pb2.VideoContext, version: str | None
    ) -> tuple[Prediction, int]:
        served = version or self._default(POPULARITY)
        head = self.head_info(POPULARITY, served)
        known = self.catalogue().channel_subscribers.get(video.channel_id) if video.channel_id else None
        facts = facts_from_context(video, known_subscribers=known, horizon_s=self.limits.horizon_s, now=self.now())
        rows = feature_rows(head, self.embed(images), facts)
        prediction = self.manager.predict(POPULARITY, {"features": rows}, version=served)
        if "sigma" not in prediction.rows[0]:
            raise InvalidInput(f"popularity version {prediction.version} gives no spread: not a popularity model")
        return prediction, facts.age_seconds

    def _popularity_message(self, answer: dict[str, Any], channel_id: str, age_s: int) -> predictor_pb2.Popularity:
        mean, sigma = float(answer["prediction"]), float(answer["sigma"])
        z = _normal_quantile(0.5 + self.limits.interval_level / 2)
        probabilities = answer["bucket_probabilities"]
        percentile = self.catalogue().channel_percentile(channel_id, mean) if channel_id else -1.0
        return predictor_pb2.Popularity(
            buckets=[_bucket(index, p) for index, p in enumerate(probabilities)],
            predicted_bucket=int(np.argmax(probabilities)),
            expected_views=_views(mean),
            views_low=_views(mean - z * sigma),
            views_high=_views(mean + z * sigma),
            interval_level=self.limits.interval_level,
            channel_percentile=percentile,
            at_age_seconds=age_s,
        )

    # --- channel and genre ---------------------------------------------------------------------------------------

    def ClassifyChannel(self, request, context) -> predictor_pb2.ClassifyChannelResponse:  # noqa: N802
        version = _selected(request.model, CHANNEL)
        image = self.images.image(request.thumbnail, "thumbnail")
        with _observed("ClassifyChannel", CHANNEL) as record:
            prediction = self.manager.predict(CHANNEL, {"features": image_rows(self.embed([image]))}, version=version)
            record(prediction.version)
        answer = prediction.rows[0]
        titles = self.catalogue().channel_titles
        channels = [
            predictor_pb2.ChannelScore(channel_id=label, channel_title=titles.get(label, ""), probability=p)
            for label, p in _top(answer, request.top_k or self.limits.default_top_k)
        ]
        return predictor_pb2.ClassifyChannelResponse(
            id=current_request_id(), model=_spec(prediction), channels=channels
        )

    def PredictGenre(self, request, context) -> predictor_pb2.PredictGenreResponse:  # noqa: N802
        version = _selected(request.model, GENRE)
        frames, audio = self._sequences(request)
        with _observed("PredictGenre", GENRE) as record:
            body = {"frames": frames.tolist(), "audio": audio.tolist()}
            prediction = self.manager.predict(GENRE, body, version=version)
            record(prediction.version)
        genres = [
            predictor_pb2.GenreScore(category_id=label, name=category_name(label), probability=p)
            for label, p in _top(prediction.rows[0], request.top_k or self.limits.default_top_k)
        ]
        return predictor_pb2.PredictGenreResponse(id=current_request_id(), model=_spec(prediction), genres=genres)

    def _sequences(self, request: predictor_pb2.PredictGenreRequest) -> tuple[np.ndarray, np.ndarray]:
        """Frame embeddings [n, 1280] and audio features [seconds, bands] of a known video or of sent frames."""
        source = request.WhichOneof("source")
        if source == "video_id":
            known = self.catalogue().video(request.video_id)
            if not known.frames_vectors_key or not known.audio_features_key:
                raise InvalidInput(f"video {request.video_id!r} has no frames and audio to judge", field="video_id")
            return self.load_array(known.frames_vectors_key), self.load_array(known.audio_features_key)
        if source != "frames":
            raise InvalidInput("give a video_id or frames", field="source")
        sent = request.frames
        if not sent.frames:
            raise InvalidInput("frames.frames is empty", field="frames.frames")
        too_many(len(sent.frames), self.limits.max_frames, "frames.frames")
        images = [
            self.images.image(predictor_pb2.ImageInput(image_bytes=data), f"frames.frames[{i}]")
            for i, data in enumerate(sent.frames)
        ]
        return self.embed(images), _audio(sent)

    # --- similarity ----------------------------------------------------------------------------------------------

    def FindSimilar(self, request, context) -> predictor_pb2.FindSimilarResponse:  # noqa: N802
        query = request.query
        ask = embedding_pb2.SimilarRequest(id=current_request_id(), k=request.k or 10)
        if query.WhichOneof("source") == "video_id":
            ask.video_id = query.video_id
        else:
            ask.image = self.images.encoded(query, "query")
        with _observed("FindSimilar", "similarity") as record:
            found = self.similar(ask)
            record(found.model.version)
        catalogue = self.catalogue()
        return predictor_pb2.FindSimilarResponse(
            id=current_request_id(),
            model=found.model,
            matches=[_similar(match, catalogue) for match in found.matches],
        )

    # --- models ----------------------------------------------------------------------------------------------------

    def ListModels(self, request, context) -> predictor_pb2.ListModelsResponse:  # noqa: N802
        return predictor_pb2.ListModelsResponse(models=[_version(m) for m in self.manager.models(request.task)])

    def GetModelMetadata(self, request, context) -> predictor_pb2.ModelMetadata:  # noqa: N802
        task = request.model.name
        if not task:
            raise InvalidInput("name the model (its task)", field="model.name")
        version = request.model.version or self._default(task)
        served = [m for m in self.manager.models(task) if m.version == version]
        if not served:
            raise NotFound(f"model {task!r} version {version!r} is not loaded", field="model")
        head = self.head_info(task, version)
        return predictor_pb2.ModelMetadata(
            model=_version(served[0]),
            platform=served[0].platform,
            inputs=_input_specs(task, head),
            outputs=_output_specs(head),
            labels=head.config.get("labels") or head.config.get("bucket_names") or [],
        )

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _default(self, task: str) -> str:
        version = self.manager.default_version(task)
        if version is None:
            raise NotFound(f"no {task} model is served yet: none has been promoted", field="model")
        return version

    def head_info(self, task: str, version: str) -> HeadInfo:
        """The head's config, read once per version from its archive in the registry."""
        key = (task, version)
        with self._heads_lock:
            if key not in self._heads:
                archive = self.registry.fetch_archive(task, version, self.workdir / "heads" / task / version)
                self._heads[key] = HeadInfo.from_archive(archive)
            return self._heads[key]


def probability_best(means: np.ndarray, sigma: float, draws: int, seed: int = 0) -> np.ndarray:
    """P(candidate i draws the most views) when each candidate's log10 views ~ Normal(mean_i, sigma), independently.

    Independence overstates how differently two thumbnails of one video can fare, so these probabilities are
    conservative (closer to even) than the true ones; the ranking, by mean, is unaffected. A fixed seed keeps one
    request's answer stable."""
    rng = np.random.default_rng(seed)
    samples = means[None, :] + sigma * rng.standard_normal((draws, len(means)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(means))
    return wins / draws


@contextmanager
def _observed(rpc: str, task: str) -> Iterator[Callable[[str], None]]:
    """Count and time one model call under the version that answered it."""
    started, answered = time.perf_counter(), ["unknown"]
    try:
        yield lambda version: answered.__setitem__(0, version or "unknown")
    except TubelensError as exc:
        REQUESTS.labels(rpc, task, answered[0], type(exc).__name__).inc()
        raise
    REQUESTS.labels(rpc, task, answered[0], "ok").inc()
    REQUEST_SECONDS.labels(rpc, task, answered[0]).observe(time.perf_counter() - started)


def _selected(spec: common_pb2.ModelSpec, task: str) -> str | None:
    """The version a request asks for (None: the promoted one). A model name must be the RPC's task."""
    if spec.name and spec.name != task:
        raise NotFound(f"model {spec.name!r} does not answer this call; it is served by {task!r}", field="model.name")
    return spec.version or None


def _spec(prediction: Prediction) -> common_pb2.ModelSpec:
    return common_pb2.ModelSpec(name=prediction.task, version=prediction.version)


def _top(answer: dict[str, Any], k: int) -> list[tuple[str, float]]:
    pairs = sorted(zip(answer["labels"], answer["probabilities"], strict=True), key=lambda pair: -pair[1])
    return [(str(label), float(p)) for label, p in pairs[:k]]


def _bucket(index: int, probability: float) -> predictor_pb2.ViewBucket:
    lower = 0 if index == 0 else int(BUCKET_EDGES[index - 1])
    upper = int(BUCKET_EDGES[index]) if index < len(BUCKET_EDGES) else 0
    return predictor_pb2.ViewBucket(index=index, lower_views=lower, upper_views=upper, probability=float(probability))


def _views(log10_views_plus_one: float) -> float:
    return max(0.0, 10**log10_views_plus_one - 1)


def _normal_quantile(p: float) -> float:
    """Φ⁻¹(p) by bisection on erf: exact enough for interval ends, with no scipy in the serving path."""
    low, high = -10.0, 10.0
    for _ in range(80):
        middle = (low + high) / 2
        if 0.5 * (1 + math.erf(middle / math.sqrt(2))) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _audio(sent: predictor_pb2.FrameSequence) -> np.ndarray:
    bands = sent.audio_bands
    values = np.asarray(sent.audio_features, dtype=np.float32)
    if bands == 0 or len(values) == 0 or len(values) % bands:
        raise InvalidInput(
            f"frames.audio_features holds {len(values)} numbers, not whole rows of audio_bands={bands}",
            field="frames.audio_features",
        )
    return values.reshape(-1, bands)


def _similar(match: embedding_pb2.Match, catalogue: Catalogue) -> predictor_pb2.SimilarVideo:
    known = catalogue.videos.get(match.video_id)
    return predictor_pb2.SimilarVideo(
        video_id=match.video_id,
        score=match.score,
        near_duplicate=match.near_duplicate,
        title=known.title if known else "",
        channel_id=known.channel_id if known else "",
    )


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


def _input_specs(task: str, head: HeadInfo) -> Sequence[predictor_pb2.TensorSpec]:
    if task == GENRE:
        bands = int(head.config.get("audio_bands", -1))
        return [
            predictor_pb2.TensorSpec(name="frames", datatype="FP32", shape=[-1, EMBEDDING_DIM]),
            predictor_pb2.TensorSpec(name="audio", datatype="FP32", shape=[-1, bands]),
        ]
    return [predictor_pb2.TensorSpec(name="features", datatype="FP32", shape=[-1, head.input_dim])]


def _output_specs(head: HeadInfo) -> Sequence[predictor_pb2.TensorSpec]:
    if head.config.get("kind") == "regressor":
        return [
            predictor_pb2.TensorSpec(name="prediction", datatype="FP64", shape=[-1]),
            predictor_pb2.TensorSpec(name="sigma", datatype="FP64", shape=[-1]),
            predictor_pb2.TensorSpec(
                name="bucket_probabilities", datatype="FP64", shape=[-1, len(head.config.get("bucket_names", []))]
            ),
        ]
    labels = head.config.get("labels", [])
    return [predictor_pb2.TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(labels)])]
