"""Images in, the backbone's input out: float32 NCHW, 224x224, scaled to [-1, 1].

The weights were trained on the shorter side resized to 256 (bicubic), a centre crop of 224, and every channel
mapped from [0, 1] by (x - 0.5) / 0.5. Letterbox bars (YouTube's 480x360 thumbnails of 16:9 videos) are cropped
first (`tubelens.images.crop_bars`), so the crop shows the picture rather than two black bands.
An image that is already 224x224 is taken as that crop: it is the preprocessor's stored 224x224 variant, made the
same way, and cropping it again would zoom in.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

from tubelens.errors import InvalidInput, TooLarge
from tubelens.images import crop_bars, to_rgb

INPUT_SIZE = 224
RESIZE_SIZE = 256
DEFAULT_MAX_PIXELS = 40_000_000
# Decoders tried on encoded bytes: the formats thumbnails and frames come in, and no other plugin's parser.
FORMATS = ("JPEG", "PNG", "WEBP")
# Of a stored thumbnail's variants, the one to embed: the preprocessor's crop is the backbone's input as it is.
PREFERRED_VARIANTS = ("224x224", "original")

ImageInput = Image.Image | bytes


def to_batch(images: Sequence[ImageInput], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The normalized batch; InvalidInput (or TooLarge) names the index of the first image that cannot be used."""
    pixels = [_pixels_at(index, image, max_pixels) for index, image in enumerate(images)]
    if not pixels:
        return np.empty((0, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    return normalize(np.stack(pixels))


def _pixels_at(index: int, image: ImageInput, max_pixels: int) -> np.ndarray:
    try:
        decoded = decode(image, max_pixels=max_pixels) if isinstance(image, bytes) else image
        return crop_pixels(decoded)
    except InvalidInput as exc:
        raise type(exc)(f"image {index}: {exc.message}", field=f"images[{index}]") from None


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Encoded JPEG, PNG or WebP to a loaded image; the declared size is checked before any pixel is decoded."""
    if not data:
        raise InvalidInput("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise TooLarge(f"too many pixels: {exc}") from None
    except Image.UnidentifiedImageError:
        # The bytes themselves are not echoed: a fetched body is none of the caller's business.
        raise InvalidInput("not a JPEG, PNG or WebP image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"corrupt image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(f"{image.format} declares {width}x{height} pixels, over the limit of {max_pixels}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"corrupt or truncated {image.format}: {exc}") from None
    return image


def crop_pixels(image: Image.Image) -> np.ndarray:
    """uint8 [224, 224, 3]: letterbox bars cropped, shorter side to 256 (bicubic), centre crop 224, as one
    resampling of the centre square. A 224x224 image is the preprocessor's crop, bars already gone."""
    rgb = to_rgb(image)
    if rgb.size != (INPUT_SIZE, INPUT_SIZE):
        rgb = crop_bars(rgb)
        width, height = rgb.size
        side = INPUT_SIZE * min(width, height) / RESIZE_SIZE
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
        rgb = rgb.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC, box=box)
    return np.asarray(rgb, dtype=np.uint8)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 NHWC to float32 NCHW with mean = std = 0.5 per channel, i.e. x / 255 * 2 - 1."""
    batch = pixels.astype(np.float32)
    batch *= 2 / 255
    batch -= 1
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
