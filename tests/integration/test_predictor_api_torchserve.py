"""The Predictor gRPC API with its models behind a real TorchServe: the answers equal the in-process runner's, and a
TorchServe that goes away is UNAVAILABLE with a message, after bounded retries, not a hang or an INTERNAL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from tests.datasetkit import NOW, make_world
from tubelens.bus.memory import MemoryBus
from tubelens.devtools.fakeyoutube.thumbnails import BY_FILE, thumbnail_jpeg
from tubelens.devtools.servers import ServerProcess, start_torchserve
from tubelens.modelkit.registry import ModelRegistry
from tubelens.objects.local import LocalObjectStore
from tubelens.predictor.main import PredictorApp, backbone_embedder, build_app
from tubelens.predictor.settings import PredictorSettings, RuntimeKind, TorchServeSettings
from tubelens.trainer.dataset import DatasetBuilder
from tubelens.trainer.train import run_training
from tubelens.v1 import predictor_pb2, predictor_pb2_grpc

DEADLINE_S = 3.0


@dataclass
class Apps:
    torchserve: ServerProcess
    served: PredictorApp  # models in TorchServe
    local: PredictorApp  # the same registry, in process
    jpeg: bytes


def _unavailable_similar(request):
    raise AssertionError("FindSimilar is not called here")


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, backbone) -> Iterator[Apps]:
    root = tmp_path_factory.mktemp("predictor-ts")
    store = LocalObjectStore(root / "objects", "tubelens")
    store.ensure_bucket()
    world = make_world(store, channels=6, videos_per_channel=12)
    builder = DatasetBuilder(store)
    for envelope in world.events:
        builder.handle(envelope)
    snapshot = builder.snapshot(seed=1, now=NOW)
    registry = ModelRegistry(store)
    results = run_training(
        snapshot.table, snapshot.id, ["popularity", "channel"], registry=registry, producer=MemoryBus().producer()
    )
    for result in results:
        # This small world's vectors carry little channel signal, so a head may not beat its baseline and is then
        # not promoted; these tests are about serving a version, so promote it by hand.
        if not result.promoted:
            registry.promote(result.entry.task, result.entry.version, reason="test: served whatever its quality")
    torchserve = start_torchserve(root / "ts")
    options = {"embed": backbone_embedder(backbone), "similar": _unavailable_similar}
    served = build_app(
        PredictorSettings(
            runtime=RuntimeKind.TORCHSERVE,
            tasks=["popularity", "channel"],
            workdir=root / "served",
            attempts=3,
            deadline_s=DEADLINE_S,
            torchserve=TorchServeSettings(
                inference_url=f"http://127.0.0.1:{torchserve.ports['inference']}",
                management_url=f"http://127.0.0.1:{torchserve.ports['management']}",
                model_store=root / "ts" / "model-store",
            ),
        ),
        store,
        **options,
    )
    local = build_app(
        PredictorSettings(runtime=RuntimeKind.IN_PROCESS, tasks=["popularity", "channel"], workdir=root / "local"),
        store,
        **options,
    )
    video = world.videos[1]
    jpeg = thumbnail_jpeg(world.catalogue.channel(video.channel_id), video, BY_FILE["mqdefault.jpg"])
    try:
        yield Apps(torchserve, served, local, jpeg)
    finally:
        torchserve.stop()
        served.close()
        local.close()


def _stub(app: PredictorApp) -> tuple[predictor_pb2_grpc.PredictorStub, Callable[[], None]]:
    server = app.serve(host="127.0.0.1", port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")

    def close() -> None:
        channel.close()
        server.stop()

    return predictor_pb2_grpc.PredictorStub(channel), close


def _request(jpeg: bytes) -> predictor_pb2.PredictPopularityRequest:
    return predictor_pb2.PredictPopularityRequest(
        thumbnail=predictor_pb2.ImageInput(image_bytes=jpeg),
        context=predictor_pb2.VideoContext(title="SHOCKING garden secret", channel_subscribers=20_000),
    )


def test_torchserve_answers_every_rpc_as_the_in_process_runner_does(apps: Apps) -> None:
    served, close_served = _stub(apps.served)
    local, close_local = _stub(apps.local)
    try:
        through_ts = served.PredictPopularity(_request(apps.jpeg)).popularity
        in_process = local.PredictPopularity(_request(apps.jpeg)).popularity
        assert through_ts.expected_views == pytest.approx(in_process.expected_views, rel=1e-5)
        for a, b in zip(through_ts.buckets, in_process.buckets, strict=True):
            assert a.probability == pytest.approx(b.probability, abs=1e-6)
        channel = predictor_pb2.ClassifyChannelRequest(thumbnail=predictor_pb2.ImageInput(image_bytes=apps.jpeg))
        ts_channels, local_channels = served.ClassifyChannel(channel).channels, local.ClassifyChannel(channel).channels
        assert [c.channel_id for c in ts_channels] == [c.channel_id for c in local_channels]
        listed = served.ListModels(predictor_pb2.ListModelsRequest())
        assert {m.task for m in listed.models} == {"popularity", "channel"}
        meta = served.GetModelMetadata(predictor_pb2.GetModelMetadataRequest(model={"name": "popularity"}))
        assert meta.platform == "torchserve"
    finally:
        close_served()
        close_local()


def test_a_torchserve_that_went_away_is_unavailable_with_a_message(apps: Apps) -> None:
    stub, close = _stub(apps.served)
    try:
        stub.PredictPopularity(_request(apps.jpeg))
        apps.torchserve.stop()
        with pytest.raises(grpc.RpcError) as caught:
            stub.PredictPopularity(_request(apps.jpeg))
    finally:
        close()
    # Bounded retries with backoff inside the call's deadline, then this (the test's timeout would catch a hang).
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details()
