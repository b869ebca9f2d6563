"""`tubelens dev up` as a new user runs it: one command starts the stack, the YouTube stand-in (with one bad input of
each kind) and the five services as processes; the predictor says NOT_SERVING until the trainer's models are
loaded and warm, then answers every RPC through the Python client and grpcurl; after that traffic, a scrape of
every service's /metrics holds every series the alert rules and the Grafana dashboard use; `tubelens dev down`
stops every process it started."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.chartkit import metrics_in
from tests.deploy.test_monitoring import dashboard_exprs, rule_groups
from tubelens.client import InvalidInputError, NotFoundError, PredictorClient, image, video
from tubelens.devtools import dev, stack
from tubelens.devtools.dev import DevState

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 900.0
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def tubelens(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tubelens.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevState]:
    where = tmp_path_factory.mktemp("dev")
    started = tubelens("dev", "up", "--dir", str(where), "--bad-inputs", "1")
    try:
        assert started.returncode == 0, started.stderr[-3000:] + started.stdout[-3000:]
        assert "TUBELENS_PREDICTOR__API__EMBEDDING_ADDRESS=127.0.0.1:" in started.stdout, "the env is printed"
        state = dev.read_state(where)
        assert state is not None and state.env_file.is_file()
        yield state
    finally:
        stopped = tubelens("dev", "down", "--dir", str(where))
        assert stopped.returncode == 0, stopped.stderr
        recorded = state.processes if started.returncode == 0 else []
        assert not [record.name for record in recorded if stack.recorded_alive(record)], "dev down stops them all"


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def test_every_service_has_its_own_metrics_port_and_the_predictor_knows_the_embedding_service(running: DevState):
    metrics = [address for name, address in running.addresses.items() if name.endswith(" metrics")]
    assert len(metrics) == len(set(metrics)) == 5
    assert running.env["TUBELENS_PREDICTOR__API__EMBEDDING_ADDRESS"] == running.addresses["embedding"]


def test_the_predictor_is_live_but_not_serving_until_its_models_are_warm_then_serves(running: DevState) -> None:
    address = running.addresses["predictor"]
    with PredictorClient(address, timeout_s=10) as client:
        assert client.server_live()
        assert health(address, "liveness") == health_pb2.HealthCheckResponse.SERVING
        if not client.server_ready().ready:  # the usual case: the trainer has not run yet
            assert health(address, "tubelens.v1.Predictor") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert health(address, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        ready = client.wait_until_ready(timeout_s=READY_TIMEOUT_S)
    assert {(m.name, m.ready) for m in ready.models} == {("popularity", True), ("channel", True), ("genre", True)}
    assert health(address, "tubelens.v1.Predictor") == health_pb2.HealthCheckResponse.SERVING


def test_after_real_traffic_every_series_the_alerts_and_the_dashboard_use_is_scraped(running: DevState) -> None:
    address = running.addresses["predictor"]
    with PredictorClient(address, timeout_s=60) as client:
        client.wait_until_ready(timeout_s=READY_TIMEOUT_S)
        known = client.find_similar(image(_thumbnail(running)), k=3).matches[0].video_id
        client.predict_popularity(video(known), title="A new video")
        client.compare_thumbnails([("a", video(known)), ("b", image(_thumbnail(running)))])
        client.classify_channel(video(known))
        client.list_models()
        client.model_metadata("genre")
        with pytest.raises(InvalidInputError):
            client.predict_popularity(image(b"not a picture"))
        with pytest.raises(NotFoundError):
            client.model_metadata("popularity", version="nope")
        # Audio rows of the wrong width pass the API's checks and are refused by the model: an inference error.
        with pytest.raises(InvalidInputError):
            client.predict_genre(frames=[_thumbnail(running)], audio_features=[[0.0, 0.0, 0.0]])
    listed = subprocess.run([GRPCURL, "-plaintext", address, "list"], capture_output=True, text=True, timeout=30)
    assert "tubelens.v1.Predictor" in listed.stdout, listed.stderr

    scraped: dict[str, set[str]] = {}
    for name, url in running.addresses.items():
        if name.endswith(" metrics"):
            with urllib.request.urlopen(url, timeout=10) as answer:
                for family in text_string_to_metric_families(answer.read().decode()):
                    for sample in family.samples:
                        scraped.setdefault(sample.name, set()).add(name.removesuffix(" metrics"))
    used = {metric for group in rule_groups() for rule in group["rules"] for metric in metrics_in(rule["expr"])}
    used |= {metric for expr in dashboard_exprs() for metric in metrics_in(expr)}
    missing = used - set(scraped)
    assert used and not missing, f"used by the alerts or the dashboard, scraped from no service: {sorted(missing)}"
    # The dashboard lists namespaces from tubelens_build_info: every service must export it.
    assert scraped["tubelens_build_info"] == {"crawler", "preprocessor", "embedding", "trainer", "predictor"}
    assert {"crawler", "preprocessor", "embedding"} <= scraped["tubelens_bus_messages_published_total"]


def _thumbnail(running: DevState) -> bytes:
    """A good thumbnail the stand-in serves (of a published video with media), fetched as the preprocessor does."""
    base = running.addresses["youtube api"].removesuffix("/youtube/v3")
    with urllib.request.urlopen(f"{base}/_fake/catalogue", timeout=10) as answer:
        catalogue = json.loads(answer.read())
    for video_id in catalogue["mediaVideoIds"]:
        if video_id in catalogue["badInputs"]:
            continue
        try:
            with urllib.request.urlopen(f"{base}/vi/{video_id}/mqdefault.jpg", timeout=10) as answer:
                return answer.read()
        except urllib.error.HTTPError:  # not published yet
            continue
    raise AssertionError("the stand-in serves no good thumbnail")
