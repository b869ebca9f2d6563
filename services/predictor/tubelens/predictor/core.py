"""The predictor's data plane, protocol-neutral: decoded pictures and plain values in, answers out.

Each call embeds its pictures with the model kit's backbone (the same one the trainer's snapshots were embedded with),
builds the head's feature rows with the model kit's feature code (`assemble`), and asks the model manager, which
routes to the promoted version unless the call names one. Errors are typed (tubelens.errors); the gRPC servicer
(`grpc_api`) is a thin adapter that turns requests into these calls and answers into messages, as KServe's data
plane sits under its REST and gRPC front ends.

Tasks served: `popularity` (a log10-views regressor with a predictive spread: buckets, expected views and an interval
come from one model), `channel` (a classifier over the image embedding) and `genre` (frames + audio). Similar
thumbnails come from the embedding service, which owns the index; the query picture is embedded here, so the
predictor reaches the embedding model one way only: in process.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np
from PIL import Image

from tubelens.errors import InvalidInput, NotFound
from tubelens.images import phash
from tubelens.labels import BUCKET_EDGES, category_name
from tubelens.modelkit.registry import ModelRegistry
from tubelens.modelkit.schema import EMBEDDING_DIM
from tubelens.predictor.assemble import HeadInfo, VideoFacts, facts_for, feature_rows, image_rows
from tubelens.predictor.catalogue import Catalogue
from tubelens.predictor.models import Lease, ModelManager, Prediction, ServedModel
from tubelens.v1 import embedding_pb2

POPULARITY, CHANNEL, GENRE, SIMILARITY = "popularity", "channel", "genre", "similarity"

Embed = Callable[[list[Image.Image]], np.ndarray]  # float32 [n, 1280], L2-normalized
Similar = Callable[[embedding_pb2.SimilarRequest], embedding_pb2.SimilarResponse]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    horizon_s: int = 7 * 86400  # the age a popularity prediction is for when the caller gives no publish time
    interval_level: float = 0.8  # the central interval of predicted views
    max_candidates: int = 16
    max_frames: int = 64
    default_top_k: int = 5
    comparison_draws: int = 20_000  # Monte Carlo draws behind a comparison's probability_best


@dataclass(frozen=True)
class VideoContext:
    """What a caller says of the video a picture belongs to; None and "" mean "not said"."""

    title: str = ""
    channel_id: str = ""
    channel_subscribers: int | None = None
    published_at: datetime | None = None


@dataclass(frozen=True)
class ModelRef:
    task: str
    version: str


@dataclass(frozen=True)
class Bucket:
    index: int
    lower_views: int
    upper_views: int  # 0: no upper bound
    probability: float


@dataclass(frozen=True)
class Popularity:
    buckets: list[Bucket]
    predicted_bucket: int
    expected_views: float
    views_low: float
    views_high: float
    interval_level: float
    channel_percentile: float  # -1 when the channel is unknown
    at_age_seconds: int


@dataclass(frozen=True)
class Ranked:
    rank: int
    index: int  # the candidate's position in the call
    probability_best: float
    popularity: Popularity


@dataclass(frozen=True)
class Score:
    label: str  # a channel id or a category id
    name: str  # the channel's title or the category's name; "" when unknown
    probability: float


@dataclass(frozen=True)
class SimilarVideo:
    video_id: str
    score: float  # what the matches are ordered by: the cosine less the perceptual-hash penalty, when known
    near_duplicate: bool
    title: str
    channel_id: str
    cosine: float  # the embeddings' cosine similarity alone


@dataclass(frozen=True)
class Answer:
    """A model's answer and the version that gave it."""

    model: ModelRef
    value: Any


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelMetadata:
    model: ServedModel
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str]
    versions: list[str]  # every loaded version of the model, the default first


