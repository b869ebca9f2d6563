"""Fine-tuning EfficientNet-Lite0 end to end on thumbnails: it learns to tell channels apart from their pictures,
the same seed gives the same weights, a saved model answers as it did before saving, and the TorchServe handler sees
exactly the pixels the embedding service sees and answers as the model does in process."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from tests.datasetkit import NOW, make_world
from tubelens.devtools.fakeyoutube import Catalogue
from tubelens.devtools.fakeyoutube.thumbnails import BY_FILE, bomb_png, thumbnail_jpeg
from tubelens.errors import InvalidInput, NotFound
from tubelens.modelkit import ts_image_handler
from tubelens.modelkit.efficientnet import load_pretrained
from tubelens.modelkit.preprocess import to_batch
from tubelens.objects import LocalObjectStore
from tubelens.trainer.dataset import DatasetBuilder
from tubelens.trainer.finetune import (
    FineTuneConfig,
    FineTuned,
    ImageClassifier,
    fine_tune,
    load_finetuned,
    load_thumbnails,
)

CHANNELS = 4
VIDEOS_PER_CHANNEL = 12
TRAIN, VAL = 6, 2  # per channel; the other 4 are held out
# Small enough for two shared cores: the head conv and the last MBConv stage learn, for three short epochs.
CONFIG = FineTuneConfig(trainable_blocks=2, epochs=3, batch_size=8, head_learning_rate=1e-2, seed=3)
TOLERANCE = 1e-5


@dataclass
class Split:
    images: list[bytes]
    channels: list[str]


@dataclass
class Thumbnails:
    train: Split
    val: Split
    test: Split
    labels: list[str]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # On two cores shared with other processes, OpenMP's second thread mostly waits its turn and slows every op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def thumbnails() -> Thumbnails:
    """The stand-in's rendered 320x180 thumbnails (the size the preprocessor fetches), split within each channel."""
    catalogue = Catalogue.generate(11, CHANNELS, VIDEOS_PER_CHANNEL, now=datetime(2025, 6, 2, tzinfo=UTC))
    splits = {name: Split([], []) for name in ("train", "val", "test")}
    for channel in catalogue.channels:
        videos = sorted((v for v in catalogue.videos if v.channel_id == channel.id), key=lambda v: v.id)
        for index, video in enumerate(videos):
            name = "train" if index < TRAIN else "val" if index < TRAIN + VAL else "test"
            splits[name].images.append(thumbnail_jpeg(channel, video, BY_FILE["mqdefault.jpg"]))
            splits[name].channels.append(channel.id)
    return Thumbnails(**splits, labels=sorted(c.id for c in catalogue.channels))


@pytest.fixture(scope="module")
def tuned(thumbnails: Thumbnails) -> FineTuned:
    t = thumbnails
    return fine_tune(
        t.train.images, t.train.channels, t.val.images, t.val.channels, labels=t.labels, config=CONFIG, quiet=True
    )


