"""TorchServe handler for a fine-tuned image classifier: raw image bytes in, labels and probabilities out.

TorchServe runs this file in its own Python worker, from inside the unpacked archive, where the `tubelens` packages
are not installed. So it imports nothing from tubelens (only torch, PIL and numpy) and repeats the few lines of
`tubelens.modelkit.preprocess` that turn an encoded image into the network's input: JPEG, PNG or WebP only, the
declared pixel count checked before any pixel is decoded, transparent pixels black, the shorter side to 256 with
bicubic resampling and a centre crop of 224 as one resampling of the centre square (an image that is already
224x224 is taken as that crop), then (x / 255 - mean) / std. A test compares the two pixel arrays exactly, so the
served model sees what the trainer fed it. The sizes, mean, std and pixel cap are read from the archive's config.

A request's body is one image's bytes (`curl --data-binary @thumb.jpg -H 'Content-Type: image/jpeg'`); its answer is
`{"label", "labels", "probabilities"}`, probabilities in `labels` order. TorchServe may batch several requests into
one call: their images go through the network together. An image that cannot be used is a client error (400) that
says why; in a batch, only its own request fails.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

MODEL_FILE = "image_classifier.pt"
CONFIG_FILE = "image_classifier.json"
KIND = "image_classifier"
RESAMPLE = "bicubic"
FORMATS = ("JPEG", "PNG", "WEBP")


class BadImage(ValueError):
    """An image the model cannot be asked about; TorchServe reports it as a 400."""


# preprocessing, as tubelens.modelkit.preprocess does it


def decode(data: bytes, *, max_pixels: int) -> Image.Image:
    """Encoded JPEG, PNG or WebP to a loaded image; the declared size is checked before any pixel is decoded."""
    if not data:
        raise BadImage("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"too many pixels: {exc}") from None
    except Image.UnidentifiedImageError:
        # The bytes themselves are not echoed: a fetched body is none of the caller's business.
        raise BadImage("not a JPEG, PNG or WebP image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"corrupt image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(f"{image.format} declares {width}x{height} pixels, over the limit of {max_pixels}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"corrupt or truncated {image.format}: {exc}") from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any decoded mode; transparent pixels become black, as `tubelens.images.to_rgb` makes them."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise BadImage(f"unsupported image mode {image.mode}: {exc}") from None


# As `tubelens.images.content_box`, repeated here (this handler imports nothing from tubelens).
BAR_LUMA_MAX, BAR_BRIGHT_SHARE, BAR_KEEP_MIN = 24, 0.02, 0.4


def content_box(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) inside letterbox or pillarbox bars; the whole image when there are none."""
    bright = np.asarray(image.convert("L"), dtype=np.uint8) > BAR_LUMA_MAX
    height, width = bright.shape
    rows, columns = (
        np.flatnonzero(bright.mean(axis=1) > BAR_BRIGHT_SHARE),
        np.flatnonzero(bright.mean(axis=0) > BAR_BRIGHT_SHARE),
    )
    top, bottom = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
    left, right = (int(columns[0]), int(columns[-1]) + 1) if len(columns) else (0, 0)
    if bottom - top < BAR_KEEP_MIN * height:
        top, bottom = 0, height
    if right - left < BAR_KEEP_MIN * width:
        left, right = 0, width
    return left, top, right, bottom


