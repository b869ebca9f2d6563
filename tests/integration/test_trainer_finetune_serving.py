"""A fine-tuned image classifier packaged as a TorchServe archive and served by a real TorchServe: raw thumbnail bytes
in, the same probabilities as the model gives in process; a corrupt image is a client error that says why."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from tubelens.devtools.fakeyoutube import Catalogue
from tubelens.devtools.fakeyoutube.thumbnails import BY_FILE, thumbnail_jpeg
from tubelens.devtools.servers import ServerProcess, start_torchserve
from tubelens.modelkit.registry import package_finetuned
from tubelens.modelkit.ts_image_handler import CONFIG_FILE, MODEL_FILE
from tubelens.trainer.finetune import FineTuneConfig, FineTuned, fine_tune, load_finetuned

TASK = "channel_image"
TOLERANCE = 1e-5


@dataclass
class Trained:
    model: FineTuned  # as loaded back from its saved files, the way the archive carries them
    model_dir: Path
    images: list[bytes]  # thumbnails it was not trained on


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A quick fine-tune (one epoch of the new layer and the head conv) on three channels' rendered thumbnails."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: a second OpenMP thread mostly waits its turn
    try:
        catalogue = Catalogue.generate(5, 3, 6, now=datetime(2025, 6, 2, tzinfo=UTC))
        videos = sorted(catalogue.videos, key=lambda v: (v.channel_id, v.id))
        images = [thumbnail_jpeg(catalogue.channel(v.channel_id), v, BY_FILE["mqdefault.jpg"]) for v in videos]
        channels = [v.channel_id for v in videos]
        config = FineTuneConfig(trainable_blocks=1, epochs=1, batch_size=6, seed=1)
        model = fine_tune(
            images[::2], channels[::2], images[1::2], channels[1::2],
            labels=sorted(set(channels)), config=config, quiet=True,
        )  # fmt: skip
        model_dir = tmp_path_factory.mktemp("finetuned")
        model.save(model_dir)
        yield Trained(load_finetuned(model_dir), model_dir, images[1::2])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The archive in a model store of its own, one TorchServe on free ports, the model registered with batching."""
    root = tmp_path_factory.mktemp("served")
    package_finetuned(trained.model_dir, task=TASK, version="1.0", out_dir=root / "model-store")
    (root / "ts").mkdir()
    proc = start_torchserve(root / "ts", model_store=root / "model-store")
    try:
        url = (
            f"http://127.0.0.1:{proc.ports['management']}/models?url={TASK}.mar&initial_workers=1"
            "&synchronous=true&batch_size=4&max_batch_delay=200"
        )
        status, body = _request(urllib.request.Request(url, method="POST"))
        assert status == 200, body
        yield proc
    finally:
        proc.stop()


def _request(request: urllib.request.Request) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _predict(server: ServerProcess, image: bytes) -> tuple[int, object]:
    url = f"http://127.0.0.1:{server.ports['inference']}/predictions/{TASK}"
    return _request(urllib.request.Request(url, data=image, method="POST", headers={"Content-Type": "image/jpeg"}))


def test_the_archive_carries_the_handler_and_the_model_files(trained: Trained, tmp_path: Path) -> None:
    archive = package_finetuned(trained.model_dir, task=TASK, version="2", out_dir=tmp_path)

    with zipfile.ZipFile(archive) as mar:
        names = set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    assert {"ts_image_handler.py", MODEL_FILE, CONFIG_FILE} <= names
    assert manifest["model"]["handler"] == "ts_image_handler.py" and manifest["model"]["modelVersion"] == "2"


def test_the_served_model_answers_as_it_does_in_process(trained: Trained, server: ServerProcess) -> None:
    image = trained.images[0]

    status, answer = _predict(server, image)

    assert status == 200, answer
    assert answer["labels"] == trained.model.labels
    expected = trained.model.predict_proba([image])[0]
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=0, atol=TOLERANCE)
    assert answer["label"] == trained.model.predict([image])[0]


def test_concurrent_requests_batched_together_each_get_their_own_answer(
    trained: Trained, server: ServerProcess
) -> None:
    with ThreadPoolExecutor(len(trained.images)) as pool:
        results = list(pool.map(lambda image: _predict(server, image), trained.images))

    expected = trained.model.predict_proba(trained.images)
    for (status, answer), probabilities in zip(results, expected, strict=True):
        assert status == 200, answer
        np.testing.assert_allclose(answer["probabilities"], probabilities, rtol=0, atol=TOLERANCE)


def test_a_corrupt_image_is_a_client_error_that_says_why(trained: Trained, server: ServerProcess) -> None:
    image = trained.images[0]

    status, body = _predict(server, image[: len(image) // 2])

    assert status == 400, body
    assert "corrupt or truncated JPEG" in json.dumps(body)


def test_a_corrupt_image_batched_with_good_ones_fails_alone(trained: Trained, server: ServerProcess) -> None:
    images = [trained.images[0], b"<html>not an image</html>", trained.images[1]]
    with ThreadPoolExecutor(len(images)) as pool:
        results = list(pool.map(lambda image: _predict(server, image), images))

    assert [status for status, _ in results] == [200, 400, 200], results
    assert "not a JPEG, PNG or WebP" in json.dumps(results[1][1])
