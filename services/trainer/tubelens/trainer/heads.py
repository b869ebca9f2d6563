"""Small torch heads on frozen features: a softmax classifier and a regressor, each a linear probe or a one-hidden-layer
MLP, trained with AdamW (weight decay) and early stopping on the validation rows.

Training is deterministic for a seed: weights are initialized and batches shuffled from generators seeded by the
config, inside a forked RNG so the caller's global torch state is left as it was. Features are standardized with
statistics of the training rows; the regressor also learns a standardized target, so one learning rate suits log10
views and views per subscriber alike.

A trained head saves as `head.pt` (the module's state dict) beside `head.json` (architecture, label map, feature
standardization, target scaling, training config and outcome): everything an inference handler needs to rebuild the
module and turn raw feature rows into answers, with no Python pickles.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from tubelens.trainer.features import Standardizer
from tubelens.trainer.metrics import encode
from tubelens.trainer.ts_handler import build_network

CLASSIFIER = "classifier"
REGRESSOR = "regressor"
STATE_FILE = "head.pt"
CONFIG_FILE = "head.json"


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 0  # 0: a linear probe; otherwise the width of one hidden ReLU layer
    dropout: float = 0.0
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 500
    patience: int = 10  # epochs without a better validation loss before stopping
    min_improvement: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class TrainOutcome:
    epochs: int
    best_epoch: int
    best_val_loss: float
    seconds: float


@dataclass
class HeadConfig:
    kind: str  # CLASSIFIER or REGRESSOR
    feature_set: str
    input_dim: int
    output_dim: int
    standardizer: Standardizer
    train: TrainConfig
    labels: list[str] = field(default_factory=list)  # classifier: the label of each output unit
    target: str = ""  # regressor: what it predicts
    target_mean: float = 0.0  # regressor: outputs are (target - target_mean) / target_scale
    target_scale: float = 1.0
    outcome: TrainOutcome | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["standardizer"] = self.standardizer.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        data = dict(data)
        data["standardizer"] = Standardizer.from_dict(data["standardizer"])
        data["train"] = TrainConfig(**data["train"])
        data["outcome"] = TrainOutcome(**data["outcome"]) if data.get("outcome") else None
        return cls(**data)


def build_module(config: HeadConfig) -> nn.Module:
    """The head's network, as described by its config: built by the TorchServe handler's own function, so the
    served network can never drift from the trained one."""
    return build_network(config.to_dict())


class Head:
    """A trained head: raw feature rows in (standardized here), outputs out."""

    def __init__(self, config: HeadConfig, module: nn.Module) -> None:
        self.config = config
        self.module = module.eval()

    def outputs(self, matrix: np.ndarray) -> np.ndarray:
        """The module's raw outputs (logits, or the standardized target) for raw feature rows."""
        inputs = torch.from_numpy(self.config.standardizer.transform(np.asarray(matrix, dtype=np.float32)))
        with torch.no_grad():
            return self.module(inputs).numpy()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), directory / STATE_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=1))


