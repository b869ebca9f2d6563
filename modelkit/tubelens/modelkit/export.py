"""Export the backbone to ONNX, checked against eager torch before the file is kept.

    python -m tubelens.modelkit.export [PATH [IMAGE ...]]      (PATH defaults to the runtime's default_onnx_path())

The graph takes `images` float32 [batch, 3, 224, 224] (the batch axis dynamic) and returns `embedding` [batch, 1280]
(pooled, not yet normalized) and `logits` [batch, 1000]. The weights version is stamped into the file's metadata so
that a runtime never serves vectors under the wrong model version. The file is written beside its destination
and renamed into place only after onnxruntime agrees with torch, so a failed or concurrent export never leaves a
half-written or unchecked model where the runtime looks.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from tubelens.modelkit.efficientnet import MODEL_NAME, EfficientNetLite0, load_pretrained, weights_version
from tubelens.modelkit.preprocess import INPUT_SIZE, ImageInput, to_batch

MODELS_DIR = Path(".tubelens") / "models"
OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("embedding", "logits")
MAX_ABS_DIFF = 1e-4
VERSION_KEY = "tubelens.model_version"
CHECK_IMAGES = 8


def default_onnx_path() -> Path:
    """Under .tubelens/models/, named by the weights version so that new weights never meet an old export."""
    return MODELS_DIR / f"{MODEL_NAME}-{weights_version()}.onnx"


@dataclass(frozen=True)
class ExportReport:
    path: Path
    model: str
    version: str
    opset: int
    seconds: float
    size_bytes: int
    check_images: int
    max_abs_diff_embedding: float
    max_abs_diff_logits: float


class ExportMismatch(RuntimeError):
    """onnxruntime's outputs differ from torch's by more than the tolerance: the graph is not the model."""


def export_onnx(
    path: Path | str, *, check_images: Sequence[ImageInput] = (), tolerance: float = MAX_ABS_DIFF
) -> ExportReport:
    """Write the checked ONNX model to `path`; ExportMismatch, and no file, when onnxruntime disagrees with torch.

    The check runs on `check_images` when given (real photos), else on images with natural photographs'
    1/f spectrum, so that an export at build time needs no image files.
    """
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = load_pretrained()
    batch = to_batch(check_images) if check_images else natural_noise(CHECK_IMAGES)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    staging = Path(name)
    try:
        trace_to_onnx(model, staging)
        stamp_version(staging)
        diff_embedding, diff_logits = max_abs_diffs(staging, model, batch)
        if max(diff_embedding, diff_logits) > tolerance:
            raise ExportMismatch(
                f"onnxruntime differs from torch by {diff_embedding:.2e} (embedding) and {diff_logits:.2e} (logits), "
                f"over the tolerance of {tolerance:.0e}"
            )
        staging.chmod(0o644)  # mkstemp makes it private; a service running as another user must read it
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return ExportReport(
        path=path,
        model=MODEL_NAME,
        version=weights_version(),
        opset=OPSET,
        seconds=time.perf_counter() - started,
        size_bytes=path.stat().st_size,
        check_images=len(batch),
        max_abs_diff_embedding=diff_embedding,
        max_abs_diff_logits=diff_logits,
    )


def trace_to_onnx(model: EfficientNetLite0, path: Path) -> None:
    example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    batch_axis = {0: "batch"}
    with warnings.catch_warnings():
        # The torch.export-based exporter needs onnxscript, which is not installed; the TorchScript one is enough.
        warnings.simplefilter("ignore", DeprecationWarning)
        # SAME padding reads the height and width, which the graph fixes at 224: baking them in is what we want.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch_axis for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET,
        )


def stamp_version(path: Path) -> None:
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {VERSION_KEY: weights_version(), "tubelens.model_name": MODEL_NAME})
    onnx.save(graph, str(path))


def max_abs_diffs(path: Path, model: EfficientNetLite0, batch: np.ndarray) -> tuple[float, float]:
    """Largest |onnxruntime - torch| over the embedding and the logits, on the batch and on its first image alone
    (which exercises the dynamic batch axis)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = np.zeros(2)
    for images in (batch, batch[:1]):
        with torch.inference_mode():
            expected = [output.numpy() for output in model(torch.from_numpy(images))]
        actual = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        diffs = np.maximum(diffs, [float(np.abs(a - e).max()) for a, e in zip(actual, expected, strict=True)])
    return float(diffs[0]), float(diffs[1])


def natural_noise(count: int, seed: int = 0) -> np.ndarray:
    """Normalized images whose amplitude spectrum falls as 1/f, as photographs' does: they drive the network through
    the same range of activations as real pictures, unlike white noise."""
    rng = np.random.default_rng(seed)
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(INPUT_SIZE), np.fft.rfftfreq(INPUT_SIZE), indexing="ij"))
    frequency[0, 0] = 1.0
    shape = (count, 3, *frequency.shape)
    spectrum = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / frequency
    images = np.fft.irfft2(spectrum, s=(INPUT_SIZE, INPUT_SIZE))
    low = images.min(axis=(1, 2, 3), keepdims=True)
    high = images.max(axis=(1, 2, 3), keepdims=True)
    return ((images - low) / (high - low) * 2 - 1).astype(np.float32)


def main(argv: Sequence[str] | None = None) -> None:
    """Export to PATH (default: where the runtime looks), checked on the IMAGE files when given."""
    path, *images = list(sys.argv[1:] if argv is None else argv) or [default_onnx_path()]
    report = export_onnx(path, check_images=[Path(image).read_bytes() for image in images])
    print(json.dumps(asdict(report), default=str))


if __name__ == "__main__":
    main()
