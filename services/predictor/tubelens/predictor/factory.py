"""The model runtime the settings name: TorchServe for the stack and the cluster, in-process for the demo.

Kept apart from `runtime` (the interface and the failure rules) so that the two implementations import the interface
and this module imports them, with no circle.
"""

from __future__ import annotations

from tubelens.errors import ConfigError
from tubelens.predictor.inprocess import InProcessRuntime
from tubelens.predictor.runtime import CallBudget, ModelRuntime
from tubelens.predictor.settings import PredictorSettings, RuntimeKind
from tubelens.predictor.torchserve import TorchServeRuntime


def open_runtime(settings: PredictorSettings) -> ModelRuntime:
    """The runtime the settings name: TorchServe for the stack and the cluster, in-process for the demo."""
    if settings.runtime is RuntimeKind.IN_PROCESS:
        return InProcessRuntime(settings.workdir / "in-process")
    ts = settings.torchserve
    missing = [
        name for name, url in (("INFERENCE_URL", ts.inference_url), ("MANAGEMENT_URL", ts.management_url)) if not url
    ]
    if missing:
        names = ", ".join(f"TUBELENS_PREDICTOR__TORCHSERVE__{name}" for name in missing)
        raise ConfigError(
            f"{names}: required when TUBELENS_PREDICTOR__RUNTIME=torchserve (tubelens stack up writes them)"
        )
    return TorchServeRuntime(
        ts.inference_url,
        ts.management_url,
        ts.model_store,
        budget=CallBudget.from_settings(settings),
        initial_workers=ts.initial_workers,
        batch_size=ts.batch_size,
        max_batch_delay_ms=ts.max_batch_delay_ms,
        pool_size=ts.pool_size,
        connect_timeout_s=settings.connect_timeout_s,
        load_timeout_s=ts.load_timeout_s,
    )
