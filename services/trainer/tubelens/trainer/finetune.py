"""Fine-tuning the pretrained EfficientNet-Lite0 end to end on thumbnails, for an image classification task (channel,
popularity bucket): the heads of `heads.py` learn on frozen embeddings, this learns the backbone's last stages too.

The network is the ImageNet backbone with its ImageNet classifier replaced by a new linear layer over the pooled 1280
features. `trainable_blocks` counts units from the end of [stem, MBConv stages 1-7, head conv]: 0 trains only the new
layer, 1 also the head conv, 2 also the last stage, ... `ALL_BLOCKS` everything. Frozen units keep their BatchNorm in
eval mode: their running statistics are ImageNet's and a small batch of thumbnails must not overwrite them.

Images are decoded and preprocessed exactly as the embedding service does it (`tubelens.modelkit.preprocess`):
validation, prediction and serving all see the same pixels. Training adds light augmentation on top of that centre
crop: a random crop of most of it, resized back to 224 (bicubic). Horizontal flips are available but off by default:
a channel's layout (logo corner, face and banner side) is one of its strongest cues, and a flip erases it.

Training is deterministic for a seed on the CPU: initialization, dropout, batch order and augmentation all draw
from generators seeded by the config, inside a forked RNG, so the caller's global torch state is left as it was.
The weights of the epoch with the lowest validation loss are kept.

A fine-tuned model saves as a TorchScript file (float32 [N, 3, 224, 224] in, logits out) beside a JSON config with
its labels, preprocessing, fine-tuning config and outcome: everything `ts_image_handler.py` needs to serve it from
raw image bytes without tubelens installed.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from tubelens.errors import InvalidInput, NotFound
from tubelens.modelkit.efficientnet import FEATURE_DIM, STAGES, EfficientNetLite0, load_pretrained, model_spec
from tubelens.modelkit.preprocess import (
    DEFAULT_MAX_PIXELS,
    INPUT_SIZE,
    RESIZE_SIZE,
    ImageInput,
    crop_pixels,
    decode,
    normalize,
    to_batch,
)
from tubelens.modelkit.ts_image_handler import CONFIG_FILE, KIND, MODEL_FILE, RESAMPLE
from tubelens.objects import ObjectStore
from tubelens.progress import StageProgress
from tubelens.trainer.metrics import encode

ALL_BLOCKS = len(STAGES) + 2  # the stem, every MBConv stage and the head conv
MEAN = STD = 0.5  # what the ImageNet weights were trained with: x / 255 * 2 - 1
FETCH_THREADS = 8
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class FineTuneConfig:
    trainable_blocks: int = 3  # units unfrozen from the end: head conv + the last two stages; 0..ALL_BLOCKS
    epochs: int = 10
    batch_size: int = 32
    backbone_learning_rate: float = 1e-4
    head_learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2  # before the new classifier
    augment: bool = True  # random crops of the centre crop, resized back to 224
    min_crop_area: float = 0.6  # of the centre crop, with aspect ratios from 3/4 to 4/3
    horizontal_flip: bool = False  # off by default: a flip erases a channel's layout
    patience: int = 3  # epochs without a better validation loss before stopping
    min_improvement: float = 1e-4
    seed: int = 0
    device: str = "auto"  # "cpu", "cuda", or "auto": cuda when there is one
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb guard when decoding

    def __post_init__(self) -> None:
        if not 0 <= self.trainable_blocks <= ALL_BLOCKS:
            raise InvalidInput(f"trainable_blocks must be 0..{ALL_BLOCKS}", field="trainable_blocks")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise InvalidInput("epochs, batch_size and patience must be at least 1")
        if not 0 < self.min_crop_area <= 1:
            raise InvalidInput("min_crop_area must be in (0, 1]", field="min_crop_area")
        if self.device not in DEVICES:
            raise InvalidInput(f"device must be one of {', '.join(DEVICES)}", field="device")


@dataclass(frozen=True)
class FineTuneOutcome:
    epochs: int
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    seconds: float  # the whole run: decoding, training and validation
    images_per_second: float  # training images through forward and backward, over the training time only
    seed: int
    device: str
    train_images: int
    val_images: int


class ImageClassifier(nn.Module):
    """images [N, 3, 224, 224], normalized -> logits [N, classes]: the pretrained backbone's pooled features and a
    new linear layer. `train()` leaves the frozen units in eval mode."""

    def __init__(self, backbone: EfficientNetLite0, classes: int, *, trainable_blocks: int, dropout: float) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = backbone.stem, backbone.blocks, backbone.head
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(FEATURE_DIM, classes)
        # Zero weights start every class at the same probability: the first loss is log(classes) whatever the seed.
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        self.trainable_blocks = trainable_blocks
        units = self.units()
        frozen = units[: len(units) - trainable_blocks]
        for unit in frozen:
            unit.requires_grad_(False)
        for unit in units[len(frozen) :]:
            unit.requires_grad_(True)

    def units(self) -> list[nn.Module]:
        """[stem, stage 1, ..., stage 7, head conv]: what `trainable_blocks` counts from the end."""
        stages, start = [], 0
        for *_, repeats in STAGES:
            stages.append(self.blocks[start : start + repeats])
            start += repeats
        return [self.stem, *stages, self.head]

    def frozen_units(self) -> list[nn.Module]:
        units = self.units()
        return units[: len(units) - self.trainable_blocks]

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        for unit in self.frozen_units():
            unit.eval()  # ImageNet's BatchNorm statistics stay as they are
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.head(self.blocks(self.stem(images))).mean(dim=(2, 3))
        return self.classifier(self.dropout(features))


class FineTuned:
    """A fine-tuned classifier: images (encoded bytes or PIL images) in, class probabilities out."""

    def __init__(
        self, network: nn.Module, labels: list[str], config: FineTuneConfig, outcome: FineTuneOutcome | None
    ) -> None:
        self.network = network.eval()
        self._labels = list(labels)
        self.config = config
        self.outcome = outcome

    @property
    def labels(self) -> list[str]:
        return self._labels

    def logits(self, images: Sequence[ImageInput]) -> np.ndarray:
        device = next(self.network.parameters()).device
        parts = [np.empty((0, len(self.labels)), np.float32)]
        for start in range(0, len(images), self.config.batch_size):
            batch = to_batch(images[start : start + self.config.batch_size], max_pixels=self.config.max_pixels)
            with torch.inference_mode():
                parts.append(self.network(torch.from_numpy(batch).to(device)).float().cpu().numpy())
        return np.concatenate(parts)

    def predict_proba(self, images: Sequence[ImageInput]) -> np.ndarray:
        """float32 [N, classes], columns in `labels` order; InvalidInput names the first unusable image."""
        return torch.softmax(torch.from_numpy(self.logits(images)), dim=1).numpy()

    def predict(self, images: Sequence[ImageInput]) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[self.logits(images).argmax(axis=1)]

    def save(self, directory: Path) -> None:
        """`image_classifier.pt` (TorchScript, on the CPU) and `image_classifier.json`, as the handler reads them."""
        directory.mkdir(parents=True, exist_ok=True)
        with _torchscript():
            torch.jit.save(_trace(self.network), str(directory / MODEL_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(self.describe(), indent=1))

    def describe(self) -> dict[str, Any]:
        spec = model_spec()
        return {
            "kind": KIND,
            "labels": self.labels,
            "input": {"dtype": "float32", "shape": [None, 3, INPUT_SIZE, INPUT_SIZE], "output": "logits"},
            "preprocessing": {
                "resize": RESIZE_SIZE,
                "resample": RESAMPLE,
                "crop": INPUT_SIZE,
                "mean": [MEAN] * 3,
                "std": [STD] * 3,
                "max_pixels": self.config.max_pixels,
            },
            "backbone": {"name": spec.name, "version": spec.version},
            "fine_tune": asdict(self.config),
            "outcome": asdict(self.outcome) if self.outcome else None,
        }


def _trace(network: nn.Module) -> torch.jit.ScriptModule:
    """The network traced on the CPU at the fixed input size. The size is fixed, so the TensorFlow-style padding
    that the tracer records as constants is right for every input the handler will give it."""
    if isinstance(network, torch.jit.ScriptModule):
        return network
    cpu = copy.deepcopy(network).cpu().eval()
    with _torchscript():
        return torch.jit.trace(cpu, torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE))


@contextmanager
def _torchscript() -> Iterator[None]:
    """torch now calls TorchScript deprecated in favour of torch.export, but TorchServe (archived at 0.12) serves
    TorchScript; and the tracer's warnings about sizes turned into constants are expected (see `_trace`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit\.")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def load_finetuned(directory: Path) -> FineTuned:
    config = json.loads((directory / CONFIG_FILE).read_text())
    if config.get("kind") != KIND:
        raise InvalidInput(f"{directory / CONFIG_FILE} describes a {config.get('kind')!r}, not a {KIND}")
    with _torchscript():
        network = torch.jit.load(str(directory / MODEL_FILE), map_location="cpu")
    outcome = FineTuneOutcome(**config["outcome"]) if config.get("outcome") else None
    return FineTuned(network, config["labels"], FineTuneConfig(**config["fine_tune"]), outcome)


