"""TorchServe handler for a trained head or genre model: raw inputs in, labels and probabilities (or a prediction)
out.

TorchServe runs this file in its own Python worker, from inside the unpacked archive, where the `tubelens`
packages are not installed. So it imports nothing from tubelens: `build_network` repeats the few lines of
`heads.build_module`, and the standardization and target scaling are read from `head.json` and applied here just
as `heads.Head` applies them. A test loads the same head both ways and compares, so the two cannot drift apart.

Heads: requests are JSON `{"features": [[f0, f1, ...], ...]}`, rows in the head's feature-set order. Each request
gets a list with one answer per row: `{"label", "labels", "probabilities"}` from a classifier (probabilities in
`labels` order), `{"prediction"}` from a regressor, in the target's own units (log10 views, ...); a ridge regressor
(the popularity model) adds `"sigma"`, a 95 % `"interval"` and, for log10 views, `"buckets"` with
`"bucket_probabilities"`. TorchServe may batch several requests into one call; their rows go through the network
together.

Genre (`head.json` kind "genre", seed 003's two streams): the network itself lives here (`GenreNetwork`), and
`genre.py` trains exactly this module, so training and serving share one definition. A request is one video,
`{"frames": [[1280 floats], ...], "audio": [[bands floats], ...]}`: its frame embeddings and per-second log-mel
rows, in time order; a stream the model was trained without may be left out or empty. Sequences longer than the
model's `max_steps` are sampled uniformly (`sample_steps`), as in training. Each request gets one
`{"label", "labels", "probabilities"}`; batched requests are padded and packed into one pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

STATE_FILE = "head.pt"
CONFIG_FILE = "head.json"
CLASSIFIER = "classifier"
GENRE = "genre"
FRAMES = "frames"
AUDIO = "audio"
STREAMS = (FRAMES, AUDIO)


class BadRequest(ValueError):
    """A request the head cannot answer; TorchServe reports it as a 400 where it can."""


def build_network(config: dict[str, Any]) -> nn.Module:
    """The network from its `head.json`; `heads.build_module` and `genre.build_genre_module` call this too, so
    training and serving build the same network from one definition."""
    if config["kind"] == GENRE:
        return GenreNetwork(config)
    hidden, input_dim, output_dim = config["train"]["hidden"], config["input_dim"], config["output_dim"]
    if hidden <= 0:
        return nn.Linear(input_dim, output_dim)
    return nn.Sequential(
        nn.Linear(input_dim, hidden),
        nn.ReLU(),
        nn.Dropout(config["train"]["dropout"]),
        nn.Linear(hidden, output_dim),
    )


# --- the genre network ---------------------------------------------------------------------------------------------


def sample_steps(length: int, max_steps: int) -> torch.Tensor:
    """Indices of at most `max_steps` steps spread uniformly over a sequence of `length`: the middle of each of
    `max_steps` equal spans. Integer arithmetic, so training (numpy) and serving pick exactly the same steps."""
    if length <= max_steps:
        return torch.arange(length)
    return (2 * torch.arange(max_steps) + 1) * length // (2 * max_steps)


def pad_sequences(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded [batch, longest, width] tensor and each sequence's length (every length at least 1)."""
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
    return nn.utils.rnn.pad_sequence(sequences, batch_first=True), lengths


