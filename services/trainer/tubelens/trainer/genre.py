"""Genre (the YouTube category) from what a video shows and how it sounds: seed 003's two streams.

Inputs per video, read from the object store by the keys in its snapshot row:
- frames: float32 [n, 1280], the L2-normalized embeddings of its sampled frames (title and end slates dropped);
- audio: float32 [seconds, bands], per-second log-mel features (`tubelens.preprocessor.audio`).
Only videos with both take part. Each sequence is cut to at most `max_steps` steps by uniform sampling as it is
loaded (and the same way when served), so memory grows with the number of videos, never with their length.

The network is `ts_handler.GenreNetwork`, so training and serving build one definition: per stream a projection
and an LSTM over the valid steps (packed, so padding never reaches the recurrence and a one-step video is fine),
the two final states concatenated into a small MLP with a softmax over the genres. Audio steps are standardized
with statistics of the training videos' seconds (log-mel bands differ in level and spread), which travel in
`head.json`. Frame embeddings are fed as they are: they are unit vectors already, and standardizing their 1280
columns on a few hundred training frames blows up faint channel-specific directions (on four held-out-channel splits
of a 32-channel stand-in catalogue, two-stream accuracy fell from 0.64 to 0.48 on average).

Training silences one stream for half the training videos (`stream_dropout`): each stream must then name the genre
on its own, so the stream that is quicker to fit the training channels (frames, by remembering their look) cannot
carry the whole model.

Ablations, for honesty: the same network with only the frame stream or only the audio stream (`VARIANTS`). In the
stand-in catalogue the sound follows the category while the pictures follow the channel's look, so on held-out
channels audio carries over and frames mostly do not; reports show all three beside the majority class.

Training follows `heads._train`: AdamW, early stopping on the validation loss, seeded and deterministic inside a
forked RNG. A trained model saves as a head does, `head.pt` (state dict) + `head.json` (kind "genre"), so
`registry.package_head` packages it unchanged and TorchServe runs it with `ts_handler.py`.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from tubelens.errors import InvalidInput, NotFound
from tubelens.modelkit.features import Standardizer
from tubelens.modelkit.schema import EMBEDDING_DIM
from tubelens.modelkit.ts_handler import (
    AUDIO,
    CONFIG_FILE,
    FRAMES,
    GENRE,
    STATE_FILE,
    STREAMS,
    build_network,
    pad_sequences,
    sample_steps,
)
from tubelens.objects import ObjectStore
from tubelens.trainer.heads import TrainOutcome, train_with_early_stopping
from tubelens.trainer.metrics import encode

FRAME_DIM = EMBEDDING_DIM
# 64 steps is a minute of frames at the preprocessor's 1 fps, and bounds a padded batch at batch x 64 x 1280 floats.
MAX_STEPS = 64
TWO_STREAM = "two_stream"
FRAMES_ONLY = "frames_only"
AUDIO_ONLY = "audio_only"
# The two-stream model first; the one-stream ablations are reported beside it, never instead of it.
VARIANTS: dict[str, tuple[str, ...]] = {TWO_STREAM: (FRAMES, AUDIO), FRAMES_ONLY: (FRAMES,), AUDIO_ONLY: (AUDIO,)}
KEY_COLUMNS = {FRAMES: "frames_vectors_key", AUDIO: "audio_features_key"}
FETCH_THREADS = 8
PREDICT_BATCH = 64
GAP_K = 20  # YouTube-8M's GAP@20; with fewer genres than 20, every genre of every video is ranked

Batch = dict[str, tuple[torch.Tensor, torch.Tensor]]


# --- inputs --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenreInputs:
    """The frame and audio sequences of the videos that have both, each at most `max_steps` long, and the table
    row each video came from (positions in the snapshot table, ascending)."""

    frames: list[np.ndarray]  # float32 [steps, 1280] each
    audio: list[np.ndarray]  # float32 [steps, bands] each
    rows: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.rows)

    def stream(self, name: str) -> list[np.ndarray]:
        return self.frames if name == FRAMES else self.audio

    @property
    def bands(self) -> int:
        return int(self.audio[0].shape[1]) if self.audio else 0

    def select(self, positions: Sequence[int] | np.ndarray) -> GenreInputs:
        """The videos at `positions` (indices into these inputs, not table rows)."""
        positions = np.asarray(positions, dtype=np.int64)
        return GenreInputs(
            [self.frames[i] for i in positions], [self.audio[i] for i in positions], self.rows[positions]
        )

    def within(self, row_mask: np.ndarray) -> GenreInputs:
        """The videos whose table row `row_mask` selects (a boolean mask over the table, such as a split's part)."""
        return self.select(np.flatnonzero(np.asarray(row_mask, dtype=bool)[self.rows]))


def genre_labels(table: pa.Table) -> np.ndarray:
    """Each row's genre, the YouTube category id, as an object array."""
    return np.asarray(table.column("genre").to_pylist(), dtype=object)


def load_genre_inputs(store: ObjectStore, table: pa.Table, *, max_steps: int = MAX_STEPS) -> GenreInputs:
    """The sequences of every row with both a frames and an audio key, fetched in parallel and capped at once.

    NotFound names an object that is missing; InvalidInput one that is not a finite float [steps, width] array, or
    whose band count differs from the others'. A stored sequence with no steps (a silent file) gives nothing to
    learn from, and its video is left out as one without media is.
    """
    keys = {stream: _keys(table, column) for stream, column in KEY_COLUMNS.items()}
    candidates = [row for row in range(table.num_rows) if keys[FRAMES][row] and keys[AUDIO][row]]

    def load(row: int) -> tuple[np.ndarray, np.ndarray]:
        frames = _sequence(store, keys[FRAMES][row], KEY_COLUMNS[FRAMES], max_steps, width=FRAME_DIM)
        audio = _sequence(store, keys[AUDIO][row], KEY_COLUMNS[AUDIO], max_steps, width=None)
        return frames, audio

    with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="genre-fetch") as pool:
        loaded = list(pool.map(load, candidates))
    kept = [(row, *pair) for row, pair in zip(candidates, loaded, strict=True) if len(pair[0]) and len(pair[1])]
    bands = {audio.shape[1] for _, _, audio in kept}
    if len(bands) > 1:
        raise InvalidInput(f"audio features disagree on their band count: {sorted(bands)}", field=KEY_COLUMNS[AUDIO])
    return GenreInputs(
        [frames for _, frames, _ in kept],
        [audio for _, _, audio in kept],
        np.array([row for row, _, _ in kept], dtype=np.int64),
    )


