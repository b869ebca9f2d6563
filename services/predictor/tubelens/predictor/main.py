"""`tubelens predictor run`: serve the Predictor gRPC API over the promoted models, and swap in newly promoted ones.

One process holds: the model manager over a runtime (TorchServe, or in-process for the embedded demo), the image
backbone and the catalogue of known videos, the gRPC server, and a bus worker on `models.trained`. Every replica
consumes that topic in its own consumer group (`predictor-<hostname>`), because every replica must swap, not one.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from tubelens import events
from tubelens.bus import Message
from tubelens.errors import InvalidInput, NotFound, TooLarge, Unavailable
from tubelens.fetch import Fetcher
from tubelens.modelkit.backbone import Backbone
from tubelens.modelkit.registry import ModelRegistry
from tubelens.objects import ObjectStore
from tubelens.predictor.catalogue import Catalogue, load_catalogue
from tubelens.predictor.core import Limits, PredictorCore
from tubelens.predictor.factory import open_runtime
from tubelens.predictor.grpc_api import PredictorServicer
from tubelens.predictor.inputs import ImageLimits, ImageResolver
from tubelens.predictor.models import ModelManager
from tubelens.predictor.runtime import ModelRuntime
from tubelens.predictor.settings import PredictorServiceSettings, PredictorSettings
from tubelens.predictor.swap import swap_handler
from tubelens.rpc import RpcServer, serve
from tubelens.service import Runtime, run_worker_service
from tubelens.settings import load_settings
from tubelens.v1 import embedding_pb2, embedding_pb2_grpc, predictor_pb2_grpc

log = logging.getLogger(__name__)
GRPC_SERVICE = "tubelens.v1.Predictor"


class CatalogueHolder:
    """The current catalogue, swapped whole when a promoted model names a newer snapshot: a request holds the old
    one or the new one, never a half-built mix, so reads need no lock."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.current = load_catalogue(store)

    def get(self) -> Catalogue:
        return self.current

    def refresh(self, snapshot_id: str) -> None:
        if snapshot_id and snapshot_id > self.current.snapshot_id:
            self.current = load_catalogue(self.store, snapshot_id)


@dataclass
class PredictorApp:
    """Everything one predictor serves with; also the `models.trained` handler of its bus worker."""

    settings: PredictorSettings
    manager: ModelManager
    core: PredictorCore
    servicer: PredictorServicer
    catalogue: CatalogueHolder
    on_trained: Callable[[Message], None]

    def __call__(self, message: Message) -> None:
        self.on_trained(message)
        self.catalogue.refresh(events.decode(message.value).model_trained.dataset_snapshot_id)

    def serve(self, *, host: str | None = None, port: int | None = None) -> RpcServer:
        api = self.settings.api
        return serve(
            "predictor",
            [(predictor_pb2_grpc.add_PredictorServicer_to_server, self.servicer)],
            service_names=[GRPC_SERVICE],
            host=api.grpc_host if host is None else host,
            port=api.grpc_port if port is None else port,
            workers=api.workers,
            max_message_bytes=api.max_candidates * api.max_image_bytes + 1024 * 1024,
        )

    def close(self) -> None:
        self.manager.runtime.close()


def build_app(
    settings: PredictorSettings,
    store: ObjectStore,
    *,
    runtime: ModelRuntime | None = None,
    embed: Callable[[list[Image.Image]], np.ndarray] | None = None,
    similar: Callable[[embedding_pb2.SimilarRequest], embedding_pb2.SimilarResponse] | None = None,
) -> PredictorApp:
    """Load the promoted models and the catalogue; `embed` and `similar` default to an in-process backbone and the
    embedding service at `settings.api.embedding_address`."""
    registry = ModelRegistry(store)
    manager = ModelManager(
        registry, runtime or open_runtime(settings), settings.workdir, drain_timeout_s=settings.drain_timeout_s
    )
    manager.start(settings.tasks)
    for status in manager.status():
        log.info("model status", extra={"task": status.task, "version": status.version, "detail": status.detail})
    api = settings.api
    catalogue = CatalogueHolder(store)
    fetcher = (
        Fetcher(api.allowed_hosts, connect_timeout_s=1.0, read_timeout_s=api.fetch_deadline_s, user_agent="tubelens")
        if api.allowed_hosts
        else None
    )
    images = ImageResolver(
        ImageLimits(api.max_image_bytes, api.max_image_pixels, api.fetch_deadline_s),
        store=store,
        catalogue=catalogue.get,
        fetcher=fetcher,
    )
    core = PredictorCore(
        manager,
        registry,
        embed=embed or backbone_embedder(Backbone(max_pixels=api.max_image_pixels)),
        similar=similar or embedding_similar(api.embedding_address, api.embedding_timeout_s),
        catalogue=catalogue.get,
        load_array=lambda key: np.load(io.BytesIO(store.get(key)), allow_pickle=False),
        workdir=settings.workdir,
        limits=Limits(
            horizon_s=api.horizon_s,
            interval_level=api.interval_level,
            max_candidates=api.max_candidates,
            max_frames=api.max_frames,
        ),
    )
    return PredictorApp(settings, manager, core, PredictorServicer(core, images), catalogue, swap_handler(manager))


def backbone_embedder(backbone: Backbone) -> Callable[[list[Image.Image]], np.ndarray]:
    return lambda images: backbone.embed(images).vectors


def embedding_similar(
    address: str, timeout_s: float
) -> Callable[[embedding_pb2.SimilarRequest], embedding_pb2.SimilarResponse]:
    """FindSimilar's way to the embedding service, which owns the index; its errors come back typed."""
    stub = embedding_pb2_grpc.EmbedderStub(grpc.insecure_channel(address))

    def similar(request: embedding_pb2.SimilarRequest) -> embedding_pb2.SimilarResponse:
        try:
            return stub.Similar(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _typed(exc, address) from None

    return similar


def _typed(exc: grpc.RpcError, address: str) -> Exception:
    code, details = exc.code(), exc.details() or ""
    by_code = {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.RESOURCE_EXHAUSTED: TooLarge,
    }
    if code in by_code:
        return by_code[code](details)
    return Unavailable(f"the embedding service at {address} answered {code.name}: {details}")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(PredictorServiceSettings)
    apps: list[PredictorApp] = []

    def build(runtime: Runtime) -> PredictorApp:
        app = build_app(settings.predictor, runtime.objects)
        apps.append(app)
        return app

    def start(runtime: Runtime, handler: PredictorApp) -> list[RpcServer]:
        server = handler.serve()
        log.info("predictor listening", extra={"port": server.port})
        return [server]

    try:
        return run_worker_service(
            settings,
            topics=[events.MODELS_TRAINED],
            group=f"predictor-{socket.gethostname()}",
            build_handler=build,
            needs_objects=True,
            start_servers=start,
        )
    finally:
        for app in apps:
            app.close()
