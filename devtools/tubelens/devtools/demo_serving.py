"""The demo's second half: models trained into the registry as `tubelens trainer run` trains them, and the gRPC
predictor served over them on a free loopback port, as `tubelens predictor run` serves them, only in-process (the
in-process runner instead of TorchServe, the embedding API over the demo's own index)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
from PIL import Image

from tubelens.bus import Producer
from tubelens.embedding.handler import EmbeddingHandler
from tubelens.embedding.index import SimilarityIndex
from tubelens.embedding.main import EmbedderServer, start_api
from tubelens.embedding.settings import EmbeddingServiceSettings, EmbeddingSettings
from tubelens.errors import InvalidInput
from tubelens.modelkit.backbone import Backbone
from tubelens.modelkit.registry import ModelRegistry
from tubelens.objects import ObjectStore
from tubelens.predictor.assemble import VideoFacts, feature_rows
from tubelens.predictor.main import PredictorApp, backbone_embedder, build_app, embedding_similar
from tubelens.predictor.settings import ApiSettings, PredictorSettings, RuntimeKind
from tubelens.rpc import RpcServer
from tubelens.service import Runtime
from tubelens.trainer.train import DEFAULT_TASKS, TrainingResult, run_training
from tubelens.v1 import predictor_pb2, predictor_pb2_grpc

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


@dataclass
class Trained:
    results: list[TrainingResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it could not be trained on this snapshot


def train_models(table: pa.Table, snapshot_id: str, store: ObjectStore, producer: Producer, seed: int) -> Trained:
    """Every default task into the registry, one at a time: a task this snapshot cannot support (too few videos
    with media for genre on held-out channels) is skipped with its reason instead of stopping the others."""
    trained = Trained()
    registry = ModelRegistry(store)
    for task in DEFAULT_TASKS:
        try:
            trained.results += run_training(table, snapshot_id, [task], registry=registry, producer=producer, seed=seed)
        except InvalidInput as exc:
            trained.skipped[task] = exc.message
            log.warning("task skipped", extra={"task": task, "reason": exc.message})
    return trained


@dataclass
class Serving:
    """The predictor and the embedding API it asks for similar thumbnails, both on free loopback ports."""

    app: PredictorApp
    predictor: RpcServer
    embedder: EmbedderServer

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.predictor.port}"

    def stop(self) -> None:
        self.predictor.stop(grace=2.0)
        self.embedder.stop()
        self.app.close()


def start_serving(store: ObjectStore, backbone: Backbone, index: SimilarityIndex, workdir: Path) -> Serving:
    embedding_settings = EmbeddingServiceSettings(
        bus="memory", objects="local", embedding=EmbeddingSettings(grpc_host=LOOPBACK, grpc_port=0)
    )
    handler = EmbeddingHandler(backbone, store=None, producer=None, index=index, shard_prefix="index/demo-serving")
    [embedder] = start_api(Runtime(embedding_settings, None, None, None), handler)
    settings = PredictorSettings(
        runtime=RuntimeKind.IN_PROCESS,
        workdir=workdir / "predictor",
        api=ApiSettings(grpc_host=LOOPBACK, grpc_port=0),
    )
    app = build_app(
        settings,
        store,
        embed=backbone_embedder(backbone),
        similar=embedding_similar(f"{LOOPBACK}:{embedder.rpc.port}", 5.0),
    )
    return Serving(app, app.serve(), embedder)


def sample_call(address: str, video_id: str, title: str) -> predictor_pb2.PredictPopularityResponse:
    """One real PredictPopularity over gRPC: the proof that the served predictor answers."""
    with grpc.insecure_channel(address) as channel:
        request = predictor_pb2.PredictPopularityRequest(
            id="demo-1",
            thumbnail=predictor_pb2.ImageInput(video_id=video_id),
            context=predictor_pb2.VideoContext(title=title),
        )
        return predictor_pb2_grpc.PredictorStub(channel).PredictPopularity(request, timeout=30)


def client_example(address: str, video_id: str) -> str:
    """A ready-to-paste client: Python with the generated stubs, and grpcurl through server reflection."""
    return f"""# Python (in this checkout: .venv/bin/python)
import grpc
from tubelens.v1 import predictor_pb2 as pb, predictor_pb2_grpc as rpc
stub = rpc.PredictorStub(grpc.insecure_channel("{address}"))
answer = stub.PredictPopularity(pb.PredictPopularityRequest(
    thumbnail=pb.ImageInput(video_id="{video_id}"), context=pb.VideoContext(title="My new video")))
print(answer.popularity.expected_views, [round(b.probability, 3) for b in answer.popularity.buckets])

# grpcurl (reflection is on)
grpcurl -plaintext -d '{{"thumbnail": {{"video_id": "{video_id}"}}}}' \\
    {address} tubelens.v1.Predictor/PredictPopularity"""


def popularity_predictor(serving: Serving, facts: VideoFacts) -> Callable[[list[Image.Image]], np.ndarray]:
    """Predicted log10 views for images of one video (its facts fixed): what the occlusion heatmap perturbs."""
    core, manager = serving.app.core, serving.app.manager
    version = manager.default_version("popularity")
    if version is None:
        raise InvalidInput("no popularity model is served")
    head = core.head_info("popularity", version)

    def predict(images: list[Image.Image]) -> np.ndarray:
        rows = feature_rows(head, core.embed(images), facts)
        answer = manager.predict("popularity", {"features": rows}, version=version)
        return np.array([row["prediction"] for row in answer.rows], dtype=np.float64)

    return predict
