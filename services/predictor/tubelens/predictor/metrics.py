"""The predictor's domain metrics, beside the shared RED families of `tubelens.metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from tubelens.metrics import LATENCY_BUCKETS
from tubelens.rpc import FinishedCall

NONE = "none"  # the label value of what a request did not get to: a task or version, when refused before

REQUESTS = Counter(
    "tubelens_predictor_requests_total",
    "Predictor RPCs by final status code and the model version that answered (none: refused before a model did)",
    ["rpc", "task", "version", "code"],
)
REQUEST_SECONDS = Histogram(
    "tubelens_predictor_request_duration_seconds",
    "Predictor RPC latency by the model version that answered, refused requests included",
    ["rpc", "task", "version"],
    buckets=LATENCY_BUCKETS,
)

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
    "tubelens_predictor_inference_duration_seconds",
    "One request to a model runtime, retries included",
    ["task", "version", "platform"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_ERRORS = Counter(
    "tubelens_predictor_inference_errors_total",
    "Requests to a model runtime that failed, by error reason (INVALID_INPUT, UNAVAILABLE, INTERNAL...)",
    ["task", "version", "error"],
)


def record_request(call: FinishedCall) -> None:
    """A call observer of the predictor's gRPC server: every RPC, refused ones too, counted by its status code
    under the task and version its handler named (`tubelens.rpc.annotate`)."""
    rpc = call.method.rsplit("/", 1)[-1]
    task, version = call.labels.get("task", NONE), call.labels.get("version", NONE)
    REQUESTS.labels(rpc, task, version, call.code).inc()
    REQUEST_SECONDS.labels(rpc, task, version).observe(call.seconds)
