"""Image utilities more than one service needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tubelens.errors import InvalidInput

PHASH_SIZE = 32


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: the 2-D transform of X is D @ X @ D.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(PHASH_SIZE)


def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash: near-identical pictures (re-encoded, resized) differ in few bits.

    As pHash does it: 32x32 greyscale, 2-D DCT, the 8x8 lowest frequencies just past the DC row and column (the
    DC term says only how bright the picture is), one bit per coefficient above their median.
    """
    grey = np.asarray(image.convert("L").resize((PHASH_SIZE, PHASH_SIZE), Image.Resampling.BOX), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[1:9, 1:9]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming_distance(a: int, b: int) -> int:
    """How many of the 64 bits two perceptual hashes differ in: under ~10 is the same picture."""
    return (a ^ b).bit_count()


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any decoded mode; transparent pixels become black (their colours are undefined, and black matches
    the letterbox bars)."""
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
        raise InvalidInput(f"unsupported image mode {image.mode}: {exc}") from None


# Shards store phashes as uint64 and cannot say "none"; 0 stands for unknown everywhere. A real pHash is 0 only for
# an image without texture, where falling back to the stricter cosine test loses nothing.
UNKNOWN_PHASH = 0


@dataclass(frozen=True)
class NearDuplicatePolicy:
    """Two thumbnails are near-duplicates when their perceptual hashes and their embeddings both agree.

    The pHash catches re-encodes, crops and small edits; the embedding rules out unrelated images whose hashes collide.
    Without both hashes only the embedding can tell, so it must agree more closely.
    """

    max_hamming: int = 10
    min_cosine: float = 0.9
    min_cosine_without_phash: float = 0.97

    def judge(self, cosine: float, phash_a: int, phash_b: int) -> bool:
        if phash_a == UNKNOWN_PHASH or phash_b == UNKNOWN_PHASH:
            return cosine >= self.min_cosine_without_phash
        return hamming_distance(phash_a, phash_b) <= self.max_hamming and cosine >= self.min_cosine


# A bar row or column: almost every pixel at most this bright. JPEG ringing lifts a few bar pixels next to the
# picture, so a share of brighter ones is tolerated rather than demanding pure black.
BAR_LUMA_MAX = 24
BAR_BRIGHT_SHARE = 0.02
# What must be left after cropping, per side: a picture that is mostly dark (a night scene) is not a bar.
BAR_KEEP_MIN = 0.4


def content_box(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the picture inside letterbox (top/bottom) or pillarbox (left/right) bars.

    YouTube's 480x360 hqdefault shows a 16:9 video between black bars; left in, they fill the backbone's centre
    crop's top and bottom and the embedding describes bars. The whole image when there are none, or when cropping
    would leave less than `BAR_KEEP_MIN` of a side (an all-dark picture stays whole)."""
    grey = np.asarray(image.convert("L"), dtype=np.uint8)
    height, width = grey.shape
    bright = grey > BAR_LUMA_MAX
    dark_rows = bright.mean(axis=1) <= BAR_BRIGHT_SHARE
    dark_columns = bright.mean(axis=0) <= BAR_BRIGHT_SHARE
    top, bottom = _bar_span(dark_rows)
    left, right = _bar_span(dark_columns)
    if bottom - top < BAR_KEEP_MIN * height:
        top, bottom = 0, height
    if right - left < BAR_KEEP_MIN * width:
        left, right = 0, width
    return left, top, right, bottom


def _bar_span(dark: np.ndarray) -> tuple[int, int]:
    """[start, stop) of what lies between the leading and trailing runs of dark lines."""
    bright = np.flatnonzero(~dark)
    if len(bright) == 0:
        return 0, 0
    return int(bright[0]), int(bright[-1]) + 1


def crop_bars(image: Image.Image) -> Image.Image:
    """The image without its letterbox or pillarbox bars (see `content_box`); the same object when it has none."""
    box = content_box(image)
    return image if box == (0, 0, *image.size) else image.crop(box)
