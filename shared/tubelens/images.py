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
