"""Prometheus metrics shared by every service, and the /metrics endpoint.

Names follow `tubelens_<component>_<what>_<unit>`. The bus and gRPC metrics are defined once here and labelled by
service, so that every service exports the same RED families and dashboards work across them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Latency buckets from 1 ms to 30 s: gRPC calls sit at the low end, message handlers that fetch images higher up.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

BUS_PUBLISHED = Counter("tubelens_bus_messages_published_total", "Messages published", ["service", "topic"])
BUS_PROCESSED = Counter(
    "tubelens_bus_messages_processed_total", "Messages whose handler succeeded", ["service", "topic", "group"]
)
BUS_FAILED = Counter(
    "tubelens_bus_handler_failures_total",
    "Handler attempts that raised (each retry counts), by error reason (NOT_FOUND, UNAVAILABLE, INTERNAL...)",
    ["service", "topic", "group", "error"],
)
BUS_DEAD_LETTERED = Counter(
    "tubelens_bus_messages_dead_lettered_total",
    "Messages sent to the dead-letter topic, by error reason",
    ["service", "topic", "group", "error"],
)
BUS_DUPLICATES = Counter(
    "tubelens_bus_duplicates_skipped_total",
    "Redelivered events skipped because their (derived) id was already applied",
    ["service", "topic", "group"],
)
BUS_PAUSED = Gauge(
    "tubelens_bus_consumer_paused",
    "1 while consuming is paused because a dependency is unavailable",
    ["service", "group"],
)
BUS_PAUSES = Counter(
    "tubelens_bus_consumer_pauses_total",
    "Times consuming paused for an unavailable dependency",
    ["service", "group", "dependency"],
)
BUS_HANDLE_SECONDS = Histogram(
    "tubelens_bus_handle_duration_seconds",
    "Time to handle one message, retries included",
    ["service", "topic", "group"],
    buckets=LATENCY_BUCKETS,
)
BUS_LAG = Gauge(
    "tubelens_bus_consumer_lag_messages",
    "Messages behind the partition end, where the broker reports it",
    ["service", "topic", "group", "partition"],
)

# Present from a service's first scrape on, whatever it has done yet: what the dashboard lists namespaces from.
BUILD_INFO = Gauge("tubelens_build_info", "1 for each running service, with its version", ["service", "version"])

GRPC_REQUESTS = Counter("tubelens_grpc_requests_total", "gRPC requests by final status", ["service", "method", "code"])
GRPC_SECONDS = Histogram(
    "tubelens_grpc_request_duration_seconds",
    "gRPC request latency",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)


@dataclass
class MetricsServer:
    server: WSGIServer
    port: int
    # name -> ready?; /readyz answers 200 while every one is True (none registered: ready), 503 naming the others.
    readiness: dict[str, bool] = field(default_factory=dict)

    def set_ready(self, name: str, ready: bool) -> None:
        self.readiness[name] = ready

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(port: int, host: str = "0.0.0.0", *, service: str) -> MetricsServer:
    """Expose /metrics on `port` (0 picks a free one) from a daemon thread, `tubelens_build_info` set for `service`;
    /readyz on the same port is the readiness probe of a service without a gRPC server (see `set_ready`)."""
    BUILD_INFO.labels(service, metadata.version("tubelens")).set(1)
    server, _thread = start_http_server(port, addr=host)
    metrics_server = MetricsServer(server=server, port=server.server_port)
    server.set_app(_with_readiness(server.get_app(), metrics_server.readiness))
    return metrics_server


def _with_readiness(app, readiness: dict[str, bool]):
    def probes(environ, start_response):
        if environ.get("PATH_INFO") != "/readyz":
            return app(environ, start_response)
        waiting = sorted(name for name, ready in readiness.items() if not ready)
        status = "503 Service Unavailable" if waiting else "200 OK"
        body = (f"not ready: {', '.join(waiting)}\n" if waiting else "ready\n").encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return probes
