"""The predictor's image against the chart's own gRPC startup probe: run with the chart's pod settings beside a real
broker and S3 server on loopback (the cluster's addresses swapped for theirs, and a free port for the gRPC one), its
`liveness` health must turn SERVING within the probe's budget (periodSeconds x failureThreshold), as the kubelet
would require before it stops restarting the pod.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.chartkit import container, name_of, one, render
from tests.images.podkit import ensure_image, podman, run_flags


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def probe_passes(port: int, service: str, timeout: float) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_predictor_image_passes_the_chart_startup_probe(broker, s3_server, s3_credentials, tmp_path: Path) -> None:
    docs = render()
    workload = one(docs, "Deployment", name_of("predictor"))
    spec = container(workload, "predictor")
    ensure_image(spec["image"])
    probe = spec["startupProbe"]
    port = free_port()
    local = {
        "TUBELENS_KAFKA__BOOTSTRAP": broker.address,
        "TUBELENS_S3__ENDPOINT": s3_server.address,
        "TUBELENS_S3__ACCESS_KEY": s3_credentials["access_key"],
        "TUBELENS_S3__SECRET_KEY": s3_credentials["secret_key"],
        "TUBELENS_PREDICTOR__API__GRPC_PORT": str(port),
        "TUBELENS_METRICS_PORT": str(free_port()),
    }
    overrides = [flag for key, value in local.items() for flag in ("--env", f"{key}={value}")]
    name = f"tubelens-probe-{port}"
    started = podman("run", "-d", "--name", name, *run_flags(docs, workload, "predictor", tmp_path), *overrides,
                     spec["image"], *spec.get("args", []))
    assert started.returncode == 0, started.stderr
    try:
        passed = False
        # The kubelet's own schedule: one check per period, each with the probe's timeout, up to the threshold.
        for _ in range(probe["failureThreshold"]):
            if probe_passes(port, probe["grpc"]["service"], probe.get("timeoutSeconds", 1)):
                passed = True
                break
            time.sleep(probe["periodSeconds"])
        logs = podman("logs", name).stdout + podman("logs", name).stderr
        assert passed, f"the chart's startup probe never passed; the container said:\n{logs[-3000:]}"
    finally:
        podman("rm", "-f", "-t", "5", name)
