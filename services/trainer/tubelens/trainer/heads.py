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
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from tubelens.modelkit.features import Standardizer
from tubelens.modelkit.schema import BUCKET_EDGES, BUCKET_NAMES
from tubelens.modelkit.ts_handler import CONFIG_FILE, STATE_FILE, build_network
from tubelens.progress import StageProgress
from tubelens.trainer.metrics import encode

CLASSIFIER = "classifier"
REGRESSOR = "regressor"


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
    # Ridge regressors: the penalty chosen on the validation rows, and the spread of the validation residuals in
    # target units, which turns a point prediction into a distribution (an interval, bucket probabilities).
    ridge_lambda: float = 0.0
    residual_sigma: float = 0.0
    # log10-view regressors: the bucket thresholds in target units, lowest first (see `bucket_thresholds`), and the
    # names of the buckets they bound (one more than thresholds), so a server needs nothing else to answer buckets.
    bucket_thresholds: list[float] = field(default_factory=list)
    bucket_names: list[str] = field(default_factory=list)
    # Raw feature columns held to the range they had in training before standardization, as {"column", "name",
    # "low", "high"}: a linear model extrapolates a slope past its data, and a catalogue crawled once tests young
    # videos against old training ones (log age: mean residual -0.48 on the newest real videos, unclamped).
    clamp: list[dict[str, Any]] = field(default_factory=list)
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
        raw = clamp_columns(np.asarray(matrix, dtype=np.float32), self.config.clamp)
        inputs = torch.from_numpy(self.config.standardizer.transform(raw))
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

    @property
    def sigma(self) -> float:
        if self.config.residual_sigma <= 0:
            raise ValueError("this regressor has no residual spread: it was not fitted by `train_ridge`")
        return self.config.residual_sigma

    def interval(self, matrix: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """Low and high ends of the central interval (95 % for z = 1.96), in target units."""
        predicted = self.predict(matrix)
        return predicted - z * self.sigma, predicted + z * self.sigma

    def bucket_probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """[n, 7] probabilities of each view bucket under a normal distribution of log10 views around the
        prediction; columns in `BUCKET_NAMES` order. The buckets are intervals of one number, so reading them off the
        regression keeps their order and lets a near miss cost less than a far one, which a softmax over seven
        unordered classes does not know."""
        return bucket_probabilities(self.predict(matrix), self.sigma, self.config.bucket_thresholds)

    def predict_bucket(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(BUCKET_NAMES, dtype=object)[self.bucket_probabilities(matrix).argmax(axis=1)]


def clamp_columns(matrix: np.ndarray, clamp: list[dict[str, Any]]) -> np.ndarray:
    """`matrix` with each clamped column held to its training range (a copy when anything is clamped)."""
    if not clamp:
        return matrix
    matrix = matrix.copy()
    for rule in clamp:
        column = rule["column"]
        matrix[:, column] = np.clip(matrix[:, column], np.float32(rule["low"]), np.float32(rule["high"]))
    return matrix


def clamp_rules(x_train: np.ndarray, columns: dict[str, int]) -> list[dict[str, Any]]:
    """The training range of each named column: what `clamp_columns` holds serving rows to."""
    return [
        {"column": index, "name": name, "low": float(x_train[:, index].min()), "high": float(x_train[:, index].max())}
        for name, index in columns.items()
        if len(x_train)
    ]


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
    shared_scale_spans: tuple[tuple[int, int], ...] = (),
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
        # Embedding blocks scaled as a whole (unit variance per dimension on average), not per dimension: on the
        # demo's 24 channels that took the channel probe from 0.79-0.85 to 0.89-0.91 held-out accuracy.
        standardizer=Standardizer.fit(x_train[known_train], shared_scale_spans=shared_scale_spans, per_dimension=True),
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


@dataclass(frozen=True)
class RidgeConfig:
    # Penalties tried, on the standardized features and target; the one with the lowest validation error is kept.
    lambdas: tuple[float, ...] = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    seed: int = 0  # ridge is exact and needs no randomness; kept so every head records the seed of its run


def bucket_thresholds(target: str) -> list[float]:
    """The view-bucket lower bounds in the units of `target`, or [] when buckets cannot be read off it.

    A video is in bucket k when its views reach `BUCKET_EDGES[k - 1]`, and the target is log10(views + 1)."""
    if target != "log10_views":
        return []
    return [math.log10(edge + 1) for edge in BUCKET_EDGES]


def bucket_probabilities(mean: np.ndarray, sigma: float, thresholds: list[float]) -> np.ndarray:
    """P(bucket) under Normal(mean, sigma) for each row; torch's ndtr, so the TorchServe handler (which computes
    the same with the same function) agrees bit for bit."""
    if not thresholds:
        raise ValueError("bucket probabilities need a log10-views regressor")
    z = (torch.tensor(thresholds, dtype=torch.float64)[None, :] - torch.from_numpy(np.asarray(mean))[:, None]) / sigma
    below = torch.special.ndtr(z)
    cumulative = torch.cat(
        [torch.zeros(len(mean), 1, dtype=torch.float64), below, torch.ones(len(mean), 1, dtype=torch.float64)], dim=1
    )
    return torch.diff(cumulative, dim=1).clamp_min(0.0).numpy()


def train_ridge(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    target: str,
    feature_set: str,
    shared_scale_spans: tuple[tuple[int, int], ...] = (),
    config: RidgeConfig = RidgeConfig(),  # noqa: B008 - frozen, so one shared default is safe
    quiet: bool = False,
    description: str = "",
    clamp: dict[str, int] | None = None,
) -> Regressor:
    """A linear regressor fitted in closed form with an L2 penalty chosen on the validation rows.

    A few hundred or thousand labelled videos against 1,700 embedding dimensions is the regime where a linear model
    overfits unless it is shrunk, and where gradient descent with early stopping shrinks by accident. Ridge makes the
    shrinkage the one explicit, validated choice, and is exact and fast (one SVD for every penalty). Embedding
    blocks (`shared_scale_spans`) are scaled as a whole, not per dimension: dividing each of 1,280 dimensions by its
    own, often tiny, spread would blow up noise directions, and an unseen channel's thumbnails then land far off.

    The validation residuals' spread becomes `residual_sigma`, so the prediction comes with an interval and, for log10
    views, with bucket probabilities. `clamp` names columns (name -> index) held to their training range, in
    training, validation and serving alike (`clamp_columns`).
    """
    if len(x_val) == 0:
        raise ValueError("choosing the penalty needs validation rows; none were given")
    started = time.perf_counter()
    rules = clamp_rules(x_train, clamp or {})
    x_val = clamp_columns(np.asarray(x_val, dtype=np.float32), rules)
    y_train = np.asarray(y_train, dtype=np.float64)
    spread = float(y_train.std())
    head_config = HeadConfig(
        kind=REGRESSOR,
        feature_set=feature_set,
        input_dim=x_train.shape[1],
        output_dim=1,
        standardizer=Standardizer.fit(x_train, shared_scale_spans=shared_scale_spans),
        train=TrainConfig(hidden=0, seed=config.seed),
        target=target,
        target_mean=float(y_train.mean()),
        target_scale=spread if spread > 1e-8 else 1.0,
        bucket_thresholds=bucket_thresholds(target),
        bucket_names=list(BUCKET_NAMES) if bucket_thresholds(target) else [],
        clamp=rules,
    )
    x = head_config.standardizer.transform(x_train).astype(np.float64)
    x_held = head_config.standardizer.transform(x_val).astype(np.float64)
    y = (y_train - head_config.target_mean) / head_config.target_scale
    y_held = (np.asarray(y_val, dtype=np.float64) - head_config.target_mean) / head_config.target_scale
    with _progress(quiet) as progress:
        task = progress.add_task(description or f"{feature_set} ridge", total=len(config.lambdas))
        weights, penalty, val_loss = _ridge_path(x, y, x_held, y_held, config.lambdas, progress, task)
    module = build_module(head_config)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weights[None, :].astype(np.float32)))
        module.bias.zero_()  # features and target are centred on the training rows
    head_config.ridge_lambda = penalty
    regressor = Regressor(head_config, module)
    head_config.residual_sigma = float(np.std(regressor.predict(x_val) - np.asarray(y_val, dtype=np.float64)))
    # Closed form: no epochs (0), the penalty's validation loss as the best.
    head_config.outcome = TrainOutcome(0, 0, val_loss, time.perf_counter() - started)
    return regressor


