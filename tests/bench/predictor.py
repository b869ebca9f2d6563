"""The predictor under load: PredictPopularity on one 320x180 thumbnail over real gRPC on loopback, with the model in
process and behind TorchServe.

Run with `python -m tests.bench.predictor`. The popularity model is trained by the trainer on a stand-in snapshot and
loaded from the registry as in production. Clients are closed loops (each sends its next request when the last one
answers) at rising concurrency; each level reports throughput and latency percentiles, and the headline is the
highest throughput whose p99 stays within 50 ms. The TorchServe hop is measured on its own too: the same feature rows
through the model manager, in process and over TorchServe's inference API.
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from tests.datasetkit import NOW, make_world
from tubelens.bus.memory import MemoryBus
from tubelens.devtools.fakeyoutube.thumbnails import BY_FILE, thumbnail_jpeg
from tubelens.devtools.servers import start_torchserve
from tubelens.modelkit.registry import ModelRegistry
from tubelens.objects.local import LocalObjectStore
from tubelens.predictor.assemble import VideoFacts, feature_rows
from tubelens.predictor.main import PredictorApp, build_app
from tubelens.predictor.settings import ApiSettings, PredictorSettings, RuntimeKind, TorchServeSettings
from tubelens.trainer.dataset import DatasetBuilder
from tubelens.trainer.train import run_training
from tubelens.v1 import predictor_pb2, predictor_pb2_grpc

CONCURRENCY = (1, 2, 4, 8)
SECONDS_PER_LEVEL = 6.0
P99_BUDGET_MS = 50.0
HOP_CALLS = 300


@dataclass
class Level:
    runtime: str
    clients: int
    requests: int
    qps: float
    p50_ms: float
    p99_ms: float


def prepared_store(root: Path) -> tuple[LocalObjectStore, bytes]:
    """A registry holding a promoted popularity model, and a 320x180 thumbnail it has never seen."""
    store = LocalObjectStore(root / "objects", "tubelens")
    store.ensure_bucket()
    world = make_world(store, channels=6, videos_per_channel=20)
    builder = DatasetBuilder(store)
    for envelope in world.events:
        builder.handle(envelope)
    snapshot = builder.snapshot(seed=1, now=NOW)
    run_training(
        snapshot.table, snapshot.id, ["popularity"], registry=ModelRegistry(store), producer=MemoryBus().producer()
    )
    video = world.videos[0]
    return store, thumbnail_jpeg(world.catalogue.channel(video.channel_id), video, BY_FILE["mqdefault.jpg"])


def closed_loop(stub: predictor_pb2_grpc.PredictorStub, request, clients: int, seconds: float) -> tuple[float, list]:
    """Seconds taken and every request's latency, for `clients` closed-loop clients running `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            stub.PredictPopularity(request)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies


def bench_levels(app: PredictorApp, runtime: str, jpeg: bytes) -> list[Level]:
    server = app.serve(host="127.0.0.1", port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = predictor_pb2_grpc.PredictorStub(channel)
    request = predictor_pb2.PredictPopularityRequest(
        thumbnail=predictor_pb2.ImageInput(image_bytes=jpeg),
        context=predictor_pb2.VideoContext(title="INSANE garden makeover!!!", channel_subscribers=120_000),
    )
    try:
        for _ in range(20):  # warm: first calls load the text model and fill caches
            stub.PredictPopularity(request)
        levels = []
        for clients in CONCURRENCY:
            elapsed, latencies = closed_loop(stub, request, clients, SECONDS_PER_LEVEL)
            ms = np.array(latencies) * 1000
            p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
            levels.append(Level(runtime, clients, len(ms), len(ms) / elapsed, p50, p99))
        return levels
    finally:
        channel.close()
        server.stop()


def hop_ms(app: PredictorApp, jpeg: bytes) -> tuple[float, float]:
    """p50 and p99 of the model call alone (feature rows in, answer out), as the gRPC handler makes it."""
    core = app.core
    version = app.manager.default_version("popularity")
    head = core.head_info("popularity", version)
    image = app.servicer.images.image(predictor_pb2.ImageInput(image_bytes=jpeg), "thumbnail")
    rows = feature_rows(head, core.embed([image]), VideoFacts("a title", 1000, 7 * 86400, None))
    body = {"features": rows}
    for _ in range(20):
        app.manager.predict("popularity", body)
    times = []
    for _ in range(HOP_CALLS):
        started = time.perf_counter()
        app.manager.predict("popularity", body)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    console = Console(width=132)
    levels: list[Level] = []
    hops: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-predictor-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        store, jpeg = prepared_store(root)
        in_process = build_app(
            PredictorSettings(runtime=RuntimeKind.IN_PROCESS, tasks=["popularity"], workdir=root / "in-process"), store
        )
        stack.callback(in_process.close)
        levels += bench_levels(in_process, "in-process", jpeg)
        hops["in-process"] = hop_ms(in_process, jpeg)

        torchserve = start_torchserve(root / "ts")
        stack.callback(torchserve.stop)
        settings = PredictorSettings(
            runtime=RuntimeKind.TORCHSERVE,
            tasks=["popularity"],
            workdir=root / "ts-work",
            api=ApiSettings(),
            torchserve=TorchServeSettings(
                inference_url=f"http://127.0.0.1:{torchserve.ports['inference']}",
                management_url=f"http://127.0.0.1:{torchserve.ports['management']}",
                model_store=root / "ts" / "model-store",
            ),
        )
        served = build_app(settings, store)
        stack.callback(served.close)
        levels += bench_levels(served, "torchserve", jpeg)
        hops["torchserve"] = hop_ms(served, jpeg)
    render(console, levels, hops)


def render(console: Console, levels: list[Level], hops: dict[str, tuple[float, float]]) -> None:
    table = Table(title="predictor: PredictPopularity, one 320x180 thumbnail, gRPC on loopback, closed-loop clients")
    for column in ("model runtime", "clients", "requests", "QPS", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "model runtime" else "right")
    for level in levels:
        table.add_row(
            level.runtime, str(level.clients), str(level.requests), f"{level.qps:.0f}", f"{level.p50_ms:.1f}",
            f"{level.p99_ms:.1f}",
        )  # fmt: skip
    console.print(table)
    for runtime in ("in-process", "torchserve"):
        within = [level.qps for level in levels if level.runtime == runtime and level.p99_ms <= P99_BUDGET_MS]
        best = f"{max(within):.0f} QPS" if within else f"none: p99 over {P99_BUDGET_MS:.0f} ms at every level"
        console.print(f"highest QPS with p99 <= {P99_BUDGET_MS:.0f} ms, {runtime}: {best}")
    hop = Table(title="the model call alone (feature rows in, answer out)")
    for column in ("runtime", "p50 ms", "p99 ms"):
        hop.add_column(column, justify="left" if column == "runtime" else "right")
    for runtime, (p50, p99) in hops.items():
        hop.add_row(runtime, f"{p50:.2f}", f"{p99:.2f}")
    console.print(hop)
    overhead = hops["torchserve"][0] - hops["in-process"][0]
    console.print(f"TorchServe hop overhead at p50: {overhead:.2f} ms per call")


if __name__ == "__main__":
    main()