class Classifier(Head):
    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Class probabilities, columns in `labels` order."""
        return torch.softmax(torch.from_numpy(self.outputs(matrix)), dim=1).numpy()

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[self.outputs(matrix).argmax(axis=1)]


class Regressor(Head):
    def predict(self, matrix: np.ndarray) -> np.ndarray:
        standardized = self.outputs(matrix)[:, 0].astype(np.float64)
        return standardized * self.config.target_scale + self.config.target_mean


def load_head(directory: Path) -> Classifier | Regressor:
    config = HeadConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    module = build_module(config)
    module.load_state_dict(torch.load(directory / STATE_FILE, weights_only=True))
    return (Classifier if config.kind == CLASSIFIER else Regressor)(config, module)


def train_classifier(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    labels: list[str],
    feature_set: str,
    config: TrainConfig = TrainConfig(),  # noqa: B008 - frozen, so one shared default is safe
    quiet: bool = False,
    description: str = "",
) -> Classifier:
    """A softmax head over `labels`. Rows whose label is not among them (a channel seen only in validation) cannot
    be scored by cross-entropy and are left out of training and of the stopping criterion."""
    train_targets, val_targets = encode(y_train, labels), encode(y_val, labels)
    known_train, known_val = train_targets >= 0, val_targets >= 0
    head_config = HeadConfig(
        kind=CLASSIFIER,
        feature_set=feature_set,
        input_dim=x_train.shape[1],
        output_dim=len(labels),
        standardizer=Standardizer.fit(x_train[known_train]),
        train=config,
        labels=[str(label) for label in labels],
    )
    module, outcome = _train(
        head_config,
        (x_train[known_train], torch.from_numpy(train_targets[known_train])),
        (x_val[known_val], torch.from_numpy(val_targets[known_val])),
        nn.CrossEntropyLoss(),
        description=description or f"{feature_set} classifier",
        quiet=quiet,
    )
    head_config.outcome = outcome
    return Classifier(head_config, module)


def train_regressor(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    target: str,
    feature_set: str,
    config: TrainConfig = TrainConfig(),  # noqa: B008 - frozen, so one shared default is safe
    quiet: bool = False,
    description: str = "",
) -> Regressor:
    """A regressor of one continuous target (log10 views, log10 views per subscriber) under squared error."""
    y_train = np.asarray(y_train, dtype=np.float64)
    spread = float(y_train.std())
    head_config = HeadConfig(
        kind=REGRESSOR,
        feature_set=feature_set,
        input_dim=x_train.shape[1],
        output_dim=1,
        standardizer=Standardizer.fit(x_train),
        train=config,
        target=target,
        target_mean=float(y_train.mean()),
        target_scale=spread if spread > 1e-8 else 1.0,
    )

    def scaled(y: np.ndarray) -> torch.Tensor:
        standardized = (np.asarray(y, dtype=np.float64) - head_config.target_mean) / head_config.target_scale
        return torch.from_numpy(standardized.astype(np.float32)).unsqueeze(1)

    module, outcome = _train(
        head_config,
        (x_train, scaled(y_train)),
        (x_val, scaled(y_val)),
        nn.MSELoss(),
        description=description or f"{feature_set} regressor",
        quiet=quiet,
    )
    head_config.outcome = outcome
    return Regressor(head_config, module)


def _train(
    head_config: HeadConfig,
    train: tuple[np.ndarray, torch.Tensor],
    val: tuple[np.ndarray, torch.Tensor],
    loss_fn: nn.Module,
    *,
    description: str,
    quiet: bool,
) -> tuple[nn.Module, TrainOutcome]:
    """Mini-batch AdamW; keeps the weights of the epoch with the lowest validation loss."""
    if len(val[0]) == 0:
        raise ValueError("early stopping needs validation rows with known labels; none were given")
    config = head_config.train
    started = time.perf_counter()
    x_train = torch.from_numpy(head_config.standardizer.transform(train[0]))
    x_val = torch.from_numpy(head_config.standardizer.transform(val[0]))
    y_train, y_val = train[1], val[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = build_module(head_config)
        optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        order = torch.Generator().manual_seed(config.seed)
        best_state, best_loss, best_epoch, epoch = copy.deepcopy(module.state_dict()), math.inf, 0, 0
        with _progress(quiet) as progress:
            task = progress.add_task(description, total=config.max_epochs)
            for epoch in range(1, config.max_epochs + 1):
                _one_epoch(module, optimizer, loss_fn, x_train, y_train, config.batch_size, order)
                val_loss = _loss(module, loss_fn, x_val, y_val)
                progress.update(task, advance=1, description=f"{description}  val loss {val_loss:.4f}")
                if val_loss < best_loss - config.min_improvement:
                    best_state, best_loss, best_epoch = copy.deepcopy(module.state_dict()), val_loss, epoch
                elif epoch - best_epoch >= config.patience:
                    break
            # The bar stays behind as the head's one-line training record.
            summary = f"{description}  best epoch {best_epoch}, val loss {best_loss:.4f}"
            progress.update(task, total=epoch, completed=epoch, description=summary)
    module.load_state_dict(best_state)
    return module.eval(), TrainOutcome(epoch, best_epoch, best_loss, time.perf_counter() - started)


def _one_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    order: torch.Generator,
) -> None:
    module.train()
    for batch in torch.randperm(len(x), generator=order).split(batch_size):
        optimizer.zero_grad()
        loss_fn(module(x[batch]), y[batch]).backward()
        optimizer.step()


def _loss(module: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        return float(loss_fn(module(x), y))


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<56}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet,
    )
