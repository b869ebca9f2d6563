"""Occlusion sensitivity: how much a thumbnail's predicted views move when one region of it is hidden.

Model-agnostic (it needs only a batch predict function), so it explains whichever popularity model is promoted,
not just those with gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

# Modes whose pixels numpy reads as plain channels; anything else (palette, CMYK, 1-bit) is occluded in RGB.
_CHANNEL_MODES = ("L", "RGB", "RGBA")

Predict = Callable[[list[Image.Image]], np.ndarray]


def occlusion_grid(image: Image.Image, predict: Predict, rows: int = 6, cols: int = 8) -> tuple[np.ndarray, float]:
    """Occlude each cell of a rows x cols grid (fill with the image's mean colour), predict all occluded copies in
    one call, and return (grid of baseline - occluded prediction, baseline prediction).

    The mean colour rather than black: a black patch is itself a strong visual feature (a dark thumbnail), so it
    would measure the patch as much as the content it hides. The whole image rides in the same call as its
    occluded copies, so baseline and occluded predictions take one numerical path."""
    _check_grid(image, rows, cols)
    occluded = occluded_copies(image, rows, cols)
    predictions = np.asarray(predict([image, *occluded]), dtype=np.float64).reshape(-1)
    if len(predictions) != 1 + rows * cols:
        raise ValueError(f"predict returned {len(predictions)} values for {1 + rows * cols} images")
    baseline = float(predictions[0])
    return baseline - predictions[1:].reshape(rows, cols), baseline


def occluded_copies(image: Image.Image, rows: int, cols: int) -> list[Image.Image]:
    """One copy of `image` per grid cell, row by row, with that cell filled with the image's mean colour."""
    _check_grid(image, rows, cols)
    pixels = np.asarray(image if image.mode in _CHANNEL_MODES else image.convert("RGB"))
    fill = np.round(pixels.mean(axis=(0, 1))).astype(pixels.dtype)
    ys, xs = cell_edges(image.height, rows), cell_edges(image.width, cols)
    copies = []
    for row in range(rows):
        for col in range(cols):
            copy = pixels.copy()
            copy[ys[row] : ys[row + 1], xs[col] : xs[col + 1]] = fill
            copies.append(Image.fromarray(copy))
    return copies


def cell_edges(length: int, cells: int) -> np.ndarray:
    """`cells + 1` pixel boundaries splitting `length` as evenly as whole pixels allow."""
    return np.round(np.linspace(0, length, cells + 1)).astype(int)


def _check_grid(image: Image.Image, rows: int, cols: int) -> None:
    if rows < 1 or cols < 1:
        raise ValueError(f"an occlusion grid needs at least one row and column, got {rows} x {cols}")
    if rows > image.height or cols > image.width:
        raise ValueError(f"a {rows} x {cols} grid has empty cells on a {image.width} x {image.height} image")
