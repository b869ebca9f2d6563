"""TorchServe handler for a trained head: raw feature rows in, labels and probabilities (or a prediction) out.

TorchServe runs this file in its own Python worker, from inside the unpacked archive, where the `tubelens`
packages are not installed. So it imports nothing from tubelens: `build_network` repeats the few lines of
`heads.build_module`, and the standardization and target scaling are read from `head.json` and applied here just
as `heads.Head` applies them. A test loads the same head both ways and compares, so the two cannot drift apart.

Requests are JSON: `{"features": [[f0, f1, ...], ...]}`, rows in the head's feature-set order. Each request gets a
list with one answer per row: `{"label", "labels", "probabilities"}` from a classifier (probabilities in `labels`
order), `{"prediction"}` from a regressor, in the target's own units (log10 views, ...). TorchServe may batch
several requests into one call; their rows go through the network together.
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


class BadRequest(ValueError):
    """A request the head cannot answer; TorchServe reports it as a 400 where it can."""


def build_network(config: dict[str, Any]) -> nn.Module:
    """The head's network from its `head.json`; `heads.build_module` calls this too, so training and serving
    build the same network from one definition."""
    hidden, input_dim, output_dim = config["train"]["hidden"], config["input_dim"], config["output_dim"]
    if hidden <= 0:
        return nn.Linear(input_dim, output_dim)
    return nn.Sequential(
        nn.Linear(input_dim, hidden),
        nn.ReLU(),
        nn.Dropout(config["train"]["dropout"]),
        nn.Linear(hidden, output_dim),
    )


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
        with torch.no_grad():
            outputs = self.network((torch.cat(matrices) - self.mean) / self.scale)
        answers, start = [], 0
        for matrix in matrices:
            answers.append(self.read(outputs[start : start + len(matrix)]))
            start += len(matrix)
        return answers

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
        return [{"prediction": value} for value in predictions.tolist()]


_service: HeadService | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point; it first calls handle(None, context) once, to load the model."""
    global _service
    if _service is None:
        _service = HeadService(Path(context.system_properties["model_dir"]))
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
