"""The embedding service through the real broker and S3 server: thumbnails and frames in, vectors, concepts, an
index and embeddings.computed out; the Embedder gRPC API over loopback; near-copies found at rank 1."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest
from PIL import Image

from tests.buskit import FAST_RETRY, Recorder, running
from tubelens import events
from tubelens.bus import Worker, dlq_topic
from tubelens.bus.kafka import KafkaBus
from tubelens.devtools.fakeyoutube import Catalogue
from tubelens.devtools.fakeyoutube.thumbnails import BY_FILE, thumbnail_jpeg
from tubelens.devtools.servers import ServerProcess
from tubelens.embedding.handler import EmbeddingHandler
from tubelens.embedding.index import SimilarityIndex
from tubelens.embedding.main import start_api
from tubelens.embedding.settings import EmbeddingServiceSettings, EmbeddingSettings
from tubelens.images import phash
from tubelens.modelkit.backbone import Backbone
from tubelens.objects import ObjectStore, open_store
from tubelens.preprocessor.thumbnails import prepare_thumbnail, store_thumbnail
from tubelens.rpc import error_details
from tubelens.service import Runtime
from tubelens.settings import KafkaSettings, ObjectsKind, S3Settings
from tubelens.v1 import embedding_pb2, embedding_pb2_grpc, events_pb2

SHARDS = "index/thumbnails"


def catalogue_thumbnails(count: int, seed: int = 3) -> list[tuple[str, bytes]]:
    """(video id, mqdefault JPEG) of the stand-in's generated videos: channel styles with per-video variation."""
    catalogue = Catalogue.generate(seed, 8, -(-count // 8), now=datetime(2025, 6, 1, tzinfo=UTC))
    channels = {c.id: c for c in catalogue.channels}
    return [(v.id, thumbnail_jpeg(channels[v.channel_id], v, BY_FILE["mqdefault.jpg"])) for v in catalogue.videos][
        :count
    ]


def altered(jpeg: bytes, seed: int) -> bytes:
    """A resized, cropped and re-compressed copy, as a re-upload or a scrape would make it."""
    rng = np.random.default_rng(seed)
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = image.size
    dx, dy = int(w * rng.uniform(0, 0.08)), int(h * rng.uniform(0, 0.08))
    image = image.crop((dx, dy, w - int(w * rng.uniform(0, 0.08)), h - int(h * rng.uniform(0, 0.08))))
    scale = rng.uniform(0.5, 1.5)
    image = image.resize((max(32, int(image.width * scale)), max(18, int(image.height * scale))), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=int(rng.integers(40, 80)))
    return out.getvalue()


@pytest.fixture
def store(s3_server: ServerProcess, s3_credentials: dict, unique: str) -> ObjectStore:
    s3 = S3Settings(endpoint=s3_server.address, bucket=f"embedding-{unique}", **s3_credentials)
    return open_store(EmbeddingServiceSettings(objects=ObjectsKind.S3, s3=s3, bus="memory"))


@pytest.fixture
def kafka(broker: ServerProcess) -> Iterator[KafkaBus]:
    bus = KafkaBus(KafkaSettings(bootstrap=broker.address, partitions=4, session_timeout_ms=6000))
    yield bus
    bus.close()


def thumbnail_event(store: ObjectStore, video_id: str, jpeg: bytes) -> events_pb2.ThumbnailStored:
    prepared = prepare_thumbnail(jpeg, max_pixels=40_000_000)
    return store_thumbnail(store, prepared, video_id=video_id, source_url=f"https://i.ytimg.com/vi/{video_id}/mq.jpg")


def publish(bus: KafkaBus, topic: str, payload, key: str) -> None:
    envelope = events.wrap(payload, producer="test")
    producer = bus.producer()
    producer.publish(topic, events.encode(envelope), key=key, headers=events.headers_of(envelope))
    producer.flush()


def embedding_worker(bus, topics, group, handler) -> Worker:
    return Worker(
        bus,
        topics,
        group,
        handler,
        service="embedding",
        retry=FAST_RETRY,
        max_batch=16,
        before_commit=handler.before_commit,
    )


def test_thumbnails_and_frames_become_vectors_concepts_shards_and_events_and_a_replay_changes_nothing(
    kafka: KafkaBus, store: ObjectStore, backbone: Backbone, unique: str
) -> None:
    thumbnails_topic, frames_topic = f"thumbs-{unique}", f"frames-{unique}"
    thumbnails = catalogue_thumbnails(24)
    for video_id, jpeg in thumbnails:
        publish(kafka, thumbnails_topic, thumbnail_event(store, video_id, jpeg), video_id)
    broken = events_pb2.ThumbnailStored(
        video_id="broken",
        images=[
            events_pb2.StoredImage(
                variant="224x224",
                ref=store.put_content(b"\xff\xd8not a jpeg", prefix="t", content_type="image/jpeg").to_ref(),
            )
        ],
    )
    publish(kafka, thumbnails_topic, broken, "broken")
    frame_refs = [
        store.put_content(jpeg, prefix="frames", content_type="image/jpeg").to_ref() for _, jpeg in thumbnails[:6]
    ]
    frames = events_pb2.FramesExtracted(
        video_id="with-frames",
        frames=[events_pb2.Frame(index=i, timestamp_seconds=float(i), ref=ref) for i, ref in enumerate(frame_refs)],
    )
    publish(kafka, frames_topic, frames, "with-frames")

    index = SimilarityIndex(backbone.dim)
    outputs = Recorder()
    handler = EmbeddingHandler(backbone, store=store, producer=kafka.producer(), index=index, shard_prefix=SHARDS)
    observer = Worker(
        kafka,
        [events.EMBEDDINGS_COMPUTED, dlq_topic(thumbnails_topic)],
        f"obs-{unique}",
        outputs.handler("out"),
        service="test",
    )
    with running(embedding_worker(kafka, [thumbnails_topic, frames_topic], f"emb-{unique}", handler), observer):
        outputs.wait_for(len(thumbnails) + 1 + 1, timeout=120)

    computed = {}
    for _, envelope, message in outputs.seen:
        if message.topic == events.EMBEDDINGS_COMPUTED and envelope.embedding_computed.video_id != "":
            computed.setdefault(envelope.embedding_computed.video_id, []).append(envelope.embedding_computed)
    letters = [env.dead_letter for topic, env, m in outputs.seen if m.topic == dlq_topic(thumbnails_topic)]
    assert [events.decode(letter.value).thumbnail_stored.video_id for letter in letters] == ["broken"]
    assert "image 0" in letters[0].reason

    ours = {video_id for video_id, _ in thumbnails} | {"with-frames"}
    assert ours <= set(computed)
    for video_id, _ in thumbnails:
        [event] = computed[video_id]
        assert event.source == events_pb2.EMBEDDING_SOURCE_THUMBNAIL and event.count == 1 and event.dim == 1280
        assert event.model.name == "efficientnet_lite0" and len(event.top_concepts) == 5
        vectors = np.load(io.BytesIO(store.get(event.vectors.key)))
        assert vectors.shape == (1, 1280) and abs(np.linalg.norm(vectors[0]) - 1) < 1e-4
    [frames_event] = computed["with-frames"]
    assert frames_event.source == events_pb2.EMBEDDING_SOURCE_FRAMES and frames_event.count == 6
    assert np.load(io.BytesIO(store.get(frames_event.vectors.key))).shape == (6, 1280)
    assert max(c.count for c in frames_event.top_concepts) <= 6

    rebuilt = SimilarityIndex.load_shards(store, SHARDS, dim=1280)
    assert len(rebuilt) == len(index) == len(thumbnails), "the shards hold exactly what the index held"
    video_id = thumbnails[0][0]
    assert np.allclose(rebuilt.vector(video_id), index.vector(video_id))

    keys_before = {info.key for info in store.list()}
    replay = EmbeddingHandler(backbone, store=store, producer=kafka.producer(), index=rebuilt, shard_prefix=SHARDS)
    again = Recorder()
    # seen_ids=0: this observer records every delivery, duplicates included, to compare the replay's ids.
    replay_observer = Worker(
        kafka, [events.EMBEDDINGS_COMPUTED], f"obs2-{unique}", again.handler("again"), service="test", seen_ids=0
    )
    with running(embedding_worker(kafka, [thumbnails_topic], f"emb2-{unique}", replay), replay_observer):
        again.wait_for(2 * len(thumbnails) + 1, timeout=120)
    replayed_ids = Counter(envelope.event_id for _, envelope, _ in again.seen)
    assert len(replayed_ids) == len(thumbnails) + 1, "the replay re-published the first pass's event ids"
    new_keys = {info.key for info in store.list()} - keys_before
    assert all(key.startswith(SHARDS) for key in new_keys), f"a replay stores no new vectors or concepts: {new_keys}"
    assert len(rebuilt) == len(thumbnails)


def image_phash(jpeg: bytes) -> int:
    return phash(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def test_near_copies_of_200_thumbnails_find_their_original_at_rank_1(backbone: Backbone) -> None:
    thumbnails = catalogue_thumbnails(200)
    index = SimilarityIndex(backbone.dim)
    originals = backbone.embed([jpeg for _, jpeg in thumbnails])
    index.upsert_many([v for v, _ in thumbnails], originals.vectors, [image_phash(j) for _, j in thumbnails])
    copies = [altered(jpeg, seed) for seed, (_, jpeg) in enumerate(thumbnails)]
    vectors = backbone.embed(copies).vectors
    embedding_only = sum(
        index.query(vector, 1)[0].video_id == video_id
        for vector, (video_id, _) in zip(vectors, thumbnails, strict=True)
    )
    hits = sum(
        index.query(vector, 1, phash=image_phash(copy))[0].video_id == video_id
        for vector, copy, (video_id, _) in zip(vectors, copies, thumbnails, strict=True)
    )
    assert hits / len(thumbnails) >= 0.95, f"rank-1 retrieval {hits}/{len(thumbnails)} ({embedding_only} without pHash)"
    assert hits >= embedding_only, "the perceptual hash only ever helps here"


@pytest.fixture
def embedder(backbone: Backbone) -> Iterator[tuple[embedding_pb2_grpc.EmbedderStub, SimilarityIndex]]:
    thumbnails = catalogue_thumbnails(40, seed=5)
    index = SimilarityIndex(backbone.dim)
    index.upsert_many([v for v, _ in thumbnails], backbone.embed([j for _, j in thumbnails]).vectors)
    settings = EmbeddingServiceSettings(
        bus="memory",
        objects="local",
        embedding=EmbeddingSettings(
            grpc_host="127.0.0.1", grpc_port=0, max_image_bytes=200_000, max_images_per_request=8
        ),
    )
    handler = EmbeddingHandler(backbone, store=None, producer=None, index=index, shard_prefix=SHARDS)
    [server] = start_api(Runtime(settings, None, None, None), handler)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.rpc.port}")
    try:
        yield embedding_pb2_grpc.EmbedderStub(channel), index, thumbnails
    finally:
        channel.close()
        server.stop()


def test_embed_returns_unit_vectors_and_concepts_per_image(embedder, photos) -> None:
    stub, _, thumbnails = embedder
    coffee = io.BytesIO()
    photos["coffee"].save(coffee, "JPEG")
    response = stub.Embed(embedding_pb2.EmbedRequest(images=[thumbnails[0][1], coffee.getvalue()], with_concepts=True))
    assert response.dim == 1280 and len(response.vectors) == 2 and response.id
    assert all(abs(np.linalg.norm(v.values) - 1) < 1e-4 for v in response.vectors)
    assert response.concepts[1].concepts[0].label.lower() == "espresso"


def test_similar_by_video_id_and_by_image(embedder) -> None:
    stub, index, thumbnails = embedder
    video_id, jpeg = thumbnails[3]
    by_id = stub.Similar(embedding_pb2.SimilarRequest(video_id=video_id, k=5))
    assert len(by_id.matches) == 5 and video_id not in {m.video_id for m in by_id.matches}
    assert by_id.exact and by_id.indexed == len(index)
    by_image = stub.Similar(embedding_pb2.SimilarRequest(image=altered(jpeg, 1), k=3))
    assert by_image.matches[0].video_id == video_id
    assert by_image.matches[0].cosine > 0.8
    # This index holds no perceptual hashes: each costs the average of unrelated pictures (32 bits), alike for all.
    assert [m.score for m in by_image.matches] == pytest.approx([m.cosine - 0.16 for m in by_image.matches], abs=1e-6)


@pytest.mark.parametrize(
    ("request_", "code", "reason", "field"),
    [
        (
            embedding_pb2.EmbedRequest(images=[b"\xff\xd8\xff\xe0oops", b"<html>"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_INPUT",
            "images[0]",
        ),
        (
            embedding_pb2.EmbedRequest(images=[b"x" * 300_000]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_LARGE",
            "images[0]",
        ),
        (
            embedding_pb2.EmbedRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_INPUT",
            "images",
        ),
        (
            embedding_pb2.SimilarRequest(video_id="nobody-knows", k=3),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
            "video_id",
        ),
        (
            embedding_pb2.SimilarRequest(video_id="x", k=5000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_INPUT",
            "k",
        ),
        (
            embedding_pb2.SimilarRequest(k=3),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_INPUT",
            "query",
        ),
    ],
)
def test_bad_requests_get_typed_errors(embedder, request_, code, reason, field) -> None:
    stub = embedder[0]
    call = stub.Embed if isinstance(request_, embedding_pb2.EmbedRequest) else stub.Similar
    with pytest.raises(grpc.RpcError) as caught:
        call(request_)
    assert caught.value.code() == code, caught.value.details()
    details = error_details(caught.value)
    assert details.reason == reason and details.message
    assert details.field == field
