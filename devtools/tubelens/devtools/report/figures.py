"""The report's picture sections: predicted against actual views, confusion matrices, similar thumbnails and
occlusion heatmaps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tubelens.devtools.report import evaluation as ev
from tubelens.devtools.report import images, plots
from tubelens.devtools.report.data import Heatmap, Match, SimilarExample, VideoPoint
from tubelens.devtools.report.markup import attr, empty, image, table, text
from tubelens.devtools.report.plots import Z95, compact_count
from tubelens.labels import category_name

# --- predicted vs actual -------------------------------------------------------------------------------------------


def popularity_html(points: list[VideoPoint]) -> str:
    usable = [p for p in points if np.isfinite(p.actual_log10_views) and np.isfinite(p.predicted_log10_views)]
    if not usable:
        return empty("No held-out predictions were given.")
    actual = np.array([p.actual_log10_views for p in usable], dtype=np.float64)
    predicted = np.array([p.predicted_log10_views for p in usable], dtype=np.float64)
    sigma = np.array([_spread(p.sigma) for p in usable], dtype=np.float64)
    uri = images.data_uri(plots.predicted_vs_actual_png(actual, predicted, sigma), "image/png")
    inside = np.abs(actual - predicted) <= Z95 * sigma
    error = float(np.mean(np.abs(actual - predicted)))
    caption = (
        f"{len(usable)} held-out videos (the time split's test rows, newest uploads). "
        f"Spearman ρ = {spearman(actual, predicted):.3f}; MAE = {error:.3f} log10 views, "
        f"a typical miss by a factor of {10**error:.1f}; "
        f"{np.mean(inside):.0%} of actual values fall inside the ±1.96σ band (95 % if the spread is calibrated)."
    )
    figure = f'<figure class="wide">{image(uri, "predicted against actual views")}<figcaption>{text(caption)}</figcaption></figure>'  # noqa: E501
    return figure + "\n" + misses_html(usable)


def _spread(sigma: float) -> float:
    return float(sigma) if np.isfinite(sigma) and sigma > 0 else 0.0


def misses_html(points: list[VideoPoint]) -> str:
    """Every held-out video, largest miss first: the titles behind the dots."""
    ranked = sorted(points, key=lambda p: (-abs(p.actual_log10_views - p.predicted_log10_views), p.video_id))
    rows = []
    for point in ranked:
        spread = Z95 * _spread(point.sigma)
        low, high = point.predicted_log10_views - spread, point.predicted_log10_views + spread
        rows.append(
            (
                text(point.title),
                text(point.channel_title),
                compact_count(10**point.actual_log10_views - 1),
                compact_count(10**point.predicted_log10_views - 1),
                f"{compact_count(10**low - 1)} – {compact_count(10**high - 1)}",
                f"{point.predicted_log10_views - point.actual_log10_views:+.2f}",
            )
        )
    listing = table(
        ("title", "channel", "actual views", "predicted", "95 % band", "error (log10)"), rows, numeric=(2, 3, 4, 5)
    )
    return f"<details>\n<summary>The {len(points)} held-out videos, largest miss first</summary>\n{listing}\n</details>"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties; 0 when either side is constant (as the trainer's metrics)."""
    ranked_a, ranked_b = _ranks(a) - (len(a) - 1) / 2, _ranks(b) - (len(b) - 1) / 2
    spread = float(np.sqrt(np.sum(ranked_a**2) * np.sum(ranked_b**2)))
    return float(np.sum(ranked_a * ranked_b) / spread) if spread > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2)[inverse]


# --- confusion matrices --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfusionSpec:
    title: str
    task: str
    split: str
    model: str  # the model whose matrix is drawn: the task's default one


CONFUSIONS = (
    ConfusionSpec("View buckets", "popularity_bucket", "split_time", "multimodal"),
    ConfusionSpec("Channels", "channel", "split_random", "image"),
    ConfusionSpec("Genres", "genre", "split_channel", "two_stream"),
)


def confusions_html(evaluation: dict[str, Any]) -> str:
    cells = [confusion_html(evaluation, spec) for spec in CONFUSIONS]
    return f'<div class="grid3">{"".join(cells)}</div>'


def confusion_html(evaluation: dict[str, Any], spec: ConfusionSpec) -> str:
    split_title = ev.SPLIT_TITLES.get(spec.split, spec.split)
    heading = f"<h3>{text(spec.title)}</h3>"
    task = ev.find_task(evaluation, spec.task, spec.split)
    result = _result(task, spec.model) if task is not None and not task.get("skipped") else None
    if result is None or not result["metrics"].get("confusion"):
        return f"<div>{heading}{empty(_missing(spec, task, split_title))}</div>"
    metrics = result["metrics"]
    labels = [category_name(label) for label in metrics["labels"]] if spec.task == "genre" else metrics["labels"]
    uri = images.data_uri(plots.confusion_png(np.asarray(metrics["confusion"]), labels), "image/png")
    caption = (
        f"{result['name']} on the {split_title}: accuracy {ev.fmt(ev.value(result, 'accuracy'))} on "
        f"{metrics.get('n', '?')} test videos. Rows: true label; columns: predicted."
    )
    alt = f"confusion matrix of {spec.task}"
    return f"<div>{heading}<figure>{image(uri, alt)}<figcaption>{text(caption)}</figcaption></figure></div>"


