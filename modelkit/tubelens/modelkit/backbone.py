"""The backbone as the service uses it: images in, L2-normalized embeddings and ImageNet probabilities out.

It runs the exported ONNX model through onnxruntime (several times faster than eager torch on a CPU) and falls back
to eager torch when that file is missing, stale or unloadable, saying which in the log. A missing file is exported
once on first start (a build normally does it beforehand: `python -m tubelens.modelkit.export`). Both runtimes
compute the same function of the same weights, so the model version is the same whichever serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime
import torch
from prometheus_client import Histogram

from tubelens.metrics import LATENCY_BUCKETS
from tubelens.modelkit.efficientnet import FEATURE_DIM, NUM_CLASSES, load_pretrained, model_spec, weights_version
from tubelens.modelkit.export import INPUT_NAME, OUTPUT_NAMES, VERSION_KEY, default_onnx_path, export_onnx
from tubelens.modelkit.preprocess import DEFAULT_MAX_PIXELS, ImageInput, to_batch

logger = logging.getLogger(__name__)

ONNXRUNTIME = "onnxruntime"
TORCH = "torch"

INFERENCE_SECONDS = Histogram(
    "tubelens_embedding_inference_duration_seconds",
    "Time for one backbone forward pass over a batch",
    ["runtime"],
    buckets=LATENCY_BUCKETS,
)

Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Embeddings(NamedTuple):
    vectors: np.ndarray  # float32 [N, 1280], unit L2 norm
    probabilities: np.ndarray  # float32 [N, 1000], softmax over the ImageNet classes


class Backbone:
    """embed(images) -> Embeddings. Thread-safe: both runtimes allow concurrent forward passes."""

    def __init__(
        self,
        onnx_path: Path | str | None = None,
        *,
        intra_op_threads: int = 0,
        export_if_missing: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        """`intra_op_threads` sizes onnxruntime's pool (0: one per physical core); the torch fallback uses torch's
        process-wide pool. `max_pixels` caps what `embed` decodes."""
        self.model = model_spec()
        self.dim = FEATURE_DIM
        self.max_pixels = max_pixels
        path = Path(onnx_path) if onnx_path is not None else default_onnx_path()
        self.runtime, self._forward = open_runtime(path, intra_op_threads, export_if_missing)
        logger.info(
            "backbone ready",
            extra={"runtime": self.runtime, "model": self.model.name, "model_version": self.model.version},
        )

    def embed(self, images: Sequence[ImageInput]) -> Embeddings:
        """Decoded PIL images or encoded bytes; InvalidInput names the first image that cannot be decoded."""
        return self.infer(to_batch(images, max_pixels=self.max_pixels))

    def infer(self, batch: np.ndarray) -> Embeddings:
        """A prepared float32 [N, 3, 224, 224] batch, as `preprocess.to_batch` makes it."""
        if len(batch) == 0:
            return Embeddings(np.empty((0, FEATURE_DIM), np.float32), np.empty((0, NUM_CLASSES), np.float32))
        started = time.perf_counter()
        features, logits = self._forward(batch)
        INFERENCE_SECONDS.labels(self.runtime).observe(time.perf_counter() - started)
        return Embeddings(l2_normalize(features), softmax(logits))


def open_runtime(path: Path, intra_op_threads: int, export_if_missing: bool) -> tuple[str, Forward]:
    try:
        if not path.is_file():
            if not export_if_missing:
                raise FileNotFoundError(f"no ONNX model at {path}")
            logger.info("exporting the backbone to ONNX, once", extra={"path": str(path)})
            report = export_onnx(path)
            logger.info("backbone exported", extra={"path": str(path), "seconds": round(report.seconds, 1)})
        return ONNXRUNTIME, onnx_forward(path, intra_op_threads)
    except Exception as exc:  # any failure to get the ONNX model leaves the slower but equivalent torch path
        logger.warning(
            "onnxruntime unavailable, serving with eager torch", extra={"path": str(path), "reason": str(exc)}
        )
        return TORCH, torch_forward()


def onnx_forward(path: Path, intra_op_threads: int) -> Forward:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    exported = session.get_modelmeta().custom_metadata_map.get(VERSION_KEY)
    if exported != weights_version():
        raise ValueError(f"{path} was exported from weights {exported}, the installed ones are {weights_version()}")

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, logits = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return features, logits

    return forward


def torch_forward() -> Forward:
    model = load_pretrained()

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            features, logits = model(torch.from_numpy(batch))
        return features.numpy(), logits.numpy()

    return forward


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A ReLU6 network can pool to all zeros; leave such a row zero rather than divide by zero.
    return (vectors / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