def load_thumbnails(store: ObjectStore, table: pa.Table) -> list[bytes]:
    """Each row's stored thumbnail (`thumbnail_key`), in row order; NotFound names the first video without one."""
    rows = zip(table.column("video_id").to_pylist(), table.column("thumbnail_key").to_pylist(), strict=True)
    keys = []
    for video_id, key in rows:
        if not key:
            raise NotFound(f"video {video_id} has no stored thumbnail in the snapshot", field="thumbnail_key")
        keys.append((video_id, key))
    with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="thumbnail-fetch") as pool:
        return list(pool.map(lambda item: _fetch(store, *item), keys))


def _fetch(store: ObjectStore, video_id: str, key: str) -> bytes:
    try:
        return store.get(key)
    except NotFound:
        raise NotFound(
            f"the thumbnail of video {video_id} is gone from the store: {key}", field="thumbnail_key"
        ) from None


# training


def fine_tune(
    images_train: Sequence[ImageInput],
    y_train: Sequence,
    images_val: Sequence[ImageInput],
    y_val: Sequence,
    *,
    labels: list[str],
    config: FineTuneConfig = FineTuneConfig(),  # noqa: B008 - frozen, so one shared default is safe
    quiet: bool = False,
) -> FineTuned:
    """A classifier over `labels`. Rows whose label is not among them (a channel seen only in validation) cannot be
    scored by cross-entropy and are left out, as `heads.train_classifier` leaves them out."""
    started = time.perf_counter()
    if len(labels) < 2:
        raise InvalidInput("a classifier needs at least two labels", field="labels")
    labels = [str(label) for label in labels]
    train_x, train_y = _known(images_train, y_train, labels, config.max_pixels, "images_train")
    val_x, val_y = _known(images_val, y_val, labels, config.max_pixels, "images_val")
    if len(train_x) == 0 or len(val_x) == 0:
        raise InvalidInput("fine-tuning needs training and validation images with known labels")
    device = _device(config.device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        network = ImageClassifier(
            load_pretrained(), len(labels), trainable_blocks=config.trainable_blocks, dropout=config.dropout
        ).to(device)
        run = _Run(network, config, device)
        best_state, best_loss, best_accuracy, best_epoch = run.state(), math.inf, 0.0, 0
        with _progress(quiet) as progress:
            for epoch in range(1, config.epochs + 1):
                task = progress.add_task(f"epoch {epoch}/{config.epochs}", total=len(train_x), rate="", val="")
                for done, rate in run.epoch(train_x, train_y, epoch):
                    progress.update(task, completed=done, rate=f"{rate:,.1f} img/s")
                val_loss, val_accuracy = run.evaluate(val_x, val_y)
                progress.update(task, val=f"val loss {val_loss:.4f}  accuracy {val_accuracy:.3f}")
                if val_loss < best_loss - config.min_improvement:
                    best_state, best_loss, best_accuracy, best_epoch = run.state(), val_loss, val_accuracy, epoch
                elif epoch - best_epoch >= config.patience:
                    break
    network.load_state_dict(best_state)
    outcome = FineTuneOutcome(
        epochs=epoch,
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        best_val_accuracy=best_accuracy,
        seconds=time.perf_counter() - started,
        images_per_second=run.images / run.seconds if run.seconds else 0.0,
        seed=config.seed,
        device=str(device),
        train_images=len(train_x),
        val_images=len(val_x),
    )
    return FineTuned(network.eval(), labels, config, outcome)


def _known(
    images: Sequence[ImageInput], y: Sequence, labels: list[str], max_pixels: int, what: str
) -> tuple[np.ndarray, torch.Tensor]:
    """The centre crops (uint8 [N, 224, 224, 3], decoded once) and class indices of the rows with a known label."""
    if len(images) != len(y):
        raise InvalidInput(f"{what}: {len(images)} images but {len(y)} labels", field=what)
    targets = encode([str(value) for value in y], labels)
    known = np.flatnonzero(targets >= 0)
    crops = np.empty((len(known), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    for row, index in enumerate(known):
        crops[row] = _crop(images[index], index, max_pixels, what)
    return crops, torch.from_numpy(targets[known])


def _crop(image: ImageInput, index: int, max_pixels: int, what: str) -> np.ndarray:
    try:
        return crop_pixels(decode(image, max_pixels=max_pixels) if isinstance(image, bytes) else image)
    except InvalidInput as exc:
        raise type(exc)(f"{what}[{index}]: {exc.message}", field=f"{what}[{index}]") from None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device cuda was asked for, but torch sees no CUDA device", field="device")
    return torch.device(name)


class _Run:
    """One fine-tuning run's optimizer, generators and throughput counters."""

    def __init__(self, network: ImageClassifier, config: FineTuneConfig, device: torch.device) -> None:
        self.network, self.config, self.device = network, config, device
        backbone = [
            p for name, p in network.named_parameters() if p.requires_grad and not name.startswith("classifier.")
        ]
        groups = [{"params": list(network.classifier.parameters()), "lr": config.head_learning_rate}]
        if backbone:
            groups.append({"params": backbone, "lr": config.backbone_learning_rate})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.loss_fn = nn.CrossEntropyLoss()
        self.order = torch.Generator().manual_seed(config.seed)
        self.images, self.seconds = 0, 0.0

    def epoch(self, crops: np.ndarray, targets: torch.Tensor, epoch: int) -> Iterator[tuple[int, float]]:
        """One pass over the training images in a seeded order; yields (images done, images/s) after each batch."""
        self.network.train()
        # Per epoch, so that an epoch's augmentation does not depend on how many batches came before it.
        rng = np.random.default_rng([self.config.seed, epoch])
        started, done = time.perf_counter(), 0
        for batch in torch.randperm(len(crops), generator=self.order).split(self.config.batch_size):
            pixels = np.stack([self._augmented(crops[i], rng) for i in batch.tolist()])
            inputs = torch.from_numpy(normalize(pixels)).to(self.device)
            self.optimizer.zero_grad()
            self.loss_fn(self.network(inputs), targets[batch].to(self.device)).backward()
            self.optimizer.step()
            done += len(batch)
            yield done, done / (time.perf_counter() - started)
        self.images += done
        self.seconds += time.perf_counter() - started

    def _augmented(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.config.augment:
            return crop
        box = _random_box(rng, INPUT_SIZE, self.config.min_crop_area)
        pixels = np.asarray(Image.fromarray(crop).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC, box=box))
        if self.config.horizontal_flip and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        return pixels

    def evaluate(self, crops: np.ndarray, targets: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on the un-augmented centre crops, as the service would see them."""
        self.network.eval()
        loss, correct = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(crops), self.config.batch_size):
                inputs = torch.from_numpy(normalize(crops[start : start + self.config.batch_size])).to(self.device)
                expected = targets[start : start + self.config.batch_size].to(self.device)
                logits = self.network(inputs)
                loss += float(nn.functional.cross_entropy(logits, expected, reduction="sum"))
                correct += int((logits.argmax(dim=1) == expected).sum())
        return loss / len(crops), correct / len(crops)

    def state(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.network.state_dict().items()}


def _random_box(rng: np.random.Generator, size: int, min_area: float) -> tuple[float, float, float, float]:
    """A box of `min_area`..1 of a size x size image, aspect ratio 3/4..4/3 (log-uniform), anywhere inside it."""
    area = rng.uniform(min_area, 1.0) * size * size
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    width = min(size, math.sqrt(area * ratio))
    height = min(size, math.sqrt(area / ratio))
    left, top = rng.uniform(0, size - width), rng.uniform(0, size - height)
    return left, top, left + width, top + height


def _progress(quiet: bool) -> Progress:
    """A bar per epoch, left behind as that epoch's record: throughput, then validation loss and accuracy (off a
    terminal, log lines: one per epoch and a heartbeat)."""
    return StageProgress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>14}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[val]}"),
        disable=quiet,
        logger=logging.getLogger(__name__),
    )
