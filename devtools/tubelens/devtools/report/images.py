"""Images inside the page: base64 data URIs, thumbnails shrunk to what a grid cell shows, occlusion overlays."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

# A grid cell is ~200 CSS px wide; twice that stays sharp on high-density screens and keeps the page light.
THUMBNAIL_WIDTH = 400
JPEG_QUALITY = 85
# The overlay's colours at full strength: matplotlib's tab:red for "raises", tab:blue for "lowers".
RAISES = (214, 39, 40)
LOWERS = (31, 119, 180)
# Strongest overlay opacity: the thumbnail stays visible under the hottest cell.
MAX_ALPHA = 0.65
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode(data: bytes) -> Image.Image | None:
    """The image in `data`, fully decoded, or None when it is not a readable image (the page says so instead)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return image


def thumbnail_uri(data: bytes, max_width: int = THUMBNAIL_WIDTH) -> str | None:
    """A data URI for a thumbnail: its own bytes when small enough and of a format browsers show, else a JPEG shrunk
    to `max_width`; None when `data` is not an image."""
    image = decode(data)
    if image is None:
        return None
    if image.width <= max_width and image.format in _MIME:
        return data_uri(data, _MIME[image.format])
    return data_uri(jpeg(shrink(image, max_width)), "image/jpeg")


def shrink(image: Image.Image, max_width: int) -> Image.Image:
    """`image` in RGB, scaled down to `max_width` when wider, aspect ratio kept."""
    rgb = image.convert("RGB")
    if rgb.width <= max_width:
        return rgb
    height = max(1, round(rgb.height * max_width / rgb.width))
    return rgb.resize((max_width, height), Image.Resampling.LANCZOS)


def jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def upscale(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """The grid bilinearly resampled to `width` x `height` pixels: each cell's value sits at its centre."""
    cells = Image.fromarray(np.asarray(grid, dtype=np.float32))
    return np.asarray(cells.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def overlay(image: Image.Image, grid: np.ndarray, scale: float) -> Image.Image:
    """`image` with red where the grid is positive and blue where negative, opacity growing with |value| / scale.

    Opacity rather than a white-centred colour map: where occlusion changes nothing, the thumbnail shows unveiled."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    values = upscale(np.nan_to_num(grid), image.width, image.height)
    strength = np.clip(np.abs(values) / scale, 0.0, 1.0)[..., None] if scale > 0 else np.zeros((*values.shape, 1))
    colour = np.where(values[..., None] >= 0, np.array(RAISES, dtype=np.float64), np.array(LOWERS, dtype=np.float64))
    alpha = MAX_ALPHA * strength
    blended = rgb * (1 - alpha) + colour * alpha
    return Image.fromarray(np.round(blended).astype(np.uint8))
