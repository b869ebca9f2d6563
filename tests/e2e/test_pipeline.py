"""200 videos from the YouTube stand-in, crawled, preprocessed and embedded by the real service processes over a
real broker and S3 server: every good video arrives exactly once at each stage, every bad input ends in the
dead-letter topic, and the embedding service's gRPC API answers from an index of every thumbnail. Then the trainer
registers models, and the predictor process serves them through a real TorchServe over gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.buskit import Recorder, running, wait_until
from tubelens import events
from tubelens.bus import Message, Worker, dlq_topic
from tubelens.bus.kafka import KafkaBus
from tubelens.client import PredictorClient
from tubelens.devtools.fakeyoutube import BadInput, Catalogue, FakeYouTube, InputFaults
from tubelens.devtools.fakeyoutube.catalogue import THUMBNAIL_FAULTS
from tubelens.devtools.servers import ServerProcess, start_broker, start_torchserve
from tubelens.settings import KafkaSettings
from tubelens.v1 import embedding_pb2, embedding_pb2_grpc, events_pb2, predictor_pb2, predictor_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
NOW_CATALOGUE = dict(channels=8, videos_per_channel=25, upcoming_fraction=0.0, media_fraction=0.25)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[ServerProcess]:
    """Its own broker: the production topic names stay free of other tests' events."""
    proc = start_broker(tmp_path / "broker")
    yield proc
    proc.stop()


@pytest.fixture
def youtube() -> Iterator[FakeYouTube]:
    from tests.fakeyoutubekit import NOW

    faults = InputFaults(counts=dict.fromkeys(BadInput, 1))
    catalogue = Catalogue.generate(11, now=NOW, faults=faults, **NOW_CATALOGUE)
    with FakeYouTube(catalogue, tick=False) as fake:
        yield fake


def service_env(
    broker: ServerProcess, s3_server: ServerProcess, creds: dict, youtube: FakeYouTube, tmp: Path, bucket: str
) -> dict[str, str]:
    return {
        **os.environ,
        "TUBELENS_ENV_FILE": str(tmp / "none.env"),
        "TUBELENS_BUS": "kafka",
        "TUBELENS_KAFKA__BOOTSTRAP": broker.address,
        "TUBELENS_KAFKA__PARTITIONS": "4",
        "TUBELENS_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "TUBELENS_OBJECTS": "s3",
        "TUBELENS_S3__ENDPOINT": s3_server.address,
        "TUBELENS_S3__ACCESS_KEY": creds["access_key"],
        "TUBELENS_S3__SECRET_KEY": creds["secret_key"],
        "TUBELENS_S3__BUCKET": bucket,
        "TUBELENS_METRICS_PORT": "0",
        "TUBELENS_CONSUMER__BACKOFF_INITIAL_S": "0.05",
        "TUBELENS_CRAWLER__API_KEY": "e2e-key",
        "TUBELENS_CRAWLER__API_BASE": youtube.api_base,
        "TUBELENS_CRAWLER__RSS_BASE": youtube.feed_url,
        "TUBELENS_CRAWLER__MEDIA_URL_TEMPLATE": youtube.media_url_template,
        "TUBELENS_CRAWLER__CHANNELS": ",".join(c.id for c in youtube.catalogue.channels),
        "TUBELENS_CRAWLER__STATE_PATH": str(tmp / "crawler.sqlite"),
        "TUBELENS_PREPROCESSOR__ALLOWED_HOSTS": "127.0.0.1",
        "TUBELENS_EMBEDDING__GRPC_HOST": "127.0.0.1",
        "TUBELENS_EMBEDDING__GRPC_PORT": "0",
    }


