"""`tubelens predictor run`: serve the Predictor gRPC API over the promoted models, and swap in newly promoted ones.

One process holds: the model manager over a runtime (TorchServe, or in-process for the embedded demo), the image
backbone and the catalogue of known videos, the gRPC server, and a bus worker on `models.trained`. Every replica
consumes that topic in its own consumer group (`predictor-<hostname>`), because every replica must swap, not one.

Start-up order: the gRPC server first, NOT_SERVING (its "liveness" health and ServerLive answer at once); then each
task's production version is loaded and warmed (`readiness`); then health turns SERVING. The bus worker's first
`models.trained` waits for that, so a swap never races the initial load.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
from PIL import Image

from tubelens import events
from tubelens.bus import Message
from tubelens.errors import DependencyUnavailable, InvalidInput, NotFound, TubelensError
from tubelens.fetch import Fetcher
from tubelens.modelkit.backbone import Backbone
from tubelens.modelkit.registry import ModelRegistry
from tubelens.objects import ObjectStore
from tubelens.predictor.catalogue import Catalogue, load_catalogue
from tubelens.predictor.core import Limits, PredictorCore
from tubelens.predictor.factory import open_runtime
from tubelens.predictor.grpc_api import PredictorServicer
from tubelens.predictor.inputs import ImageLimits, ImageResolver
from tubelens.predictor.metrics import record_request
from tubelens.predictor.models import ModelManager
from tubelens.predictor.readiness import Readiness
from tubelens.predictor.runtime import ModelRuntime
from tubelens.predictor.settings import PredictorServiceSettings, PredictorSettings
from tubelens.predictor.swap import swap_handler
from tubelens.rpc import RpcServer, serve, typed_error
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
    readiness: Readiness
    on_trained: Callable[[Message], None]
    servers: list[RpcServer] = field(default_factory=list)
    loaded: threading.Event = field(default_factory=threading.Event)

    def __call__(self, message: Message) -> None:
        self.loaded.wait()  # a swap must not race the initial load
        self.on_trained(message)
        self.catalogue.refresh(events.decode(message.value).model_trained.dataset_snapshot_id)
        self.readiness.warm_defaults()

    def load(self) -> None:
        """Load each task's production version and warm it; health turns SERVING once all are warm."""
        try:
            self.manager.start(self.settings.tasks)
            for status in self.manager.status():
                extra = {"task": status.task, "version": status.version, "detail": status.detail}
                log.info("model status", extra=extra)
            self.readiness.warm_defaults()
        finally:
            self.loaded.set()  # whatever happened: a promoted version arriving later may still bring a task up

    def serve(self, *, host: str | None = None, port: int | None = None) -> RpcServer:
        """Start the gRPC server, SERVING only if every task is already warm (it follows readiness from then on)."""
        api = self.settings.api
        server = serve(
            "predictor",
            [(predictor_pb2_grpc.add_PredictorServicer_to_server, self.servicer)],
            service_names=[GRPC_SERVICE],
            host=api.grpc_host if host is None else host,
            port=api.grpc_port if port is None else port,
            workers=api.workers,
            max_message_bytes=api.max_candidates * api.max_image_bytes + 1024 * 1024,
            serving=self.readiness.ready,
            observers=[record_request],
        )
        self.servers.append(server)
        return server

    def set_serving(self, ready: bool) -> None:
        for server in self.servers:
            server.set_serving(ready)

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
    """`open_app`, then load and warm the promoted models before returning."""
    app = open_app(settings, store, runtime=runtime, embed=embed, similar=similar)
    app.load()
    return app


def open_app(
    settings: PredictorSettings,
    store: ObjectStore,
    *,
    runtime: ModelRuntime | None = None,
    embed: Callable[[list[Image.Image]], np.ndarray] | None = None,
    similar: Callable[[embedding_pb2.SimilarRequest], embedding_pb2.SimilarResponse] | None = None,
) -> PredictorApp:
    """Everything but the models: the catalogue, the backbone, the core and its gRPC adapter. `embed` and `similar`
    default to an in-process backbone and the embedding service at `settings.api.embedding_address`."""
    registry = ModelRegistry(store)
    manager = ModelManager(
        registry, runtime or open_runtime(settings), settings.workdir, drain_timeout_s=settings.drain_timeout_s
    )
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
    holder: list[PredictorApp] = []
    readiness = Readiness(core, on_change=lambda ready: holder[0].set_serving(ready) if holder else None)
    app = PredictorApp(
        settings, manager, core, PredictorServicer(core, images, readiness), catalogue, readiness, swap_handler(manager)
    )
    holder.append(app)
    return app


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


# What the embedding service may say about the caller's own request: passed on as it is, field path included.
_CALLERS_FAULT = (InvalidInput, NotFound)


def _typed(exc: grpc.RpcError, address: str) -> TubelensError:
    """The embedding service's typed error when the request was at fault; otherwise Unavailable, saying nothing of
    where the service is or how the connection failed (that goes to the log)."""
    typed = typed_error(exc)
    if isinstance(typed, _CALLERS_FAULT):  # TooLarge is an InvalidInput
        return typed
    log.warning(
        "embedding service call failed", extra={"address": address, "code": exc.code().name, "error": exc.details()}
    )
    return DependencyUnavailable("the similarity index is unavailable; try again later", dependency="embedding")


def _load(app: PredictorApp) -> None:
    try:
        app.load()
    except Exception:  # noqa: BLE001 - the server stays up and NOT_SERVING; ServerReady and the log say why
        log.exception("loading the models failed; the predictor stays not ready")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(PredictorServiceSettings)
    apps: list[PredictorApp] = []

    def build(runtime: Runtime) -> PredictorApp:
        app = open_app(settings.predictor, runtime.objects)
        apps.append(app)
        return app

    def start(runtime: Runtime, handler: PredictorApp) -> list[RpcServer]:
        server = handler.serve()
        log.info("predictor listening", extra={"port": server.port, "ready": handler.readiness.ready})
        # Loading and warming take seconds to minutes: beside the worker, which waits for it before any swap.
        threading.Thread(target=_load, args=(handler,), name="predictor-load", daemon=True).start()
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
