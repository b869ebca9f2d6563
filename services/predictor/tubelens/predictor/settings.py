"""The predictor's settings: TUBELENS_PREDICTOR__<FIELD>, and TUBELENS_PREDICTOR__TORCHSERVE__<FIELD> for the
TorchServe adapter."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from tubelens.settings import HostList, TubelensSettings

# The trainer's tasks (tubelens.trainer.train.SPECS); a task with no production version is simply not served.
DEFAULT_TASKS = ("popularity", "channel", "genre")
MB = 1024 * 1024


class RuntimeKind(StrEnum):
    TORCHSERVE = "torchserve"
    IN_PROCESS = "in-process"


class TorchServeSettings(BaseModel):
    # No defaults: a guessed port could reach some other server. `tubelens stack up` writes both, the chart sets
    # them to its sidecar, and the TorchServe runtime refuses to start without them.
    inference_url: str = ""
    management_url: str = ""
    # TorchServe reads archives from its model store, so the predictor must be able to write there (a shared volume).
    model_store: Path = Path(".tubelens") / "model-store"
    initial_workers: int = Field(default=1, ge=1, description="workers per loaded version")
    batch_size: int = Field(default=1, ge=1, description="requests TorchServe may batch into one handler call")
    max_batch_delay_ms: int = Field(default=50, ge=0, description="how long a batch waits for company")
    pool_size: int = Field(default=16, ge=1, description="keep-alive connections to the inference API")
    # Registering starts a Python worker that imports torch: seconds, not milliseconds.
    load_timeout_s: float = Field(default=180.0, gt=0, description="registration plus warm-up of one version")


class ApiSettings(BaseModel):
    """The gRPC front door: TUBELENS_PREDICTOR__API__<FIELD>."""

    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="0 picks a free port")
    workers: int = Field(default=8, ge=1, description="gRPC handler threads")
    max_image_bytes: int = Field(default=4 * MB, ge=1, description="one encoded image, inline or fetched")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="declared width x height, checked first")
    max_candidates: int = Field(default=16, ge=2, description="thumbnails in one CompareThumbnails")
    max_frames: int = Field(default=64, ge=1, description="frames in one PredictGenre")
    # Image URLs are fetched only from these hosts (comma-separated); empty turns URLs off.
    allowed_hosts: HostList = ()
    fetch_deadline_s: float = Field(default=5.0, gt=0)
    horizon_s: int = Field(default=7 * 86400, ge=3600, description="the age predicted views refer to by default")
    interval_level: float = Field(default=0.8, gt=0, lt=1, description="the central interval of predicted views")
    embedding_address: str = Field(default="embedding:50061", description="the embedding service, for FindSimilar")
    embedding_timeout_s: float = Field(default=2.0, gt=0)


class PredictorSettings(BaseModel):
    runtime: RuntimeKind = RuntimeKind.TORCHSERVE
    tasks: list[str] = Field(default=list(DEFAULT_TASKS), description="tasks whose production version is served")
    workdir: Path = Field(default=Path(".tubelens") / "predictor", description="fetched and unpacked archives")
    attempts: int = Field(default=3, ge=1, description="tries of one call to the model server")
    deadline_s: float = Field(default=10.0, gt=0, description="one call's bound, retries and backoff included")
    backoff_initial_s: float = Field(default=0.05, gt=0)
    backoff_max_s: float = Field(default=1.0, gt=0)
    connect_timeout_s: float = Field(default=1.0, gt=0)
    # A swap waits this long for requests in flight on the old version before unloading it regardless.
    drain_timeout_s: float = Field(default=60.0, gt=0)
    torchserve: TorchServeSettings = TorchServeSettings()
    api: ApiSettings = ApiSettings()


class PredictorServiceSettings(TubelensSettings):
    service: str = "predictor"
    predictor: PredictorSettings = PredictorSettings()