def crop_pixels(image: Image.Image, *, resize: int, crop: int) -> np.ndarray:
    """uint8 [crop, crop, 3]: letterbox bars cropped, shorter side to `resize` (bicubic), centre crop `crop`, as
    one resampling."""
    rgb = to_rgb(image)
    if rgb.size != (crop, crop):
        box = content_box(rgb)
        rgb = rgb if box == (0, 0, *rgb.size) else rgb.crop(box)
        width, height = rgb.size
        side = crop * min(width, height) / resize
        left, top = (width - side) / 2, (height - side) / 2
        rgb = rgb.resize((crop, crop), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(rgb, dtype=np.uint8)


def normalize(pixels: np.ndarray, *, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 NHWC to float32 NCHW, (x / 255 - mean) / std per channel, rounded as the embedding service rounds it:
    one float32 multiply and one float32 subtraction."""
    scale = np.array([1 / (255 * s) for s in std], dtype=np.float32)
    offset = np.array([m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32)
    batch = pixels.astype(np.float32)
    batch *= scale
    batch -= offset
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


# the model


class ImageClassifierService:
    """One loaded classifier: the TorchScript network (float32 [N, 3, 224, 224] in, logits out) and its config."""

    def __init__(self, model_dir: Path) -> None:
        self.config = json.loads((model_dir / CONFIG_FILE).read_text())
        if self.config.get("kind") != KIND:
            raise ValueError(f"{model_dir / CONFIG_FILE} describes a {self.config.get('kind')!r}, not a {KIND}")
        self.preprocessing = self.config["preprocessing"]
        if self.preprocessing["resample"] != RESAMPLE:
            raise ValueError(f"this handler resamples {RESAMPLE}, the model wants {self.preprocessing['resample']}")
        self.labels: list[str] = self.config["labels"]
        with warnings.catch_warnings():
            # torch calls TorchScript deprecated, but TorchScript is what TorchServe serves.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit\.")
            self.network = torch.jit.load(str(model_dir / MODEL_FILE), map_location="cpu").eval()

    def pixels(self, data: bytes) -> np.ndarray:
        """One encoded image as uint8 [224, 224, 3], or BadImage saying why it cannot be."""
        image = decode(data, max_pixels=self.preprocessing["max_pixels"])
        return crop_pixels(image, resize=self.preprocessing["resize"], crop=self.preprocessing["crop"])

    def batch(self, pixels: list[np.ndarray]) -> np.ndarray:
        return normalize(np.stack(pixels), mean=self.preprocessing["mean"], std=self.preprocessing["std"])

    def answer(self, pixels: list[np.ndarray]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            probabilities = torch.softmax(self.network(torch.from_numpy(self.batch(pixels))), dim=1)
        return [
            {"label": self.labels[int(row.argmax())], "labels": self.labels, "probabilities": row.tolist()}
            for row in probabilities
        ]


_service: ImageClassifierService | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point; it first calls handle(None, context) once, to load the model."""
    global _service
    if _service is None:
        _service = ImageClassifierService(Path(context.system_properties["model_dir"]))
    if data is None:
        return None
    pixels: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for index, request in enumerate(data):
        try:
            pixels[index] = _service.pixels(_body(request))
        except BadImage as exc:
            errors[index] = str(exc)
    if errors and (not pixels or not hasattr(context, "set_response_status")):
        # Nothing to answer (the usual batch of one), or no way to fail one request alone: the batch is a 400.
        raise _prediction_error(next(iter(errors.values())))
    answers = dict(zip(pixels, _service.answer(list(pixels.values())) if pixels else [], strict=True))
    for index, message in errors.items():
        context.set_response_status(400, "Bad Request", index)
        answers[index] = {"code": 400, "type": "BadImage", "message": message}
    return [answers[index] for index in range(len(data))]


def _body(request: dict[str, Any]) -> bytes:
    """TorchServe hands the raw body over as bytes under `body` (or `data`)."""
    body = request.get("body", request.get("data"))
    if not isinstance(body, bytes | bytearray):
        raise BadImage(f"expected the image's bytes as the request body, got {type(body).__name__}")
    return bytes(body)


def _prediction_error(message: str) -> Exception:
    # As ts_handler does it: this file cannot import that one from inside the archive.
    try:
        from ts.utils.util import PredictionException
    except ImportError:  # outside TorchServe (tests): a plain error carries the message
        return BadImage(message)
    return PredictionException(message, 400)