def _missing(spec: ConfusionSpec, task: dict[str, Any] | None, split_title: str) -> str:
    """Why there is no matrix to draw: the task was not evaluated, was skipped, or scored no model."""
    if task is None:
        return f"Not in this evaluation ({spec.task} on the {split_title})."
    if task.get("skipped"):
        return f"{spec.task} on the {split_title}: {task['skipped']}"
    return f"No confusion matrix for {spec.task} on the {split_title}."


def _result(task: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The named model's result, else the task's first model (a renamed default still gets its matrix drawn)."""
    results = ev.ordered_results(task)
    named = next((r for r in results if r.get("name") == name), None)
    return named or next((r for r in results if r.get("role") != ev.BASELINE), None)


# --- similar thumbnails --------------------------------------------------------------------------------------------


def similar_html(examples: list[SimilarExample]) -> str:
    if not examples:
        return empty("No similarity queries were run.")
    note = (
        '<p class="legend">Each row: a query thumbnail (outlined), then its nearest thumbnails by cosine similarity '
        "of their ImageNet embeddings; near-duplicates (by perceptual hash) are marked.</p>"
    )
    return note + "\n".join(similar_row(example) for example in examples)


def similar_row(example: SimilarExample) -> str:
    query = (
        f'<figure class="thumb query">{image(images.thumbnail_uri(example.jpeg), example.title)}'
        f"<figcaption><b>query</b> · {text(example.title)}<br><code>{text(example.video_id)}</code></figcaption>"
        "</figure>"
    )
    matches = "".join(match_card(match) for match in example.matches) or empty("No neighbours were found.")
    return f'<div class="similar">{query}<div class="matches">{matches}</div></div>'


def match_card(match: Match) -> str:
    duplicate = ' <span class="tag dup">near-duplicate</span>' if match.near_duplicate else ""
    return (
        f'<figure class="thumb{" duplicate" if match.near_duplicate else ""}">'
        f"{image(images.thumbnail_uri(match.jpeg), match.title)}"
        f'<figcaption><span class="score">{match.score:.3f}</span>{duplicate} {text(match.title)}</figcaption>'
        "</figure>"
    )


# --- occlusion heatmaps --------------------------------------------------------------------------------------------


def heatmaps_html(heatmaps: list[Heatmap]) -> str:
    if not heatmaps:
        return empty("No occlusion heatmaps were computed.")
    note = (
        '<p class="legend">Each cell of a grid over the thumbnail was hidden (filled with the image\'s mean colour) '
        "and the popularity model asked again. Red: the region raises predicted views (hiding it lowers the "
        "prediction); blue: it lowers them. The strongest cell is fully coloured; each heatmap has its own scale, "
        "shown under it.</p>"
    )
    return note + f'<div class="heatmaps">{"".join(heatmap_html(heatmap) for heatmap in heatmaps)}</div>'


def heatmap_html(heatmap: Heatmap) -> str:
    picture = images.decode(heatmap.jpeg)
    grid = np.nan_to_num(np.asarray(heatmap.grid, dtype=np.float64))
    title = f'<h3 class="clip">{text(heatmap.title)}</h3>'
    if picture is None:
        return f'<div class="heatmap">{title}{empty("The thumbnail could not be read.")}</div>'
    if grid.ndim != 2 or grid.size == 0:
        return f'<div class="heatmap">{title}{empty("The occlusion grid is empty.")}</div>'
    shown = images.shrink(picture, images.THUMBNAIL_WIDTH)
    scale = float(np.max(np.abs(grid)))
    original = images.data_uri(images.jpeg(shown), "image/jpeg")
    coloured = images.data_uri(images.jpeg(images.overlay(shown, grid, scale)), "image/jpeg")
    views = compact_count(10**heatmap.baseline_log10_views - 1)
    caption = (
        f"Whole thumbnail: ≈ {views} views predicted (log10 {heatmap.baseline_log10_views:.2f}). "
        f"{grid.shape[0]} × {grid.shape[1]} cells; the strongest moves the prediction by {scale:.3f} log10 views "
        f"(× {10**scale:.2f})."
    )
    pair = (
        f'<div class="pair">{image(original, heatmap.title)}'
        f"{image(coloured, f'occlusion heatmap of {heatmap.title}')}</div>"
    )
    return (
        f'<div class="heatmap">{title}<figure>{pair}{colour_bar(scale)}'
        f"<figcaption>{text(caption)} <code>{text(heatmap.video_id)}</code></figcaption></figure></div>"
    )


def colour_bar(scale: float) -> str:
    """The overlay's legend: a CSS gradient from "lowers" (blue) through none to "raises" (red)."""
    if scale == 0:
        return empty("No cell changes the prediction: the model does not look at this thumbnail's regions.")
    return (
        f'<div class="colourbar" title="{attr(f"±{scale:.3f} log10 views")}"><div class="bar"></div>'
        f'<div class="ticks"><span>−{scale:.3f}<br>lowers predicted views</span><span>0</span>'
        f"<span>+{scale:.3f}<br>raises predicted views</span></div></div>"
    )
