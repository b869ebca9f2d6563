"""The genre model packaged exactly as a head is, served by a real TorchServe and answering as it does in process;
and a training run that reads the sequences from the object store, publishes the model and promotes it only on a win
over production on the same held-out channels."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.datasetkit import put_array
from tubelens import events
from tubelens.bus.memory import MemoryBus
from tubelens.devtools.servers import ServerProcess, start_torchserve
from tubelens.errors import InvalidInput
from tubelens.modelkit.registry import ModelRegistry, package_head
from tubelens.objects import LocalObjectStore
from tubelens.trainer.genre import FRAME_DIM, GenreInputs, GenreModel, GenreTrainConfig, train_genre
from tubelens.trainer.splits import channel_split
from tubelens.trainer.train import SPECS, run_training

GENRES = ["10", "17", "2", "20"]
BANDS = 16
TOLERANCE = 1e-5


def sequences(seed: int, genres: list[int], channels: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames that follow each video's channel and audio that follows its genre, of varying lengths (one step up to
    longer than the model reads)."""
    rng = np.random.default_rng(seed)
    channel_looks = np.random.default_rng(0).standard_normal((max(channels) + 1, FRAME_DIM))
    genre_sounds = np.random.default_rng(1).normal(0, 2, (len(GENRES), BANDS)) - 3
    frames, audio = [], []
    for genre, channel in zip(genres, channels, strict=True):
        length = int(rng.choice([1, 2, 5, 9, 70]))
        vectors = channel_looks[channel] + rng.standard_normal((length, FRAME_DIM))
        frames.append((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
        audio.append((genre_sounds[genre] + rng.normal(0, 1, (length + 2, BANDS))).astype(np.float32))
    return frames, audio


def inputs(seed: int, count: int) -> tuple[GenreInputs, np.ndarray]:
    genres = [index % len(GENRES) for index in range(count)]
    frames, audio = sequences(seed, genres, genres)
    return GenreInputs(frames, audio, np.arange(count)), np.asarray(GENRES, dtype=object)[genres]


@dataclass
class Trained:
    model: GenreModel
    head_dir: Path
    unseen: GenreInputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    videos, labels = inputs(seed=1, count=40)
    train, val = videos.select(range(30)), videos.select(range(30, 40))
    config = GenreTrainConfig(hidden=8, fusion_hidden=8, max_epochs=10, patience=4, seed=2)
    model = train_genre(train, labels[:30], val, labels[30:], labels=GENRES, config=config, quiet=True)
    head_dir = tmp_path_factory.mktemp("genre") / "head"
    model.save(head_dir)
    return Trained(model, head_dir, inputs(seed=9, count=6)[0])


@pytest.fixture(scope="module")
def served(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The genre model packaged by `package_head`, as the registry packages heads, and one TorchServe serving it."""
    root = tmp_path_factory.mktemp("served")
    package_head(trained.head_dir, task="genre", version="1.0", out_dir=root / "model-store")
    (root / "ts").mkdir()
    server = start_torchserve(root / "ts", model_store=root / "model-store")
    try:
        url = (
            f"http://127.0.0.1:{server.ports['management']}/models?url=genre.mar&initial_workers=1"
            "&synchronous=true&batch_size=4&max_batch_delay=200"
        )
        status, body = _request("POST", url)
        assert status == 200, body
        yield server
    finally:
        server.stop()


def _request(method: str, url: str, body: object | None = None) -> tuple[int, object]:
    # A JSON content type on an empty management POST makes TorchServe read the (absent) body as the request.
    data, headers = (None, {}) if body is None else (json.dumps(body).encode(), {"Content-Type": "application/json"})
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _predict(server: ServerProcess, video: dict) -> tuple[int, object]:
    return _request("POST", f"http://127.0.0.1:{server.ports['inference']}/predictions/genre", video)


def _video(videos: GenreInputs, index: int) -> dict:
    return {"frames": videos.frames[index].tolist(), "audio": videos.audio[index].tolist()}


def test_the_served_genre_model_answers_as_it_does_in_process(trained: Trained, served: ServerProcess) -> None:
    expected = trained.model.predict_proba(trained.unseen)
    labels = trained.model.predict(trained.unseen)

    for index in range(len(trained.unseen)):
        status, answer = _predict(served, _video(trained.unseen, index))

        assert status == 200, answer
        assert answer["labels"] == GENRES and answer["label"] == labels[index]
        assert np.abs(np.array(answer["probabilities"]) - expected[index]).max() <= TOLERANCE


def test_videos_batched_together_each_get_their_own_answer(trained: Trained, served: ServerProcess) -> None:
    expected = trained.model.predict_proba(trained.unseen)
    with ThreadPoolExecutor(len(trained.unseen)) as pool:
        results = list(pool.map(lambda i: _predict(served, _video(trained.unseen, i)), range(len(trained.unseen))))

    for index, (status, answer) in enumerate(results):
        assert status == 200, answer
        assert np.abs(np.array(answer["probabilities"]) - expected[index]).max() <= TOLERANCE


def test_a_malformed_request_is_a_client_error(trained: Trained, served: ServerProcess) -> None:
    status, body = _predict(served, {"frames": [[0.0] * 5], "audio": trained.unseen.audio[0].tolist()})
    assert status == 400, body
    assert "row needs 1280 numbers; got shape [1, 5]" in json.dumps(body)

    status, body = _predict(served, {"frames": trained.unseen.frames[0].tolist()})
    assert status == 400, body
    assert "needs at least one row of 16 numbers" in json.dumps(body)


# --- a training run ------------------------------------------------------------------------------------------------

CHANNELS = 12  # three per genre


@pytest.fixture
def snapshot(tmp_path: Path) -> tuple[LocalObjectStore, pa.Table]:
    """Videos whose sequences lie in the store as the pipeline stores them, with a held-out-channel split."""
    store = LocalObjectStore(tmp_path / "objects", "tubelens")
    store.ensure_bucket()
    channels = [channel for channel in range(CHANNELS) for _ in range(5)]
    genres = [channel % len(GENRES) for channel in channels]
    frames, audio = sequences(3, genres, channels)
    names = [f"UC{channel:02d}" for channel in channels]
    table = pa.table(
        {
            "channel": names,
            "genre": [GENRES[genre] for genre in genres],
            "frames_vectors_key": [put_array(store, steps, "embeddings/frames").key for steps in frames],
            "audio_features_key": [put_array(store, steps, "audio/logmel").key for steps in audio],
            "split_channel": channel_split(names, np.arange(len(names)), seed=0),
        }
    )
    return store, table


def test_a_training_run_publishes_the_genre_model_and_promotes_it_only_on_a_win(snapshot) -> None:
    store, table = snapshot
    bus, registry = MemoryBus(), ModelRegistry(store)

    first = run_training(table, "snap-1", ["genre"], registry=registry, producer=bus.producer(), seed=0)[0]
    second = run_training(table, "snap-1", ["genre"], registry=registry, producer=bus.producer(), seed=1)[0]

    assert first.promoted and first.entry.task == "genre" and SPECS["genre"].split_column == "split_channel"
    assert {"accuracy", "macro_f1", "gap"} <= set(first.metrics) and first.metrics["accuracy"] > 0.5
    with zipfile.ZipFile(store.open(first.entry.archive.key)) as mar:
        assert {"head.pt", "head.json"} <= set(mar.namelist())
        assert json.loads(mar.read("head.json"))["kind"] == "genre"
    assert "frames + audio" in store.get(first.entry.model_card_key).decode()
    beats = second.metrics["macro_f1"] > first.metrics["macro_f1"]
    assert second.promoted == beats
    assert registry.production("genre").version == (second if beats else first).entry.version
    trained = [events.decode(m.value).model_trained for m in bus.broker.read_all(events.MODELS_TRAINED)]
    assert [(event.task, event.promoted) for event in trained] == [("genre", True), ("genre", beats)]


def test_a_training_run_without_media_says_what_is_missing(snapshot) -> None:
    store, table = snapshot
    silent = table.set_column(
        table.schema.get_field_index("audio_features_key"), "audio_features_key", pa.array([""] * len(table))
    )
    with pytest.raises(InvalidInput, match="no train videos with frames and audio"):
        run_training(silent, "snap-2", ["genre"], registry=ModelRegistry(store), producer=MemoryBus().producer())