def _ridge_path(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    lambdas: tuple[float, ...],
    progress: Progress,
    task: Any,
) -> tuple[np.ndarray, float, float]:
    """The weights, penalty and validation MSE of the best of `lambdas`, from one thin SVD of the training rows."""
    u, singular, vt = np.linalg.svd(x, full_matrices=False)
    projected = u.T @ y
    best: tuple[float, float, np.ndarray] | None = None
    for penalty in lambdas:
        weights = vt.T @ (singular / (singular**2 + penalty) * projected)
        val_loss = float(np.mean((x_val @ weights - y_val) ** 2))
        if best is None or val_loss < best[0]:
            best = (val_loss, penalty, weights)
        progress.update(task, advance=1, description=f"ridge λ={penalty:g}  val loss {val_loss:.4f}")
    assert best is not None
    return best[2], best[1], best[0]


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
        epochs, best_epoch, best_loss = train_with_early_stopping(
            module,
            lambda: _one_epoch(module, optimizer, loss_fn, x_train, y_train, config.batch_size, order),
            lambda: _loss(module, loss_fn, x_val, y_val),
            config,
            description=description,
            quiet=quiet,
        )
    return module.eval(), TrainOutcome(epochs, best_epoch, best_loss, time.perf_counter() - started)


def train_with_early_stopping(
    module: nn.Module,
    run_epoch: Callable[[], None],
    val_loss: Callable[[], float],
    config: Any,
    *,
    description: str,
    quiet: bool,
) -> tuple[int, int, float]:
    """Epochs until the validation loss has not improved by `config.min_improvement` for `config.patience` epochs
    (at most `config.max_epochs`); leaves `module` at its best epoch's weights and returns (epochs run, best epoch,
    best validation loss). One loop for every network the trainer fits, with a progress bar that stays behind as the
    model's one-line training record."""
    best_state, best_loss, best_epoch, epoch = copy.deepcopy(module.state_dict()), math.inf, 0, 0
    with _progress(quiet) as progress:
        task = progress.add_task(description, total=config.max_epochs)
        for epoch in range(1, config.max_epochs + 1):
            run_epoch()
            loss = val_loss()
            progress.update(task, advance=1, description=f"{description}  val loss {loss:.4f}")
            if loss < best_loss - config.min_improvement:
                best_state, best_loss, best_epoch = copy.deepcopy(module.state_dict()), loss, epoch
            elif epoch - best_epoch >= config.patience:
                break
        summary = f"{description}  best epoch {best_epoch}, val loss {best_loss:.4f}"
        progress.update(task, total=epoch, completed=epoch, description=summary)
    module.load_state_dict(best_state)
    return epoch, best_epoch, best_loss


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
    # Off a terminal (a pod, a pipe), one log line per stage and a heartbeat instead of an invisible bar.
    return StageProgress(
        TextColumn("{task.description:<56}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet,
        logger=logging.getLogger(__name__),
    )
