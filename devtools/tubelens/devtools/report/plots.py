"""The report's matplotlib figures, as PNG bytes.

Figures are built with `matplotlib.figure.Figure` and saved through its own Agg canvas, never through pyplot: the
report then needs no display, selects no global backend in the process that imports it, and leaves no figure
registered in pyplot's state to close. Sizes and dpi are fixed, and PNGs carry no software or time stamp, so the
same data gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

DPI = 100
SCATTER_SIZE = (6.4, 4.8)  # inches: 640 x 480 px
CONFUSION_SIZE = (5.2, 4.6)
Z95 = 1.96  # half-width of a normal 95 % interval in sigmas
POINT = "#1f77b4"
BAND = (0.12, 0.47, 0.71, 0.3)


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def compact_count(value: float) -> str:
    """1234 -> "1.2K", 5e6 -> "5M": view counts as people say them."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def predicted_vs_actual_png(actual: np.ndarray, predicted: np.ndarray, sigma: np.ndarray) -> bytes:
    """Predicted against actual views on log axes, each prediction with its ±1.96σ interval, and the y = x line.

    Inputs are log10 views; the axes show views so that a reader sees "10K", not "4"."""
    figure = Figure(figsize=SCATTER_SIZE, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    x, y = 10.0**actual, 10.0**predicted
    below, above = y - 10.0 ** (predicted - Z95 * sigma), 10.0 ** (predicted + Z95 * sigma) - y
    axes.errorbar(
        x, y, yerr=[below, above], fmt="o", markersize=4, color=POINT, ecolor=BAND, elinewidth=2, capsize=0,
        label="prediction ± 1.96σ",
    )  # fmt: skip
    low, high = _limits(np.concatenate([x, y]))
    axes.plot([low, high], [low, high], linestyle="--", color="0.35", linewidth=1, label="y = x (perfect)")
    # Scales before formatters: setting a scale installs that scale's default formatters.
    axes.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high))
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda value, _position: compact_count(value)))
    axes.set_xlabel("actual views (log scale)")
    axes.set_ylabel("predicted views (log scale)")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", frameon=False)
    return png(figure)


def _limits(values: np.ndarray) -> tuple[float, float]:
    """Axis limits around the points, half a decade of margin each side (log axes need them positive)."""
    low, high = float(np.min(values)), float(np.max(values))
    return max(low / 10**0.5, 0.5), max(high * 10**0.5, 10.0)


def confusion_png(matrix: np.ndarray, labels: Sequence[str]) -> bytes:
    """Counts as a heatmap, rows = true label, columns = predicted, each cell printed."""
    count = len(labels)
    figure = Figure(figsize=CONFUSION_SIZE, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    peak = max(1, int(matrix.max(initial=0)))
    axes.imshow(matrix, cmap="Blues", vmin=0, vmax=peak, aspect="auto")
    size = 9 if count <= 8 else 7 if count <= 14 else 5
    names = [_plain(label) for label in labels]
    axes.set_xticks(range(count), labels=names, rotation=45, ha="right", rotation_mode="anchor", fontsize=size)
    axes.set_yticks(range(count), labels=names, fontsize=size)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in range(count):
        for col in range(count):
            value = int(matrix[row, col])
            colour = "white" if value > peak / 2 else "0.2"
            axes.text(col, row, str(value), ha="center", va="center", color=colour, fontsize=size)
    return png(figure)


def _plain(label: str) -> str:
    """A label matplotlib draws as written: a pair of "$" would otherwise switch it into mathtext."""
    return label.replace("$", r"\$")
