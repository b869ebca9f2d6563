"""The predictor's first request against its hundredth: `tubelens predictor run` as a process of its own.

Run with `python -m tests.bench.first_request [--runtime in-process|torchserve]`. A popularity model is trained on a
stand-in snapshot into a local registry; the predictor starts over it as a fresh process (nothing imported, nothing
cached), the bench waits until its gRPC health says SERVING for tubelens.v1.Predictor, then sends 100
PredictPopularity calls, one at a time, each with a title of its own (so every call encodes its title, as a new
video's would), and reports the first, the hundredth and their ratio beside the start-up time. A predictor that
warms its models before it reports SERVING answers its first call about as fast as its hundredth; one that does not
pays every cold cost (the title encoder, the head's archive, the first forward pass) in its first client's call.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from tests.bench.predictor import prepared_store
from tubelens.devtools.servers import free_port, start_torchserve
from tubelens.v1 import predictor_pb2, predictor_pb2_grpc

CALLS = 100
READY_TIMEOUT_S = 600.0
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FirstRequest:
    runtime: str
    ready_s: float  # process start to health SERVING
    first_ms: float
    hundredth_ms: float
    median_ms: float  # of calls 2..100


def serve_process(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tubelens.cli", "predictor", "run"], env=env, cwd=ROOT, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_serving(channel: grpc.Channel, process: subprocess.Popen, log: Path) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the predictor exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            answer = health.Check(health_pb2.HealthCheckRequest(service="tubelens.v1.Predictor"), timeout=2)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass  # not listening yet
        time.sleep(0.2)
    raise RuntimeError(f"not SERVING within {READY_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}")


def measure(runtime: str, env: dict[str, str], jpeg: bytes, log: Path) -> FirstRequest:
    port = free_port()
    env = {**env, "TUBELENS_PREDICTOR__API__GRPC_HOST": "127.0.0.1", "TUBELENS_PREDICTOR__API__GRPC_PORT": str(port)}
    started = time.perf_counter()
    process = serve_process(env, log)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_serving(channel, process, log)
            ready_s = time.perf_counter() - started
            stub = predictor_pb2_grpc.PredictorStub(channel)
            times = []
            for call in range(CALLS):
                context = predictor_pb2.VideoContext(title=f"INSANE makeover #{call}!!!", channel_subscribers=120_000)
                request = predictor_pb2.PredictPopularityRequest(
                    thumbnail=predictor_pb2.ImageInput(image_bytes=jpeg), context=context
                )
                began = time.perf_counter()
                stub.PredictPopularity(request, timeout=300)
                times.append((time.perf_counter() - began) * 1000)
    finally:
        process.terminate()
        process.wait(timeout=60)
    rest = sorted(times[1:])
    return FirstRequest(runtime, ready_s, times[0], times[-1], rest[len(rest) // 2])


def predictor_env(root: Path, runtime: str, stack: ExitStack) -> dict[str, str]:
    env = {
        **os.environ,
        "TUBELENS_ENV_FILE": str(root / "no.env"),
        "TUBELENS_BUS": "memory",
        "TUBELENS_OBJECTS": "local",
        "TUBELENS_LOCAL__ROOT": str(root / "objects"),
        "TUBELENS_METRICS_PORT": "0",
        "TUBELENS_PREDICTOR__RUNTIME": runtime,
        "TUBELENS_PREDICTOR__TASKS": '["popularity"]',
        "TUBELENS_PREDICTOR__WORKDIR": str(root / "work"),
    }
    if runtime == "torchserve":
        store = root / "model-store"
        server = start_torchserve(Path(tempfile.mkdtemp(prefix="tl-ts-")), model_store=store)
        stack.callback(server.stop)
        env |= {
            "TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL": f"http://127.0.0.1:{server.ports['inference']}",
            "TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL": f"http://127.0.0.1:{server.ports['management']}",
            "TUBELENS_PREDICTOR__TORCHSERVE__MODEL_STORE": str(store),
        }
    return env


def run(runtimes: list[str]) -> list[FirstRequest]:
    results = []
    with tempfile.TemporaryDirectory(prefix="tubelens-bench-first-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        _, jpeg = prepared_store(root)
        for runtime in runtimes:
            results.append(measure(runtime, predictor_env(root, runtime, stack), jpeg, root / f"{runtime}.log"))
    return results


def render(results: list[FirstRequest], console: Console) -> None:
    table = Table(title=f"predictor process: first PredictPopularity against the {CALLS}th (one client, in order)")
    for column in ("runtime", "start to SERVING s", "1st ms", f"{CALLS}th ms", "median 2..100 ms", "1st / 100th"):
        table.add_column(column, justify="right")
    for r in results:
        ratio = r.first_ms / r.hundredth_ms
        table.add_row(
            r.runtime, f"{r.ready_s:.1f}", f"{r.first_ms:.1f}", f"{r.hundredth_ms:.1f}", f"{r.median_ms:.1f}",
            f"{ratio:.1f}x",
        )  # fmt: skip
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", action="append", choices=["in-process", "torchserve"])
    args = parser.parse_args(argv)
    render(run(args.runtime or ["in-process", "torchserve"]), Console(width=132))


if __name__ == "__main__":
    main()
