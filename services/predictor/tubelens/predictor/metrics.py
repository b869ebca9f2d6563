"""The predictor's domain metrics, beside the shared RED families of `tubelens.metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from tubelens.metrics import LATENCY_BUCKETS

MODEL_SWAPS = Counter(
    "tubelens_predictor_model_swaps_total",
    "models.trained events handled, by outcome (swapped, failed, noop, ignored, stale)",
    ["task", "outcome"],
)
DEFAULT_VERSION = Gauge(
    "tubelens_predictor_default_version_info",
    "1 for the version that answers a task when none is named",
    ["task", "version"],
)
INFERENCE_SECONDS = Histogram(
    "tubelens_predictor_inference_seconds",
    "One request to a model runtime, retries included",
    ["task", "version", "platform"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_ERRORS = Counter(
    "tubelens_predictor_inference_errors_total",
    "Requests to a model runtime that failed, by error type",
    ["task", "version", "kind"],
)