@pytest.fixture(scope="module")
def saved(tuned: FineTuned, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("finetuned")
    tuned.save(directory)
    return directory


def test_fine_tuning_tells_channels_apart_on_held_out_thumbnails(tuned: FineTuned, thumbnails: Thumbnails) -> None:
    predicted = tuned.predict(thumbnails.test.images)

    accuracy = float(np.mean(predicted == np.asarray(thumbnails.test.channels, dtype=object)))
    assert accuracy >= 0.6, f"held-out accuracy {accuracy:.3f}, chance is {1 / CHANNELS}"
    outcome = tuned.outcome
    assert 1 <= outcome.best_epoch <= outcome.epochs <= CONFIG.epochs
    assert (outcome.train_images, outcome.val_images) == (CHANNELS * TRAIN, CHANNELS * VAL)
    assert (outcome.seed, outcome.device) == (CONFIG.seed, "cpu")
    assert outcome.images_per_second > 0 and outcome.seconds > 0
    probabilities = tuned.predict_proba(thumbnails.test.images)
    assert probabilities.shape == (len(predicted), CHANNELS)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_same_seed_gives_the_same_weights_and_frozen_units_stay_pretrained(thumbnails: Thumbnails) -> None:
    t = thumbnails
    config = FineTuneConfig(trainable_blocks=2, epochs=1, batch_size=4, seed=5, horizontal_flip=True)

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = fine_tune(
            t.train.images[::3], t.train.channels[::3], t.val.images[:2], t.val.channels[:2],
            labels=t.labels, config=replace(config, seed=seed), quiet=True,
        )  # fmt: skip
        return model.network.state_dict()

    first, again, other = run(5), run(5), run(6)

    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["classifier.weight"], other["classifier.weight"])
    pretrained = load_pretrained().state_dict()
    # The stem and stages 1-6 are frozen: weights and BatchNorm statistics are ImageNet's still.
    frozen = [name for name in first if name.startswith(("stem.", "blocks.")) and int(name.split(".")[1]) < 15]
    assert frozen and all(torch.equal(first[name], pretrained[name]) for name in frozen)
    # The head conv learned, and its BatchNorm (in train mode) moved its running mean.
    assert not torch.equal(first["head.0.weight"], pretrained["head.0.weight"])
    assert not torch.equal(first["head.1.running_mean"], pretrained["head.1.running_mean"])


def test_trainable_blocks_count_units_from_the_end() -> None:
    def trainable(blocks: int) -> set[str]:
        network = ImageClassifier(load_pretrained(), 3, trainable_blocks=blocks, dropout=0.0)
        return {name.split(".")[0] for name, p in network.named_parameters() if p.requires_grad}

    assert trainable(0) == {"classifier"}
    assert trainable(1) == {"classifier", "head"}
    assert trainable(9) == {"classifier", "head", "blocks", "stem"}
    with pytest.raises(InvalidInput, match="trainable_blocks"):
        FineTuneConfig(trainable_blocks=10)


def test_a_saved_model_loads_back_and_answers_identically(
    tuned: FineTuned, saved: Path, thumbnails: Thumbnails
) -> None:
    loaded = load_finetuned(saved)

    assert isinstance(loaded.network, torch.jit.ScriptModule)
    assert loaded.labels == tuned.labels == thumbnails.labels
    assert (loaded.config, loaded.outcome) == (tuned.config, tuned.outcome)
    np.testing.assert_allclose(
        loaded.predict_proba(thumbnails.test.images), tuned.predict_proba(thumbnails.test.images), rtol=0, atol=1e-6
    )
    config = json.loads((saved / ts_image_handler.CONFIG_FILE).read_text())
    assert config["kind"] == "image_classifier"
    assert config["preprocessing"] == {
        "resize": 256, "resample": "bicubic", "crop": 224, "mean": [0.5] * 3, "std": [0.5] * 3,
        "max_pixels": CONFIG.max_pixels,
    }  # fmt: skip
    assert config["fine_tune"]["trainable_blocks"] == 2 and config["outcome"]["best_epoch"] >= 1


# the TorchServe handler


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def test_the_handler_sees_exactly_the_pixels_the_embedding_service_sees(thumbnails: Thumbnails) -> None:
    photo = Image.open(io.BytesIO(thumbnails.test.images[0]))
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (301, 177, 4), dtype=np.uint8), "RGBA")
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    images = [
        thumbnails.test.images[0],  # the fetched 320x180 JPEG
        encoded(photo.resize((224, 224)), "JPEG", quality=95, subsampling=0),  # the stored 224x224 variant
        encoded(noise, "PNG"),  # transparency, odd sizes, portrait
        encoded(noise.convert("RGB"), "WEBP", quality=80),
        encoded(photo.convert("L"), "PNG"),
        encoded(palette, "PNG"),
    ]
    preprocessing = {"resize": 256, "crop": 224, "mean": [0.5] * 3, "std": [0.5] * 3}

    for index, data in enumerate(images):
        image = ts_image_handler.decode(data, max_pixels=10**7)
        pixels = ts_image_handler.crop_pixels(image, resize=preprocessing["resize"], crop=preprocessing["crop"])
        ours = ts_image_handler.normalize(pixels[None], mean=preprocessing["mean"], std=preprocessing["std"])
        assert np.array_equal(ours, to_batch([data])), index