def _keys(table: pa.Table, column: str) -> list[str]:
    return [key or "" for key in table.column(column).to_pylist()]


def _sequence(store: ObjectStore, key: str, column: str, max_steps: int, *, width: int | None) -> np.ndarray:
    """One stored float [steps, width] array, uniformly sampled down to `max_steps` steps, as float32."""
    try:
        data = store.get(key)
    except NotFound:
        raise NotFound(f"{column} {key!r} is not in the object store", field=column) from None
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"{column} {key!r} is not a .npy array: {exc}", field=column) from None
    wrong_width = width is not None and array.ndim == 2 and array.shape[1] != width
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or wrong_width or array.shape[1] == 0:
        expected = f"[steps, {width}]" if width is not None else "[steps, bands]"
        raise InvalidInput(
            f"{column} {key!r} holds {array.dtype} {list(array.shape)}; expected float {expected}", field=column
        )
    capped = np.ascontiguousarray(array[sample_steps(len(array), max_steps).numpy()], dtype=np.float32)
    if not np.isfinite(capped).all():
        raise InvalidInput(f"{column} {key!r} holds values that are not finite numbers", field=column)
    return capped


# --- the model -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenreTrainConfig:
    hidden: int = 64  # each stream's projection and LSTM width
    fusion_hidden: int = 64  # the hidden layer of the MLP over the concatenated streams
    dropout: float = 0.2
    stream_dropout: float = 0.5  # share of training videos with one stream silenced (two-stream models only)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    max_epochs: int = 200
    patience: int = 15  # epochs without a better validation loss before stopping
    min_improvement: float = 1e-4
    max_steps: int = MAX_STEPS
    seed: int = 0


@dataclass(frozen=True)
class GenreArchitecture:
    """The sizes `ts_handler.GenreNetwork` is built from."""

    streams: tuple[str, ...]
    frame_dim: int
    audio_bands: int
    hidden: int
    fusion_hidden: int
    dropout: float
    stream_dropout: float
    max_steps: int
    output_dim: int


