"""Run an event-driven service: settings, JSON logs, /metrics, the bus worker, graceful stop on SIGTERM.

Every consuming service's `run` command is this function plus its own handler factory, so start-up, shutdown and
observability behave the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tubelens.bus import Bus, Handler, Producer, Worker, counted, open_bus, retry_policy
from tubelens.lifecycle import on_stop_signals
from tubelens.logs import configure_logging
from tubelens.metrics import MetricsServer, serve_metrics
from tubelens.settings import TubelensSettings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a handler factory gets to build its handler from."""

    settings: TubelensSettings
    bus: Bus
    producer: Producer
    objects: Any | None  # tubelens.objects.ObjectStore when the service asked for it


class Stoppable(Protocol):
    def stop(self) -> None: ...


def run_worker_service(
    settings: TubelensSettings,
    *,
    topics: list[str],
    group: str,
    build_handler: Callable[[Runtime], Handler],
    needs_objects: bool = False,
    start_servers: Callable[[Runtime, Handler], list[Stoppable]] | None = None,
) -> int:
    """Consume `topics` until SIGTERM. A handler object may define `before_commit()` to make effects it buffers
    across a batch durable before the offsets move; `start_servers` runs beside the worker (a gRPC API) and is
    stopped after it."""
    configure_logging(settings.service, settings.log_level)
    metrics_server = serve_metrics(settings.metrics_port, service=settings.service)
    log.info("metrics listening", extra={"port": metrics_server.port})
    bus = open_bus(settings)
    producer = counted(bus.producer(), settings.service)
    # Every consumer gets a store: dead letters keep their original bytes there (the claim check).
    objects = _open_objects(settings)
    runtime = Runtime(settings, bus, producer, objects if needs_objects else None)
    handler = build_handler(runtime)
    worker = Worker(
        bus,
        topics,
        group,
        handler,
        service=settings.service,
        producer=producer,
        retry=retry_policy(settings),
        max_batch=settings.consumer.batch_size,
        before_commit=getattr(handler, "before_commit", None),
        claims=objects,
        seen_ids=settings.consumer.seen_ids,
        # Not ready while paused for an outage or after the loop died (/readyz on the metrics port).
        on_readiness=lambda ready: metrics_server.set_ready("consumer", ready),
    )
    metrics_server.set_ready("consumer", False)
    servers = start_servers(runtime, handler) if start_servers else []
    on_stop_signals(worker.stop)
    # A consume loop that dies raises out of here: the process exits non-zero and is restarted; never exit 0.
    try:
        worker.run()
    finally:
        for server in servers:
            server.stop()
        producer.close()
        bus.close()
        _stop_metrics(metrics_server)
    return 0


def _open_objects(settings: TubelensSettings):
    from tubelens.objects import open_store

    return open_store(settings)


def _stop_metrics(server: MetricsServer) -> None:
    try:
        server.stop()
    except OSError:
        log.warning("metrics server did not stop cleanly", exc_info=True)
