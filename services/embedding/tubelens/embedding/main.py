"""`tubelens embedding run`: consume thumbnails.stored and frames.extracted, serve the Embedder gRPC API."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from tubelens import events
from tubelens.embedding.api import EmbedderService
from tubelens.embedding.batching import MicroBatcher
from tubelens.embedding.handler import EmbeddingHandler
from tubelens.embedding.index import SimilarityIndex
from tubelens.embedding.settings import EmbeddingServiceSettings, EmbeddingSettings
from tubelens.modelkit.backbone import Backbone
from tubelens.rpc import RpcServer, serve
from tubelens.service import Runtime, run_worker_service
from tubelens.settings import load_settings
from tubelens.v1 import embedding_pb2_grpc

log = logging.getLogger(__name__)
GRPC_SERVICE = "tubelens.v1.Embedder"


def build_index(settings: EmbeddingSettings, backbone: Backbone, store) -> SimilarityIndex:
    """Everything indexed so far comes back from the newest checkpoint and the shards after it; events keep it
    current from there."""
    index = SimilarityIndex.load_shards(
        store,
        settings.shard_prefix,
        dim=backbone.dim,
        exact_below=settings.exact_below,
        checkpoint_every=settings.checkpoint_every,
        cache_dir=settings.index_cache_dir,
    )
    log.info("index restored", extra={"vectors": len(index), "exact": index.exact})
    return index


def build_handler(runtime: Runtime) -> EmbeddingHandler:
    settings: EmbeddingSettings = runtime.settings.embedding  # type: ignore[attr-defined]
    backbone = Backbone(settings.onnx_path, intra_op_threads=settings.intra_op_threads)
    return EmbeddingHandler(
        backbone,
        store=runtime.objects,
        producer=runtime.producer,
        index=build_index(settings, backbone, runtime.objects),
        shard_prefix=settings.shard_prefix,
        inference_batch=settings.inference_batch,
        service=runtime.settings.service,
    )


@dataclass
class EmbedderServer:
    rpc: RpcServer
    batcher: MicroBatcher

    def stop(self) -> None:
        self.rpc.stop(grace=5.0)
        self.batcher.close()


def start_api(runtime: Runtime, handler: EmbeddingHandler) -> list[EmbedderServer]:
    settings: EmbeddingSettings = runtime.settings.embedding  # type: ignore[attr-defined]
    batcher = MicroBatcher(
        handler.backbone.infer,
        max_images=settings.inference_batch,
        window_s=settings.batch_window_ms / 1000,
        max_pixels=handler.backbone.max_pixels,
    )
    service = EmbedderService(handler.backbone, batcher, handler.index, settings)
    rpc = serve(
        "embedding",
        [(embedding_pb2_grpc.add_EmbedderServicer_to_server, service)],
        service_names=[GRPC_SERVICE],
        host=settings.grpc_host,
        port=settings.grpc_port,
        max_message_bytes=settings.max_images_per_request * settings.max_image_bytes,
    )
    log.info("embedder listening", extra={"port": rpc.port})
    return [EmbedderServer(rpc, batcher)]


def run(args: argparse.Namespace) -> int:
    settings = load_settings(EmbeddingServiceSettings)
    return run_worker_service(
        settings,
        topics=[events.THUMBNAILS_STORED, events.FRAMES_EXTRACTED],
        group="embedding",
        build_handler=build_handler,
        needs_objects=True,
        start_servers=start_api,
    )