@dataclass
class GenreHeadConfig:
    """Everything `head.json` says: enough to rebuild the network and feed it raw sequences, with no pickles."""

    architecture: GenreArchitecture
    labels: list[str]
    audio_standardizer: Standardizer | None  # fitted on the training videos' seconds; None without an audio stream
    train: GenreTrainConfig
    outcome: TrainOutcome | None = None
    kind: str = field(default=GENRE, init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "architecture": asdict(self.architecture),
            "labels": list(self.labels),
            "audio_standardizer": self.audio_standardizer.to_dict() if self.audio_standardizer else None,
            "train": asdict(self.train),
            "outcome": asdict(self.outcome) if self.outcome else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenreHeadConfig:
        if data.get("kind") != GENRE:
            raise InvalidInput(f"not a genre model: head.json kind {data.get('kind')!r}", field="kind")
        architecture = {**data["architecture"], "streams": tuple(data["architecture"]["streams"])}
        return cls(
            architecture=GenreArchitecture(**architecture),
            labels=list(data["labels"]),
            audio_standardizer=Standardizer.from_dict(audio) if (audio := data.get("audio_standardizer")) else None,
            train=GenreTrainConfig(**data["train"]),
            outcome=TrainOutcome(**data["outcome"]) if data.get("outcome") else None,
        )


def build_genre_module(config: GenreHeadConfig) -> nn.Module:
    """The genre network, built by the TorchServe handler's own function so the served one cannot drift."""
    return build_network(config.to_dict())


class GenreModel:
    """A trained genre network: raw (uncapped, unstandardized) sequences in, genre probabilities out."""

    def __init__(self, config: GenreHeadConfig, network: nn.Module) -> None:
        self.config = config
        self.network = network.eval()

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    @property
    def streams(self) -> tuple[str, ...]:
        return self.config.architecture.streams

    def logits(self, inputs: GenreInputs) -> np.ndarray:
        tensors = _tensors(inputs, self.streams, self.config.architecture.max_steps)
        outputs = [np.zeros((0, len(self.labels)), dtype=np.float32)]
        with torch.no_grad(), _one_thread():
            for start in range(0, len(inputs), PREDICT_BATCH):
                positions = range(start, min(start + PREDICT_BATCH, len(inputs)))
                outputs.append(self.network(_batch(tensors, positions)).numpy())
        return np.concatenate(outputs)

    def predict_proba(self, inputs: GenreInputs) -> np.ndarray:
        """Genre probabilities, columns in `labels` order."""
        return torch.softmax(torch.from_numpy(self.logits(inputs)), dim=1).numpy()

    def predict(self, inputs: GenreInputs) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[self.logits(inputs).argmax(axis=1)]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.network.state_dict(), directory / STATE_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=1))


def load_genre(directory: Path) -> GenreModel:
    config = GenreHeadConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    network = build_genre_module(config)
    network.load_state_dict(torch.load(directory / STATE_FILE, weights_only=True))
    return GenreModel(config, network)


# --- training ------------------------------------------------------------------------------------------------------


def train_genre(
    train: GenreInputs,
    y_train: np.ndarray,
    val: GenreInputs,
    y_val: np.ndarray,
    *,
    labels: list[str],
    streams: Sequence[str] = VARIANTS[TWO_STREAM],
    config: GenreTrainConfig = GenreTrainConfig(),  # noqa: B008 - frozen, so one shared default is safe
    quiet: bool = False,
    description: str = "",
) -> GenreModel:
    """A genre network over `labels` reading `streams` (both, or one for an ablation). Videos whose genre is not
    among `labels` cannot be scored by cross-entropy and are left out of training and of the stopping criterion."""
    unknown = sorted(set(streams) - set(STREAMS))
    if unknown or not streams:
        raise ValueError(f"streams must be a non-empty subset of {STREAMS}; got {list(streams)}")
    train_targets, val_targets = encode(y_train, labels), encode(y_val, labels)
    known_train, known_val = np.flatnonzero(train_targets >= 0), np.flatnonzero(val_targets >= 0)
    if len(known_train) == 0:
        raise ValueError("genre training needs training videos whose genre is among the labels; none were given")
    if len(known_val) == 0:
        raise ValueError("early stopping needs validation rows with known labels; none were given")
    train, val = train.select(known_train), val.select(known_val)
    ordered = tuple(stream for stream in STREAMS if stream in streams)
    architecture = GenreArchitecture(
        streams=ordered,
        frame_dim=FRAME_DIM,
        audio_bands=train.bands,
        hidden=config.hidden,
        fusion_hidden=config.fusion_hidden,
        dropout=config.dropout,
        stream_dropout=config.stream_dropout,
        max_steps=config.max_steps,
        output_dim=len(labels),
    )
    audio_standardizer = _fit_steps(train.audio) if AUDIO in ordered else None
    head_config = GenreHeadConfig(architecture, [str(label) for label in labels], audio_standardizer, config)
    network, outcome = _fit(
        head_config,
        (_tensors(train, ordered, config.max_steps), torch.from_numpy(train_targets[known_train])),
        (_tensors(val, ordered, config.max_steps), torch.from_numpy(val_targets[known_val])),
        description=description or f"genre · {'+'.join(ordered)}",
        quiet=quiet,
    )
    head_config.outcome = outcome
    return GenreModel(head_config, network)