class SequenceEncoder(nn.Module):
    """One stream: each step standardized (when the stream has statistics of its training steps, from `head.json`,
    so they are not weights), projected, then an LSTM over the valid steps only. Packing keeps the padding out of
    the recurrence, so a video gives the same vector alone or padded in a batch."""

    def __init__(self, width: int, hidden: int, dropout: float, standardizer: dict[str, list[float]] | None) -> None:
        super().__init__()
        standardizer = standardizer or {"mean": [0.0] * width, "scale": [1.0] * width}
        self.register_buffer("mean", torch.tensor(standardizer["mean"], dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(standardizer["scale"], dtype=torch.float32), persistent=False)
        self.project = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)

    def forward(self, steps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        projected = self.project((steps - self.mean) / self.scale)
        packed = nn.utils.rnn.pack_padded_sequence(projected, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return hidden[-1]  # the state after each sequence's own last step


class GenreNetwork(nn.Module):
    """Seed 003: a frame stream and an audio stream, each pooled by its LSTM, concatenated into a small MLP over
    the genres. `architecture.streams` names the streams it has: the frames-only and audio-only ablations are the
    same network with one stream."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        architecture = config["architecture"]
        self.streams = [stream for stream in STREAMS if stream in architecture["streams"]]
        widths = {FRAMES: architecture["frame_dim"], AUDIO: architecture["audio_bands"]}
        # Frame embeddings are unit vectors and go in as they are; audio is standardized (see genre.py).
        standardizers = {FRAMES: None, AUDIO: config.get("audio_standardizer")}
        hidden, dropout = architecture["hidden"], architecture["dropout"]
        self.stream_dropout = architecture["stream_dropout"]
        self.encoders = nn.ModuleDict(
            {stream: SequenceEncoder(widths[stream], hidden, dropout, standardizers[stream]) for stream in self.streams}
        )
        self.classify = nn.Sequential(
            nn.Linear(hidden * len(self.streams), architecture["fusion_hidden"]),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(architecture["fusion_hidden"], architecture["output_dim"]),
        )

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Logits for a batch of videos: per stream, the padded steps and the lengths."""
        pooled = [self.encoders[stream](*batch[stream]) for stream in self.streams]
        if self.training and len(pooled) > 1 and self.stream_dropout > 0:
            pooled = self.drop_streams(pooled)
        return self.classify(torch.cat(pooled, dim=1))

    def drop_streams(self, pooled: list[torch.Tensor]) -> list[torch.Tensor]:
        """Training only: for a `stream_dropout` share of the videos, one stream (picked at random) is silenced, so
        that each stream must predict genre on its own and the easier one cannot carry the whole model."""
        count = len(pooled[0])
        dropped = torch.rand(count) < self.stream_dropout
        which = torch.randint(len(pooled), (count,))
        return [vector * ~(dropped & (which == index)).unsqueeze(1) for index, vector in enumerate(pooled)]


class HeadService:
    """One loaded head: the network, its input standardization and how to read its outputs."""

    def __init__(self, model_dir: Path) -> None:
        self.config = json.loads((model_dir / CONFIG_FILE).read_text())
        self.network = build_network(self.config)
        self.network.load_state_dict(torch.load(model_dir / STATE_FILE, map_location="cpu", weights_only=True))
        self.network.eval()
        self.mean = torch.tensor(self.config["standardizer"]["mean"], dtype=torch.float32)
        self.scale = torch.tensor(self.config["standardizer"]["scale"], dtype=torch.float32)

    def answer(self, requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        matrices = [self.rows_of(request) for request in requests]
        clamped = [self.clamp(matrix) for matrix in matrices]
        with torch.no_grad():
            outputs = self.network((torch.cat(matrices) - self.mean) / self.scale)
        answers, start = [], 0
        for matrix, names in zip(matrices, clamped, strict=True):
            rows = self.read(outputs[start : start + len(matrix)])
            for row, row_names in zip(rows, names, strict=True):
                if row_names:  # said in the answer: the prediction is for the nearest age the model knows
                    row["clamped"] = row_names
            answers.append(rows)
            start += len(matrix)
        return answers

    def clamp(self, matrix: torch.Tensor) -> list[list[str]]:
        """Hold each clamped column (`HeadConfig.clamp`) to its training range, in place, as `heads.clamp_columns`
        does; the names of the columns clamped in each row."""
        names: list[list[str]] = [[] for _ in range(len(matrix))]
        for rule in self.config.get("clamp") or []:
            column = matrix[:, rule["column"]]
            low, high = torch.tensor(rule["low"], dtype=torch.float32), torch.tensor(rule["high"], dtype=torch.float32)
            for row in torch.nonzero((column < low) | (column > high)).flatten().tolist():
                names[row].append(rule["name"])
            matrix[:, rule["column"]] = column.clamp(low, high)
        return names

    def rows_of(self, request: Any) -> torch.Tensor:
        rows = request.get("features") if isinstance(request, dict) else None
        if not isinstance(rows, list) or not rows:
            raise BadRequest('expected a JSON object {"features": [[...], ...]} with at least one row')
        try:
            matrix = torch.tensor(rows, dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"features must be rows of numbers: {exc}") from None
        if matrix.ndim != 2 or matrix.shape[1] != self.config["input_dim"]:
            raise BadRequest(f"each row needs {self.config['input_dim']} features; got shape {list(matrix.shape)}")
        return matrix

    def read(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        if self.config["kind"] == CLASSIFIER:
            labels = self.config["labels"]
            probabilities = torch.softmax(outputs, dim=1)
            return [
                {"label": labels[int(row.argmax())], "labels": labels, "probabilities": row.tolist()}
                for row in probabilities
            ]
        # Same arithmetic as heads.Regressor.predict: float32 outputs, scaled back in float64.
        standardized = outputs[:, 0].double()
        predictions = standardized * self.config["target_scale"] + self.config["target_mean"]
        answers = [{"prediction": value} for value in predictions.tolist()]
        sigma = float(self.config.get("residual_sigma", 0.0))
        if sigma > 0:
            self._add_spread(answers, predictions, sigma)
        return answers

    def _add_spread(self, answers: list[dict[str, Any]], predictions: torch.Tensor, sigma: float) -> None:
        """A ridge regressor's predictive distribution: its spread, a 95 % interval, and for log10 views the
        bucket probabilities, computed as `heads.bucket_probabilities` computes them (torch's ndtr, float64)."""
        thresholds = self.config.get("bucket_thresholds") or []
        probabilities = None
        if thresholds:
            z = (torch.tensor(thresholds, dtype=torch.float64)[None, :] - predictions[:, None]) / sigma
            below = torch.special.ndtr(z)
            ends = (
                torch.zeros(len(predictions), 1, dtype=torch.float64),
                torch.ones(len(predictions), 1, dtype=torch.float64),
            )
            probabilities = torch.diff(torch.cat([ends[0], below, ends[1]], dim=1), dim=1).clamp_min(0.0)
        for index, answer in enumerate(answers):
            answer["sigma"] = sigma
            answer["interval"] = [answer["prediction"] - 1.96 * sigma, answer["prediction"] + 1.96 * sigma]
            if probabilities is not None:
                answer["buckets"] = self.config["bucket_names"]
                answer["bucket_probabilities"] = probabilities[index].tolist()


class GenreService:
    """One loaded genre model: each request is one video's frame and audio sequences."""

    def __init__(self, model_dir: Path) -> None:
        self.config = json.loads((model_dir / CONFIG_FILE).read_text())
        self.network = build_network(self.config)
        self.network.load_state_dict(torch.load(model_dir / STATE_FILE, map_location="cpu", weights_only=True))
        self.network.eval()
        architecture = self.config["architecture"]
        self.streams = self.network.streams
        self.widths = {FRAMES: architecture["frame_dim"], AUDIO: architecture["audio_bands"]}
        self.max_steps = architecture["max_steps"]

    def answer(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        videos = [self.sequences_of(request) for request in requests]
        batch = {stream: pad_sequences([video[stream] for video in videos]) for stream in self.streams}
        with torch.no_grad():
            probabilities = torch.softmax(self.network(batch), dim=1)
        labels = self.config["labels"]
        return [
            {"label": labels[int(row.argmax())], "labels": labels, "probabilities": row.tolist()}
            for row in probabilities
        ]

    def sequences_of(self, request: Any) -> dict[str, torch.Tensor]:
        if not isinstance(request, dict):
            raise BadRequest('expected a JSON object {"frames": [[...], ...], "audio": [[...], ...]} for one video')
        return {stream: self.steps_of(request.get(stream), stream) for stream in self.streams}

    def steps_of(self, rows: Any, stream: str) -> torch.Tensor:
        """One stream's [steps, width] rows, uniformly sampled down to `max_steps`."""
        width = self.widths[stream]
        if not isinstance(rows, list) or not rows:
            raise BadRequest(f'"{stream}" needs at least one row of {width} numbers: this model reads {self.streams}')
        try:
            steps = torch.tensor(rows, dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f'"{stream}" must be rows of numbers: {exc}') from None
        if steps.ndim != 2 or steps.shape[1] != width:
            raise BadRequest(f'each "{stream}" row needs {width} numbers; got shape {list(steps.shape)}')
        if not torch.isfinite(steps).all():
            raise BadRequest(f'"{stream}" holds a value that is not a finite number')
        return steps[sample_steps(len(steps), self.max_steps)]


_service: HeadService | GenreService | None = None


def load_service(model_dir: Path) -> HeadService | GenreService:
    """The service for the model in `model_dir`, by the kind its `head.json` names."""
    kind = json.loads((model_dir / CONFIG_FILE).read_text())["kind"]
    return GenreService(model_dir) if kind == GENRE else HeadService(model_dir)


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point; it first calls handle(None, context) once, to load the model."""
    global _service
    if _service is None:
        _service = load_service(Path(context.system_properties["model_dir"]))
    if data is None:
        return None
    try:
        return _service.answer([_body(request) for request in data])
    except BadRequest as exc:
        raise _prediction_error(str(exc)) from None


def _body(request: dict[str, Any]) -> Any:
    """TorchServe hands JSON bodies over parsed when the client says application/json, as bytes otherwise."""
    body = request.get("body", request.get("data"))
    if isinstance(body, bytes | bytearray):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
    return body


def _prediction_error(message: str) -> Exception:
    try:
        from ts.utils.util import PredictionException
    except ImportError:  # outside TorchServe (tests): a plain error carries the message
        return BadRequest(message)
    return PredictionException(message, 400)
