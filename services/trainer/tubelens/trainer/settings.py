"""The trainer's settings (TUBELENS_TRAINER__*)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from tubelens.settings import TubelensSettings
from tubelens.trainer.jobs import JobTemplate


class Executor(StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class KubernetesSettings(JobTemplate):
    namespace: str = "default"
    timeout_s: float = Field(default=7 * 3600, gt=0, description="how long a launcher waits for its Job")


class TrainerSettings(BaseModel):
    seed: int = 0
    idle_s: float = Field(default=5.0, gt=0, description="caught up once no event arrived for this long")
    executor: Executor = Executor.LOCAL
    schedule_s: float = Field(default=24 * 3600, ge=0, description="--serve: a run this long after the last; 0 = off")
    new_labels: int = Field(default=500, ge=0, description="--serve: a run after this many newly labelled videos")
    require_beating_baselines: bool = Field(
        default=True,
        description="promote a version only when it beats its baselines on the held-out rows (first versions too); "
        "off, the verdict is still recorded in the entry's metrics and logged",
    )
    min_interval_s: float = Field(default=3600, ge=0, description="--serve: never two runs closer than this")
    tick_s: float = Field(default=1.0, gt=0, description="--serve: how often the trigger is asked")
    kubernetes: KubernetesSettings = KubernetesSettings()


class TrainerServiceSettings(TubelensSettings):
    service: str = "trainer"
    trainer: TrainerSettings = TrainerSettings()