@pytest.fixture
def handler(saved: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The handler loaded as TorchServe loads it, with a context that records per-request statuses."""
    monkeypatch.setattr(ts_image_handler, "_service", None)
    statuses: dict[int, int] = {}
    context = SimpleNamespace(
        system_properties={"model_dir": str(saved)},
        set_response_status=lambda code, phrase, idx: statuses.__setitem__(idx, code),
        statuses=statuses,
    )
    assert ts_image_handler.handle(None, context) is None
    return context


def test_the_handler_answers_a_batch_as_the_model_does_in_process(
    saved: Path, handler: SimpleNamespace, thumbnails: Thumbnails
) -> None:
    images = thumbnails.test.images[:3]
    requests = [{"body": images[0]}, {"data": bytearray(images[1])}, {"body": images[2]}]

    answers = ts_image_handler.handle(requests, handler)

    model = load_finetuned(saved)
    expected = model.predict_proba(images)
    assert [answer["labels"] for answer in answers] == [model.labels] * 3
    assert np.abs(np.array([answer["probabilities"] for answer in answers]) - expected).max() <= TOLERANCE
    assert [answer["label"] for answer in answers] == list(model.predict(images))
    assert handler.statuses == {}


def test_an_undecodable_image_is_a_client_error_that_says_why(handler: SimpleNamespace, thumbnails: Thumbnails) -> None:
    jpeg = thumbnails.test.images[0]
    cases = {
        b"<html>not found</html>": "not a JPEG, PNG or WebP",
        jpeg[: len(jpeg) // 3]: "corrupt or truncated JPEG",
        bomb_png(): "too many pixels",
        b"": "empty image",
    }
    # TorchServe's PredictionException where TorchServe is installed (a 400 with the message), else BadImage.
    client_error = type(ts_image_handler._prediction_error("probe"))
    for body, message in cases.items():
        with pytest.raises(client_error, match=message) as raised:
            ts_image_handler.handle([{"body": body}], handler)
        assert getattr(raised.value, "error_code", 400) == 400
    with pytest.raises(client_error, match="image's bytes"):
        ts_image_handler.handle([{"body": {"features": []}}], handler)

    # In a batch, only the bad request fails.
    answers = ts_image_handler.handle([{"body": jpeg}, {"body": b"garbage"}], handler)

    assert answers[0]["label"] in thumbnails.labels
    assert answers[1]["code"] == 400 and "not a JPEG, PNG or WebP" in answers[1]["message"]
    assert handler.statuses == {1: 400}


# images for training


def test_an_unusable_training_image_is_named(thumbnails: Thumbnails) -> None:
    t = thumbnails
    images = [*t.train.images[:3], b"nonsense"]

    with pytest.raises(InvalidInput, match=r"images_train\[3\]"):
        fine_tune(images, t.train.channels[:4], t.val.images, t.val.channels, labels=t.labels, quiet=True)


def test_thumbnails_are_loaded_for_the_rows_of_a_snapshot(store: LocalObjectStore) -> None:
    world = make_world(store, channels=2, videos_per_channel=3)
    builder = DatasetBuilder(store)
    for envelope in world.events:
        builder.handle(envelope)
    table = builder.snapshot(seed=1, now=NOW).table

    images = load_thumbnails(store, table)

    assert images == [store.get(world.thumbnail_keys[video_id]) for video_id in table["video_id"].to_pylist()]
    assert all(Image.open(io.BytesIO(image)).size == (224, 224) for image in images)
    unknown = pa.table({"video_id": ["a", "b"], "thumbnail_key": [table["thumbnail_key"][0].as_py(), ""]})
    with pytest.raises(NotFound, match="video b has no stored thumbnail"):
        load_thumbnails(store, unknown)
    store.delete(table["thumbnail_key"][0].as_py())
    with pytest.raises(NotFound, match=f"video {table['video_id'][0].as_py()}"):
        load_thumbnails(store, table)