def _fit_steps(sequences: list[np.ndarray]) -> Standardizer:
    """Per-column mean and scale over every step of every sequence, in two passes of float64 sums, so that no
    concatenation of all the steps is ever held in memory."""
    steps = sum(len(sequence) for sequence in sequences)
    mean = sum(sequence.sum(axis=0, dtype=np.float64) for sequence in sequences) / steps
    variance = sum(((sequence - mean) ** 2).sum(axis=0) for sequence in sequences) / steps
    scale = np.sqrt(variance).astype(np.float32)
    # A column constant in training carries nothing to learn; scale 1 keeps it finite instead of dividing by 0.
    scale[scale < 1e-8] = 1.0
    return Standardizer(mean.astype(np.float32), scale)


Sequences = dict[str, list[torch.Tensor]]


def _tensors(inputs: GenreInputs, streams: Sequence[str], max_steps: int) -> Sequences:
    """Each stream's sequences as tensors, sampled down to `max_steps` as the handler samples them."""
    return {stream: [_capped(steps, max_steps) for steps in inputs.stream(stream)] for stream in streams}


def _capped(steps: np.ndarray, max_steps: int) -> torch.Tensor:
    return torch.from_numpy(steps[sample_steps(len(steps), max_steps).numpy()])


def _batch(sequences: Sequences, positions: Sequence[int] | torch.Tensor) -> Batch:
    return {stream: pad_sequences([items[int(i)] for i in positions]) for stream, items in sequences.items()}


def _fit(
    head_config: GenreHeadConfig,
    train: tuple[Sequences, torch.Tensor],
    val: tuple[Sequences, torch.Tensor],
    *,
    description: str,
    quiet: bool,
) -> tuple[nn.Module, TrainOutcome]:
    """Mini-batch AdamW; keeps the weights of the epoch with the lowest validation loss."""
    config = head_config.train
    started = time.perf_counter()
    loss_fn = nn.CrossEntropyLoss()
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(config.seed)
        network = build_genre_module(head_config)
        optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        order = torch.Generator().manual_seed(config.seed)
        epochs, best_epoch, best_loss = train_with_early_stopping(
            network,
            lambda: _one_epoch(network, optimizer, loss_fn, train, config.batch_size, order),
            lambda: _loss(network, loss_fn, val, config.batch_size),
            config,
            description=description,
            quiet=quiet,
        )
    return network.eval(), TrainOutcome(epochs, best_epoch, best_loss, time.perf_counter() - started)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one intra-op thread, then as it was. Batches of a few dozen short sequences through small LSTMs are
    too little work to share: on a busy machine the threads' synchronization made an epoch ten times slower, and a
    prediction for one video take a second."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _one_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    train: tuple[Sequences, torch.Tensor],
    batch_size: int,
    order: torch.Generator,
) -> None:
    sequences, targets = train
    network.train()
    for positions in torch.randperm(len(targets), generator=order).split(batch_size):
        optimizer.zero_grad()
        loss_fn(network(_batch(sequences, positions)), targets[positions]).backward()
        optimizer.step()


def _loss(network: nn.Module, loss_fn: nn.Module, val: tuple[Sequences, torch.Tensor], batch_size: int) -> float:
    """The mean loss over every validation video, computed a batch at a time."""
    sequences, targets = val
    network.eval()
    total = 0.0
    with torch.no_grad():
        for positions in torch.arange(len(targets)).split(batch_size):
            total += float(loss_fn(network(_batch(sequences, positions)), targets[positions])) * len(positions)
    return total / len(targets)