def tubelens(*args: str, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tubelens.cli", *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


def collect(bus: KafkaBus, topics: list[str]) -> tuple[Recorder, Worker]:
    recorder = Recorder()
    return recorder, Worker(bus, topics, "e2e-observer", _raw(recorder), service="e2e")


def _raw(recorder: Recorder):
    def handle(message: Message) -> None:
        with recorder.lock:
            recorder.seen.append((message.topic, events.decode(message.value), message))

    return handle


def test_two_hundred_videos_are_crawled_and_preprocessed_with_none_lost_and_none_duplicated(
    own_broker: ServerProcess,
    s3_server: ServerProcess,
    s3_credentials: dict,
    youtube: FakeYouTube,
    tmp_path: Path,
    unique: str,
    exported,
) -> None:
    catalogue = youtube.catalogue
    videos = {v.id for v in catalogue.visible(youtube.now())}
    bad = catalogue.bad_inputs
    assert len(videos) == 200 and set(bad.values()) == set(BadInput)
    expect_thumbnails = videos - {v for v, kind in bad.items() if kind in THUMBNAIL_FAULTS}
    expect_frames = set(catalogue.media_video_ids) - {
        v for v, kind in bad.items() if kind is BadInput.UNDECODABLE_MEDIA
    }

    env = service_env(own_broker, s3_server, s3_credentials, youtube, tmp_path, f"e2e-{unique}")
    crawl = tubelens("crawler", "run", "--once", env=env, log=tmp_path / "crawler.log")
    assert crawl.wait(timeout=120) == 0, (tmp_path / "crawler.log").read_text()[-3000:]

    bus = KafkaBus(KafkaSettings(bootstrap=own_broker.address, partitions=4, session_timeout_ms=6000))
    outputs = [
        events.THUMBNAILS_STORED,
        events.FRAMES_EXTRACTED,
        dlq_topic(events.VIDEOS_DISCOVERED),
        events.EMBEDDINGS_COMPUTED,
    ]
    recorder, observer = collect(bus, outputs)
    env["TUBELENS_EMBEDDING__ONNX_PATH"] = str(exported.path)
    services = {
        name: tubelens(name, "run", env=env, log=tmp_path / f"{name}.log") for name in ("preprocessor", "embedding")
    }
    try:
        with running(observer):
            wait_until(
                lambda: (
                    seen_ids(recorder, events.THUMBNAILS_STORED) >= expect_thumbnails
                    and seen_ids(recorder, events.FRAMES_EXTRACTED) >= expect_frames
                    and len(seen_ids(recorder, dlq_topic(events.VIDEOS_DISCOVERED))) >= len(bad)
                    and embedded(recorder, events_pb2.EMBEDDING_SOURCE_THUMBNAIL) >= expect_thumbnails
                    and embedded(recorder, events_pb2.EMBEDDING_SOURCE_FRAMES) >= expect_frames
                ),
                timeout=300,
                what="every output of the preprocessor and the embedding service",
            )
            similar = ask_embedder(tmp_path / "embedding.log", sorted(expect_thumbnails)[0])
    finally:
        for name, process in services.items():
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        bus.close()

    assert similar.indexed == len(expect_thumbnails), "every stored thumbnail is in the similarity index"
    assert len(similar.matches) == 5 and all(m.video_id in expect_thumbnails for m in similar.matches)

    by_topic: dict[str, Counter] = {topic: Counter() for topic in outputs}
    letters = {}
    for topic, envelope, _message in recorder.seen:
        if envelope.HasField("embedding_computed"):
            source = events_pb2.EmbeddingSource.Name(envelope.embedding_computed.source)
            by_topic[topic][(envelope.embedding_computed.video_id, source)] += 1
        elif envelope.HasField("dead_letter"):
            # The original bytes are claim-checked into the object store; the letter keeps the original key.
            assert envelope.dead_letter.value_ref.key and envelope.dead_letter.value_size > 0
            video_id = envelope.dead_letter.key.decode()
            letters[video_id] = envelope.dead_letter
            by_topic[topic][video_id] += 1
        else:
            by_topic[topic][getattr(envelope, envelope.WhichOneof("payload")).video_id] += 1

    counts = {topic: (len(c), sum(c.values())) for topic, c in by_topic.items()}
    assert set(by_topic[events.THUMBNAILS_STORED]) == expect_thumbnails, counts
    assert set(by_topic[events.FRAMES_EXTRACTED]) == expect_frames
    for topic in (events.THUMBNAILS_STORED, events.FRAMES_EXTRACTED, events.EMBEDDINGS_COMPUTED):
        assert max(by_topic[topic].values()) == 1, f"duplicates on {topic}"
    assert set(letters) == set(bad), "each bad input is dead-lettered, once"
    assert max(by_topic[dlq_topic(events.VIDEOS_DISCOVERED)].values()) == 1
    reasons = {bad[video_id]: letter.reason for video_id, letter in letters.items()}
    assert "media" in reasons[BadInput.UNDECODABLE_MEDIA]
    for kind in THUMBNAIL_FAULTS:
        assert letters_error(letters, bad, kind) in ("InvalidInput", "TooLarge"), reasons[kind]

    # The trainer catches up on every event, takes a snapshot, and registers a channel classifier and the popularity
    # model.
    env["TUBELENS_TRAINER__IDLE_S"] = "3"
    trainer = tubelens(
        "trainer", "run", "--task", "channel", "--task", "popularity", env=env, log=tmp_path / "trainer.log"
    )
    assert trainer.wait(timeout=240) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
    trained = [
        json.loads(line)
        for line in (tmp_path / "trainer.log").read_text().splitlines()
        if '"msg": "model trained"' in line
    ]
    assert [(t["task"], t["promoted"]) for t in trained] == [("channel", True), ("popularity", True)]
    assert trained[0]["metrics"]["accuracy"] >= 0.5, "far above the 1/8 chance of naming one of eight channels"

    # The predictor loads the promoted versions into TorchServe and answers over gRPC.
    torchserve = start_torchserve(tmp_path / "torchserve")
    env.update(
        {
            "TUBELENS_PREDICTOR__TASKS": '["popularity", "channel"]',
            "TUBELENS_PREDICTOR__WORKDIR": str(tmp_path / "predictor"),
            "TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL": f"http://127.0.0.1:{torchserve.ports['inference']}",
            "TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL": f"http://127.0.0.1:{torchserve.ports['management']}",
            "TUBELENS_PREDICTOR__TORCHSERVE__MODEL_STORE": str(tmp_path / "torchserve" / "model-store"),
            "TUBELENS_PREDICTOR__API__GRPC_HOST": "127.0.0.1",
            "TUBELENS_PREDICTOR__API__GRPC_PORT": "0",
        }
    )
    predictor = tubelens("predictor", "run", env=env, log=tmp_path / "predictor.log")
    try:
        port = wait_for_port(tmp_path / "predictor.log", '"predictor listening"', predictor)
        known = sorted(expect_thumbnails)[0]
        with PredictorClient(f"127.0.0.1:{port}") as client:  # it listens at once, and is ready once warm
            client.wait_until_ready(timeout_s=300)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = predictor_pb2_grpc.PredictorStub(channel)
            thumbnail = predictor_pb2.ImageInput(video_id=known)
            popularity = stub.PredictPopularity(predictor_pb2.PredictPopularityRequest(thumbnail=thumbnail), timeout=30)
            channels = stub.ClassifyChannel(predictor_pb2.ClassifyChannelRequest(thumbnail=thumbnail), timeout=30)
    finally:
        predictor.send_signal(signal.SIGTERM)
        exit_code = predictor.wait(timeout=60)
        torchserve.stop()
    assert exit_code == 0, (tmp_path / "predictor.log").read_text()[-3000:]
    assert popularity.model.version == trained[1]["version"]
    assert sum(b.probability for b in popularity.popularity.buckets) == pytest.approx(1.0, abs=1e-6)
    assert channels.model.version == trained[0]["version"] and channels.channels[0].channel_id in {
        c.id for c in catalogue.channels
    }


def wait_for_port(log: Path, message: str, process: subprocess.Popen) -> int:
    """The port a service logged once it listens; fails with its log if it exits first."""
    ports: list[int] = []

    def listening() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        ports[:] = [json.loads(line)["port"] for line in log.read_text().splitlines() if message in line]
        return bool(ports)

    wait_until(listening, timeout=180, what=f"{message} in {log.name}")
    return ports[0]


def embedded(recorder: Recorder, source: int) -> set[str]:
    with recorder.lock:
        return {
            env.embedding_computed.video_id
            for topic, env, _ in recorder.seen
            if topic == events.EMBEDDINGS_COMPUTED and env.embedding_computed.source == source
        }


def ask_embedder(log: Path, video_id: str) -> embedding_pb2.SimilarResponse:
    """The running embedding service's gRPC API, at the port it logged."""
    [port] = [json.loads(line)["port"] for line in log.read_text().splitlines() if '"embedder listening"' in line]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return embedding_pb2_grpc.EmbedderStub(channel).Similar(
            embedding_pb2.SimilarRequest(video_id=video_id, k=5), timeout=10
        )


def seen_ids(recorder: Recorder, topic: str) -> set[str]:
    with recorder.lock:
        return {message.key.decode() for seen_topic, _, message in recorder.seen if seen_topic == topic}


def letters_error(letters: dict, bad: dict, kind: BadInput) -> str:
    [video_id] = [v for v, k in bad.items() if k is kind]
    return letters[video_id].error_type