class PredictorCore:
    def __init__(
        self,
        manager: ModelManager,
        registry: ModelRegistry,
        *,
        embed: Embed,
        similar: Similar,
        catalogue: Callable[[], Catalogue],
        load_array: Callable[[str], np.ndarray],
        workdir: Path,
        limits: Limits = Limits(),  # noqa: B008 - frozen
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.manager = manager
        self.registry = registry
        self.embed = embed
        self.similar_service = similar
        self.catalogue = catalogue
        self.load_array = load_array
        self.workdir = workdir
        self.limits = limits
        self.now = now
        self._heads: dict[tuple[str, str], HeadInfo] = {}
        self._heads_lock = Lock()

    # --- popularity ----------------------------------------------------------------------------------------------

    def popularity(self, image: Image.Image, video: VideoContext, version: str | None = None) -> Answer:
        prediction, facts = self._popularity([image], video, version)
        return Answer(_ref(prediction), self._popularity_of(prediction.rows[0], video.channel_id, facts.age_seconds))

    def compare(self, images: list[Image.Image], video: VideoContext, version: str | None = None) -> Answer:
        """The candidates ranked by their chance of drawing the most views (`Ranked`, best first)."""
        if len(images) < 2:
            raise InvalidInput("give at least two candidates to compare", field="candidates")
        prediction, facts = self._popularity(images, video, version)
        means = np.array([row["prediction"] for row in prediction.rows])
        best = probability_best(means, float(prediction.rows[0]["sigma"]), self.limits.comparison_draws)
        order = sorted(range(len(means)), key=lambda i: (-best[i], -means[i], i))
        ranked = [
            Ranked(
                rank=rank,
                index=index,
                probability_best=float(best[index]),
                popularity=self._popularity_of(prediction.rows[index], video.channel_id, facts.age_seconds),
            )
            for rank, index in enumerate(order, start=1)
        ]
        return Answer(_ref(prediction), ranked)

    def _popularity(
        self, images: list[Image.Image], video: VideoContext, version: str | None
    ) -> tuple[Prediction, VideoFacts]:
        # The version is held from here until it has answered: a swap meanwhile cannot unload it under this request.
        with self.lease(POPULARITY, version) as held:
            return self._popularity_with(held, images, video)

    def _popularity_with(
        self, held: Lease, images: list[Image.Image], video: VideoContext
    ) -> tuple[Prediction, VideoFacts]:
        head = self.head_info(POPULARITY, held.version)
        known = self.catalogue().channel_subscribers.get(video.channel_id) if video.channel_id else None
        facts = facts_for(
            video.title,
            subscribers=video.channel_subscribers if video.channel_subscribers else known,
            published_at=video.published_at,
            horizon_s=self.limits.horizon_s,
            now=self.now(),
        )
        rows = feature_rows(head, self.embed(images), facts)
        prediction = self.manager.predict(POPULARITY, {"features": rows}, lease=held)
        if "sigma" not in prediction.rows[0]:
            raise InvalidInput(f"popularity version {prediction.version} gives no spread: not a popularity model")
        clamped = sorted({name for row in prediction.rows for name in row.get("clamped", [])})
        if clamped:
            # The head holds features outside its training range to that range (a linear model would extrapolate):
            # the answer is for the nearest age the model has seen, not the one asked.
            log.info(
                "features outside the model's training range were clamped to it",
                extra={"version": prediction.version, "clamped": clamped, "age_seconds": facts.age_seconds},
            )
        return prediction, facts

    def _popularity_of(self, answer: dict[str, Any], channel_id: str, age_s: int) -> Popularity:
        mean, sigma = float(answer["prediction"]), float(answer["sigma"])
        z = normal_quantile(0.5 + self.limits.interval_level / 2)
        probabilities = answer["bucket_probabilities"]
        return Popularity(
            buckets=[_bucket(index, p) for index, p in enumerate(probabilities)],
            predicted_bucket=int(np.argmax(probabilities)),
            expected_views=_views(mean),
            views_low=_views(mean - z * sigma),
            views_high=_views(mean + z * sigma),
            interval_level=self.limits.interval_level,
            channel_percentile=self.catalogue().channel_percentile(channel_id, mean) if channel_id else -1.0,
            at_age_seconds=age_s,
        )

    # --- channel and genre ---------------------------------------------------------------------------------------

    def channel(self, image: Image.Image, top_k: int = 0, version: str | None = None) -> Answer:
        """The most likely channels (`Score`, best first)."""
        prediction = self.manager.predict(CHANNEL, {"features": image_rows(self.embed([image]))}, version=version)
        titles = self.catalogue().channel_titles
        scores = [
            Score(label, titles.get(label, ""), p)
            for label, p in _top(prediction.rows[0], top_k or self.limits.default_top_k)
        ]
        return Answer(_ref(prediction), scores)

    def genre_of_video(self, video_id: str, top_k: int = 0, version: str | None = None) -> Answer:
        """The genres of a video the catalogue knows, from its stored frame embeddings and audio features."""
        known = self.catalogue().video(video_id)
        if not known.frames_vectors_key or not known.audio_features_key:
            raise InvalidInput(f"video {video_id!r} has no frames and audio to judge", field="video_id")
        frames, audio = self.load_array(known.frames_vectors_key), self.load_array(known.audio_features_key)
        return self._genre(frames, audio, top_k, version)

    def genre_of_frames(
        self, frames: list[Image.Image], audio: np.ndarray, top_k: int = 0, version: str | None = None
    ) -> Answer:
        """The genres of sent frames (decoded pictures) and their audio features [seconds, bands]."""
        if not frames:
            raise InvalidInput("frames.frames is empty", field="frames.frames")
        return self._genre(self.embed(frames), audio, top_k, version)

    def _genre(self, frames: np.ndarray, audio: np.ndarray, top_k: int, version: str | None) -> Answer:
        body = {"frames": frames.tolist(), "audio": audio.tolist()}
        prediction = self.manager.predict(GENRE, body, version=version)
        scores = [
            Score(label, category_name(label), p)
            for label, p in _top(prediction.rows[0], top_k or self.limits.default_top_k)
        ]
        return Answer(_ref(prediction), scores)

    # --- similarity ----------------------------------------------------------------------------------------------

    def similar_to_image(self, image: Image.Image, k: int, request_id: str = "") -> Answer:
        """Indexed thumbnails nearest to a picture, which is embedded here and searched by its vector and pHash."""
        vector = embedding_pb2.Vector(values=self.embed([image])[0].tolist())
        ask = embedding_pb2.SimilarRequest(id=request_id, k=k, vector=vector, phash=phash(image))
        return self._similar(ask)

    def similar_to_video(self, video_id: str, k: int, request_id: str = "") -> Answer:
        return self._similar(embedding_pb2.SimilarRequest(id=request_id, k=k, video_id=video_id))

    def _similar(self, ask: embedding_pb2.SimilarRequest) -> Answer:
        found = self.similar_service(ask)
        catalogue = self.catalogue()
        matches = []
        for match in found.matches:
            known = catalogue.videos.get(match.video_id)
            matches.append(
                SimilarVideo(
                    match.video_id,
                    match.score,
                    match.near_duplicate,
                    known.title if known else "",
                    known.channel_id if known else "",
                    match.cosine,
                )
            )
        return Answer(ModelRef(found.model.name, found.model.version), matches)

    # --- models ----------------------------------------------------------------------------------------------------

    def models(self, task: str = "") -> list[ServedModel]:
        return self.manager.models(task)

    def metadata(self, task: str, version: str | None = None) -> ModelMetadata:
        if not task:
            raise InvalidInput("name the model (its task)", field="model.name")
        self.check_known(task)
        with self.lease(task, version) as held:
            loaded = self.manager.models(task)
            head = self.head_info(task, held.version)
            return ModelMetadata(
                model=self.manager.leased_model(held),
                inputs=_input_specs(task, head),
                outputs=_output_specs(head),
                labels=list(head.config.get("labels") or head.config.get("bucket_names") or []),
                versions=[m.version for m in sorted(loaded, key=lambda m: not m.is_default)],
            )

    @contextlib.contextmanager
    def lease(self, task: str, version: str | None = None) -> Iterator[Lease]:
        """Hold `version` of `task` (None: its default) for one request, until it is answered; NotFound worded for
        clients (the task unknown, nothing loaded yet and why, or which versions are loaded instead)."""
        self.loaded_version(task, version)
        with self.manager.lease(task, version) as held:
            yield held

    def served_tasks(self) -> list[str]:
        """The tasks this predictor is configured to serve, whether or not a version is loaded yet."""
        return [status.task for status in self.manager.status()]

    def check_known(self, task: str) -> None:
        """NotFound for a model name this predictor does not serve at all (not: serves, but has nothing loaded)."""
        if task not in self.served_tasks():
            known = ", ".join(self.served_tasks()) or "none"
            raise NotFound(f"model {task!r} is unknown here; the models served are: {known}", field="model.name")

    def loaded_version(self, task: str, version: str | None) -> str:
        """`version` if it is loaded, else NotFound naming what is; None: the default version."""
        if version is None:
            return self.default_version(task)
        loaded = [m.version for m in self.manager.models(task)]
        if version not in loaded:
            raise NotFound(
                f"model {task!r} has no version {version!r} loaded; loaded: {', '.join(loaded) or 'none'}",
                field="model.version",
            )
        return version

    def default_version(self, task: str) -> str:
        version = self.manager.default_version(task)
        if version is None:
            self.check_known(task)
            why = next((status.detail for status in self.manager.status() if status.task == task), "")
            raise NotFound(f"no {task} model is loaded yet{f': {why}' if why else ''}", field="model.name")
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


def normal_quantile(p: float) -> float:
    """Φ⁻¹(p) by bisection on erf: exact enough for interval ends, with no scipy in the serving path."""
    low, high = -10.0, 10.0
    for _ in range(80):
        middle = (low + high) / 2
        if 0.5 * (1 + math.erf(middle / math.sqrt(2))) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _ref(prediction: Prediction) -> ModelRef:
    return ModelRef(prediction.task, prediction.version)


def _top(answer: dict[str, Any], k: int) -> list[tuple[str, float]]:
    pairs = sorted(zip(answer["labels"], answer["probabilities"], strict=True), key=lambda pair: -pair[1])
    return [(str(label), float(p)) for label, p in pairs[:k]]


def _bucket(index: int, probability: float) -> Bucket:
    lower = 0 if index == 0 else int(BUCKET_EDGES[index - 1])
    upper = int(BUCKET_EDGES[index]) if index < len(BUCKET_EDGES) else 0
    return Bucket(index, lower, upper, float(probability))


def _views(log10_views_plus_one: float) -> float:
    return max(0.0, 10**log10_views_plus_one - 1)


def _input_specs(task: str, head: HeadInfo) -> list[TensorSpec]:
    if task == GENRE:
        bands = audio_bands(head)
        return [TensorSpec("frames", "FP32", [-1, EMBEDDING_DIM]), TensorSpec("audio", "FP32", [-1, bands])]
    return [TensorSpec("features", "FP32", [-1, head.input_dim])]


def audio_bands(head: HeadInfo) -> int:
    """The audio features per second a genre model reads (its head.json's architecture); -1 when it has none."""
    return int(head.config.get("architecture", {}).get("audio_bands", -1))


def _output_specs(head: HeadInfo) -> list[TensorSpec]:
    if head.config.get("kind") == "regressor":
        buckets = len(head.config.get("bucket_names", []))
        return [
            TensorSpec("prediction", "FP64", [-1]),
            TensorSpec("sigma", "FP64", [-1]),
            TensorSpec("bucket_probabilities", "FP64", [-1, buckets]),
        ]
    return [TensorSpec("probabilities", "FP32", [-1, len(head.config.get("labels", []))])]
