"""Training time of the heads on frozen embeddings: view buckets, log10-views regression and channels, each on
10,000 training rows of synthetic 1280-d thumbnail embeddings (plus metadata for the multimodal popularity heads),
stopped early on 2,000 validation rows, as a linear probe (the default) and as a one-hidden-layer MLP.

Run with `python -m tests.bench.trainer`. Rows come from the synthetic snapshot of the trainer model tests (50 channels,
views driven by subscribers, age and one direction in embedding space), so the heads have something to find and stop
early as they would on real data. Seconds include early stopping's validation passes; the epochs column says how many
epochs that took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from tests.unit.test_trainer_models import synthetic_table
from tubelens.trainer.features import IMAGE, MULTIMODAL, bucket_labels, channel_labels, features, regression_target
from tubelens.trainer.heads import TrainConfig, train_classifier, train_regressor
from tubelens.trainer.schema import BUCKET_NAMES

TRAIN_ROWS = 10_000
VAL_ROWS = 2_000
CHANNELS = 50
ARCHITECTURES = {"linear": TrainConfig(), "mlp-256": TrainConfig(hidden=256, dropout=0.1)}


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
            started = time.perf_counter()
            head = train_head()
            seconds = time.perf_counter() - started
            classes = len(head.config.labels) or None
            rows.append(
                Row(name, architecture, head.config.feature_set, head.config.input_dim, classes,
                    head.config.outcome.epochs, seconds)
            )  # fmt: skip
    return rows


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
            str(row.epochs),
            f"{row.seconds:.2f}",
            f"{row.seconds / row.epochs * 1000:.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
