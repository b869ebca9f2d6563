"""Training time of the heads on frozen embeddings: view buckets, log10-views regression and channels, each on
10,000 training rows of synthetic 1280-d thumbnail embeddings (plus metadata for the multimodal popularity heads),
stopped early on 2,000 validation rows, as a linear probe and as a one-hidden-layer MLP; and the ridge regressor the
trainer registers as the popularity model (closed form, penalty chosen on the same validation rows).

Run with `python -m tests.bench.trainer`. Rows come from the synthetic snapshot of the trainer model tests (50 channels,
views driven by subscribers, age and one direction in embedding space), so the heads have something to find and stop
early as they would on real data. Seconds include early stopping's validation passes; the epochs column says how many
epochs that took.

Then fine-tuning: one epoch of EfficientNet-Lite0 end to end (the default config: head conv and the last two MBConv
stages unfrozen, batch 32, augmentation on) over 256 of the stand-in's rendered 320x180 thumbnails (8 channels), on
the CPU, at one torch thread and at torch's default. The epoch's seconds and images/s count the training pass alone
(forward, backward, augmentation); the run's seconds add decoding every image once and one validation pass over 32
more. A one-batch run first takes torch's one-time start-up costs out of every row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from tests.unit.test_trainer_models import synthetic_table
from tubelens.devtools.fakeyoutube import Catalogue
from tubelens.devtools.fakeyoutube.thumbnails import BY_FILE, thumbnail_jpeg
from tubelens.modelkit.features import IMAGE, MULTIMODAL, bucket_labels, channel_labels, features, regression_target
from tubelens.modelkit.schema import BUCKET_NAMES
from tubelens.trainer.finetune import FineTuneConfig, fine_tune
from tubelens.trainer.heads import TrainConfig, train_classifier, train_regressor, train_ridge

TRAIN_ROWS = 10_000
VAL_ROWS = 2_000
CHANNELS = 50
ARCHITECTURES = {"linear": TrainConfig(), "mlp-256": TrainConfig(hidden=256, dropout=0.1)}
FINETUNE_THUMBNAILS = 256
FINETUNE_VAL = 32
FINETUNE_CHANNELS = 8


@dataclass
class Row:
    head: str
    architecture: str
    features: str
    dim: int
    classes: int | None
    epochs: int
    seconds: float


def bench_heads() -> list[Row]:
    table = synthetic_table(channels=CHANNELS, per_channel=(TRAIN_ROWS + VAL_ROWS) // CHANNELS, seed=0)
    order = np.random.default_rng(0).permutation(len(table))
    train, val = order[:TRAIN_ROWS], order[TRAIN_ROWS : TRAIN_ROWS + VAL_ROWS]
    multimodal, image = features(table, MULTIMODAL).matrix, features(table, IMAGE).matrix
    buckets, views, channels = bucket_labels(table), regression_target(table), channel_labels(table)
    channel_names = sorted(set(channels[train]))
    # One epoch first, so torch's one-time start-up costs land in no row.
    train_regressor(
        multimodal[train], views[train], multimodal[val], views[val],
        target="log10_views", feature_set=MULTIMODAL, config=TrainConfig(max_epochs=1), quiet=True,
    )  # fmt: skip
    rows = []
    for architecture, config in ARCHITECTURES.items():
        jobs = {
            "buckets": lambda config=config: train_classifier(
                multimodal[train], buckets[train], multimodal[val], buckets[val],
                labels=list(BUCKET_NAMES), feature_set=MULTIMODAL, config=config, quiet=True,
            ),
            "log10 views": lambda config=config: train_regressor(
                multimodal[train], views[train], multimodal[val], views[val],
                target="log10_views", feature_set=MULTIMODAL, config=config, quiet=True,
            ),
            "channels": lambda config=config: train_classifier(
                image[train], channels[train], image[val], channels[val],
                labels=channel_names, feature_set=IMAGE, config=config, quiet=True,
            ),
        }  # fmt: skip
        for name, train_head in jobs.items():
            rows.append(_timed_row(name, architecture, train_head))
    spans = features(table, MULTIMODAL).embedding_spans
    # The registered popularity model: one SVD, then every penalty of the grid is cheap.
    rows.append(
        _timed_row(
            "popularity",
            "ridge",
            lambda: train_ridge(
                multimodal[train], views[train], multimodal[val], views[val],
                target="log10_views", feature_set=MULTIMODAL, shared_scale_spans=spans, quiet=True,
            ),
        )
    )  # fmt: skip
    return rows


def _timed_row(name: str, architecture: str, train_head) -> Row:
    started = time.perf_counter()
    head = train_head()
    seconds = time.perf_counter() - started
    classes = len(head.config.labels) or None
    config = head.config
    return Row(name, architecture, config.feature_set, config.input_dim, classes, config.outcome.epochs, seconds)


@dataclass
class FineTuneRow:
    threads: int
    trainable_blocks: int
    batch_size: int
    epoch_seconds: float  # the training pass alone
    images_per_second: float
    run_seconds: float  # decoding, the epoch and validation


def stand_in_thumbnails(count: int, channels: int) -> tuple[list[bytes], list[str]]:
    """`count` rendered 320x180 thumbnails (the size the preprocessor fetches) and their channels, channels mixed."""
    catalogue = Catalogue.generate(0, channels, -(-count // channels), now=datetime(2025, 6, 2, tzinfo=UTC))
    videos = sorted(catalogue.videos, key=lambda v: v.id)[:count]
    images = [thumbnail_jpeg(catalogue.channel(v.channel_id), v, BY_FILE["mqdefault.jpg"]) for v in videos]
    return images, [v.channel_id for v in videos]


def bench_finetune() -> list[FineTuneRow]:
    images, channels = stand_in_thumbnails(FINETUNE_THUMBNAILS + FINETUNE_VAL, FINETUNE_CHANNELS)
    train, val = slice(0, FINETUNE_THUMBNAILS), slice(FINETUNE_THUMBNAILS, None)
    labels = sorted(set(channels))
    config = FineTuneConfig(epochs=1, device="cpu")
    default_threads = torch.get_num_threads()
    rows = []
    try:
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            warm_up = FineTuneConfig(epochs=1, batch_size=4, device="cpu")
            fine_tune(images[:4], channels[:4], images[val][:4], channels[val][:4], labels=labels, config=warm_up,
                      quiet=True)  # fmt: skip
            tuned = fine_tune(
                images[train], channels[train], images[val], channels[val], labels=labels, config=config, quiet=True
            )
            outcome = tuned.outcome
            rows.append(
                FineTuneRow(threads, config.trainable_blocks, config.batch_size,
                            outcome.train_images / outcome.images_per_second, outcome.images_per_second,
                            outcome.seconds)
            )  # fmt: skip
    finally:
        torch.set_num_threads(default_threads)
    return rows


def print_finetune(console: Console, rows: list[FineTuneRow]) -> None:
    table = Table(title=f"Fine-tuning EfficientNet-Lite0 on the CPU: one epoch over {FINETUNE_THUMBNAILS} thumbnails")
    for header in ("threads", "trainable blocks", "batch", "s/epoch", "images/s", "run s"):
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(
            str(row.threads),
            str(row.trainable_blocks),
            str(row.batch_size),
            f"{row.epoch_seconds:.1f}",
            f"{row.images_per_second:.1f}",
            f"{row.run_seconds:.1f}",
        )
    console.print(table)


def main() -> None:
    console = Console()
    rows = bench_heads()
    dims = ", ".join(sorted({f"{row.features} {row.dim}-d" for row in rows}))
    table = Table(
        title=f"Heads: {TRAIN_ROWS:,} train / {VAL_ROWS:,} val rows ({dims}), {torch.get_num_threads()} torch threads"
    )
    for header in ("head", "arch", "features", "classes", "epochs", "seconds", "ms/epoch"):
        table.add_column(header, justify="left" if header in ("head", "arch", "features") else "right")
    for row in rows:
        table.add_row(
            row.head,
            row.architecture,
            row.features,
            str(row.classes or "—"),
            str(row.epochs) if row.epochs else "—",  # ridge: closed form
            f"{row.seconds:.2f}",
            f"{row.seconds / row.epochs * 1000:.0f}" if row.epochs else "—",
        )
    console.print(table)
    print_finetune(console, bench_finetune())


if __name__ == "__main__":
    main()
