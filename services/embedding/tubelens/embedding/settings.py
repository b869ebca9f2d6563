"""The embedding service's settings: TUBELENS_EMBEDDING__<FIELD>."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tubelens.settings import TubelensSettings

MB = 1024 * 1024


class EmbeddingSettings(BaseModel):
    onnx_path: Path | None = Field(default=None, description="exported backbone; default .tubelens/models/")
    intra_op_threads: int = Field(default=0, ge=0, description="onnxruntime threads; 0 = one per core")
    # On 2 CPU cores a forward pass of 8 is as fast per image as any; 32 is slower (cache). Raise it on a GPU.
    inference_batch: int = Field(default=8, ge=1, description="images per forward pass")
    # On a CPU a bigger batch is no cheaper per image: waiting for company only adds latency (use ~10 ms on a GPU).
    batch_window_ms: float = Field(default=0.0, ge=0, description="how long a gRPC request waits for company")
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=50061, ge=0, le=65535, description="0 picks a free port")
    max_image_bytes: int = Field(default=4 * MB, ge=1)
    max_images_per_request: int = Field(default=64, ge=1)
    exact_below: int = Field(default=20_000, ge=1, description="exact search below this many thumbnails")
    shard_prefix: str = "index/thumbnails"
    checkpoint_every: int = Field(
        default=10_000, ge=0, description="changed thumbnails between index checkpoints (graph + slots); 0 = never"
    )
    index_cache_dir: Path | None = Field(
        default=None, description="where index checkpoints are kept to be mapped at start; default a temp directory"
    )


class EmbeddingServiceSettings(TubelensSettings):
    service: str = "embedding"
    embedding: EmbeddingSettings = EmbeddingSettings()
