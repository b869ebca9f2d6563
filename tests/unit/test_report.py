"""The demo's HTML report: one self-contained page that shows every section, escapes user content, says so when a
section has no data, and comes out the same for the same data; and occlusion heatmaps that find what matters."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.unit.test_trainer_models import synthetic_table
from tubelens.devtools.report import (
    ConceptClouds,
    Heatmap,
    Match,
    ReportData,
    SimilarExample,
    VideoPoint,
    build_report,
    figures,
    images,
    occlusion_grid,
    render,
    tables,
    wordcloud,
)
from tubelens.devtools.report import evaluation as report_ev
from tubelens.devtools.report.occlusion import cell_edges
from tubelens.trainer import evaluate as ev
from tubelens.trainer import metrics as m

ATTACK = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
WHEN = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
HEADINGS = (
    "Summary",
    "Pipeline",
    "Evaluation: models against baselines",
    "Predicted vs actual views",
    "Confusion matrices",
    "Similar thumbnails",
    "Concepts in popular and unpopular videos",
    "What in a thumbnail drives its predicted views",
    "Registered models",
    "Predictor",
)
GENRES = ["10", "17", "20"]


# --- building blocks -----------------------------------------------------------------------------------------------


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 36)) -> bytes:
    """A small JPEG: a colour ramp, so that each thumbnail differs and compresses like a picture."""
    ramp = np.linspace(0.4, 1.0, size[0])[None, :, None] * np.array(colour)[None, None, :]
    pixels = np.broadcast_to(ramp, (size[1], size[0], 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def evaluation() -> dict[str, Any]:
    """A real evaluation: time and random splits run, held-out channels and genre skipped (no store)."""
    return ev.evaluate_all(synthetic_table(channels=4, per_channel=30), seed=0, resamples=50).to_dict()


def genre_task(split_column: str = "split_channel") -> dict[str, Any]:
    """A genre task as evaluate_task reports it, with hand-picked predictions (the real one needs an object store)."""
    truth = ["10", "10", "17", "17", "20", "20"]
    predicted = ["10", "17", "17", "17", "20", "10"]
    scores = np.eye(len(GENRES))[[GENRES.index(label) for label in predicted]]
    results = [
        ev.ModelResult(name, ev.MODEL, _genre_metrics(truth, predicted, scores), 0.1, 3)
        for name in ("two_stream", "frames_only", "audio_only")
    ]
    majority = ["10"] * len(truth)
    results.append(ev.ModelResult("majority", ev.BASELINE, _genre_metrics(truth, majority, np.eye(3)[[0] * 6]), 0.0))
    report = ev.TaskReport(ev.GENRE, split_column, 0, {"train": 12, "val": 6, "test": 6}, results=results)
    return report.to_dict()


def _genre_metrics(truth: list[str], predicted: list[str], scores: np.ndarray) -> m.ClassificationMetrics:
    return m.classification_metrics(truth, predicted, labels=GENRES, scores=scores, k=3, gap_k=20, resamples=50)


def with_genre(evaluation: dict[str, Any]) -> dict[str, Any]:
    tasks = [t for t in evaluation["tasks"] if not (t["task"] == ev.GENRE and t["split_column"] == "split_channel")]
    return {**evaluation, "tasks": [*tasks, genre_task()]}


def sample_data(evaluation: dict[str, Any], title: str = "tubelens demo") -> ReportData:
    rng = np.random.default_rng(0)
    actual = rng.uniform(2, 7, 12)
    points = [
        VideoPoint(
            f"v{i:02d}", f"video {i} {ATTACK}", f"channel {ATTACK}", float(a), float(a + rng.normal(0, 0.3)), 0.3
        )
        for i, a in enumerate(actual)
    ]
    similar = [
        SimilarExample(
            f"q{q}",
            f"query {q} {ATTACK}",
            jpeg((200, 40 * q, 40)),
            [
                Match(f"m{q}{k}", f"match {k} {ATTACK}", 0.9 - 0.1 * k, k == 0, jpeg((40, 60 * k, 200)))
                for k in range(3)
            ],
        )
        for q in range(2)
    ]
    grid = np.zeros((3, 4))
    grid[0, 0], grid[2, 3] = 0.2, -0.1
    heatmaps = [Heatmap("h1", f"heat {ATTACK}", jpeg((120, 180, 60)), grid, 4.2)]
    concepts = ConceptClouds(
        popular=[("stage", 3042.0), ("theater_curtain", 587.0), ("feather_boa", 270.0), (ATTACK, 5.0)],
        unpopular=[("stage", 1108.0), ("theater_curtain", 503.0), ("basketball", 135.0)],
        definition="top vs bottom quartile of views per subscriber, 150 videos each",
    )
    return ReportData(
        title=title,
        generated_at=WHEN,
        seed=7,
        snapshot_id="20260501T120000Z-1a2b3c4d",
        pipeline=[("videos discovered", 200), ("thumbnails stored", 199)],
        dead_letters=[("vBAD1", "CorruptImage: cannot identify image file"), ("vBAD2", f"InvalidInput: {ATTACK}")],
        evaluation=evaluation,
        popularity=points,
        similar=similar,
        concepts=concepts,
        heatmaps=heatmaps,
        models=[
            {"task": "popularity_regression", "version": "v3", "promoted": True, "metrics": {"spearman": 0.71}},
            {"task": ATTACK, "version": "v1", "promoted": False, "metrics": {"mae": {"value": 0.4}}},
        ],
        predictor={"address": "127.0.0.1:50051", "example": f"client.predict('{ATTACK}')"},
    )


def empty_data() -> ReportData:
    return ReportData(
        title="nothing ran",
        generated_at=WHEN,
        seed=0,
        snapshot_id="",
        pipeline=[],
        dead_letters=[],
        evaluation={},
        popularity=[],
        similar=[],
        concepts=ConceptClouds([], [], ""),
        heatmaps=[],
        models=[],
        predictor={},
    )


@pytest.fixture(scope="module")
def page(evaluation: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    path = build_report(sample_data(with_genre(evaluation), title=f"demo {ATTACK}"), tmp_path_factory.mktemp("r"))
    return path.read_text(encoding="utf-8")


class Tags(HTMLParser):
    """Collects every start tag with its attributes and checks that non-void elements close in order."""

    VOID = {"meta", "img", "br", "link", "input", "hr", "col", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
        else:
            self.open.pop()


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    tags.close()
    return tags


def table_rows(html: str) -> list[tuple[str, list[tuple[set[str], str]]]]:
    """(tr class, [(td classes, text)]) for each body row of the first table in `html`."""

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.rows: list[tuple[str, list[tuple[set[str], str]]]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "tr":
                self.rows.append((found.get("class") or "", []))
            elif tag == "td":
                self.cell = []
                self.rows[-1][1].append((set((found.get("class") or "").split()), ""))

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

        def handle_endtag(self, tag: str) -> None:
            if tag == "td" and self.cell is not None:
                classes, _ = self.rows[-1][1][-1]
                self.rows[-1][1][-1] = (classes, "".join(self.cell).strip())
                self.cell = None

    parser = Rows()
    parser.feed(html)
    return [row for row in parser.rows if row[1]]


# --- the page ------------------------------------------------------------------------------------------------------


def test_the_report_is_one_self_contained_well_formed_file(page: str, tmp_path: Path) -> None:
    path = build_report(sample_data({}), tmp_path / "nested" / "out")
    assert path == tmp_path / "nested" / "out" / "index.html" and path.stat().st_size > 0
    tags = parse(page)
    assert tags.errors == [] and tags.open == []
    for tag, attrs in tags.starts:
        for name in ("src", "href"):
            target = attrs.get(name) or ""
            assert not re.match(r"\s*(https?:)?//", target, re.IGNORECASE), f"<{tag} {name}={target[:60]}>"
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
    assert "<script" not in page.lower() and '<link rel="stylesheet"' not in page
    assert "@import" not in page and "url(" not in page  # no external fonts or stylesheets through CSS


def test_every_section_has_its_heading_and_the_summary_comes_first(page: str) -> None:
    positions = [page.find(f"<h2>{heading}</h2>") for heading in HEADINGS]
    assert all(position >= 0 for position in positions), dict(zip(HEADINGS, positions, strict=True))
    assert positions == sorted(positions)
    summary = page[positions[0] : positions[1]]
    assert "2 inputs dead-lettered" in summary
    assert "view buckets" in summary and "log10 views (regression)" in summary and "best baseline" in summary


def test_every_image_is_an_inline_png_or_jpeg_that_decodes(page: str) -> None:
    sources = [attrs["src"] for tag, attrs in parse(page).starts if tag == "img"]
    # scatter, three confusion matrices, 2 queries with 3 matches each, one heatmap (thumbnail and overlay)
    assert len(sources) == 1 + 3 + 2 * 4 + 2
    for source in sources:
        found = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", source or "")
        assert found is not None, (source or "")[:60]
        image = Image.open(io.BytesIO(base64.b64decode(found.group(2), validate=True)))
        assert image.format == found.group(1).upper()
        image.load()
        assert image.width > 0 and image.height > 0


def test_user_content_is_escaped_everywhere(page: str) -> None:
    assert ATTACK not in page
    assert "alert(1)</" not in page
    for shown in (f"demo {ESCAPED}", f"video 0 {ESCAPED}", f"channel {ESCAPED}", f"query 0 {ESCAPED}"):
        assert shown in page
    assert f"match 0 {ESCAPED}" in page and f"heat {ESCAPED}" in page and f"InvalidInput: {ESCAPED}" in page
    assert f"client.predict(&#x27;{ESCAPED}&#x27;)" in page or f"client.predict('{ESCAPED}')" in page


def test_pipeline_dead_letters_models_and_predictor_are_listed(page: str) -> None:
    assert "<td>videos discovered</td>" in page
    details = page[page.index("<details>") : page.index("</details>")]
    assert "2 dead-lettered inputs" in details and "vBAD1" in details and "CorruptImage" in details
    assert '<span class="tag promoted">promoted</span>' in page and "mae.value <b>0.400</b>" in page
    assert "<code>127.0.0.1:50051</code>" in page and "<pre><code>client.predict" in page


def test_metric_tables_go_time_then_held_out_channels_then_random(page: str, evaluation: dict[str, Any]) -> None:
    split_headings = [page.find(f"<h3>{report_ev.SPLIT_TITLES[split]}</h3>") for split in ev.SPLIT_ORDER]
    assert all(position >= 0 for position in split_headings) and split_headings == sorted(split_headings)
    held_out = page[split_headings[1] : split_headings[2]]
    assert ev.HELD_OUT_CHANNELS in held_out.replace("&#x27;", "'")  # a skipped task says why
    assert "GAP@20" in held_out  # the genre task added on held-out channels
    assert ev.NO_STORE in page.replace("&#x27;", "'")


@pytest.mark.parametrize("task_name", [ev.POPULARITY_BUCKET, ev.POPULARITY_REGRESSION, ev.CHANNEL])
def test_models_come_before_baselines_and_the_best_of_each_column_is_bold(
    evaluation: dict[str, Any], task_name: str
) -> None:
    task = report_ev.find_task(evaluation, task_name, "split_time")
    assert task is not None and not task["skipped"]
    results = report_ev.ordered_results(task)
    rows = table_rows(tables.metric_table(task, results))
    roles = [row_class for row_class, _ in rows]
    assert roles == sorted(roles, key=lambda role: role == "baseline") and {"model", "baseline"} <= set(roles)
    columns = report_ev.columns(results)
    headline = report_ev.headline_key(task)
    for index, column in enumerate(columns, start=1):
        values = [round(result["metrics"][column.key], 3) for result in results]
        best = max(values) if column.higher_is_better else min(values)
        bold = [round(float(cells[index][1].split()[0]), 3) for _, cells in rows if "best" in cells[index][0]]
        assert bold and all(value == best for value in bold), (column.header, values, bold)
        assert len(bold) == values.count(best)
        assert all(("headline" in cells[index][0]) == (column.key == headline) for _, cells in rows)
    if task_name == ev.POPULARITY_REGRESSION:
        assert [c.key for c in columns] == ["mae", "rmse", "r2", "spearman"]
        assert not columns[0].higher_is_better and "[" in rows[0][1][1][1]  # MAE carries its interval


def test_the_summary_judges_each_task_on_its_most_honest_split(evaluation: dict[str, Any]) -> None:
    found = {headline.task: headline for headline in report_ev.headlines(with_genre(evaluation))}
    assert found[ev.POPULARITY_REGRESSION].split == "split_time"
    assert found[ev.POPULARITY_REGRESSION].model == "multimodal"  # the default model, not the best-scoring one
    assert found[ev.GENRE].split == "split_channel" and found[ev.GENRE].baseline == "majority"
    assert report_ev.verdict(0.8, (0.7, 0.9), 0.5, True).startswith("beats the best baseline, which lies outside")
    assert report_ev.verdict(0.8, (0.4, 0.9), 0.5, True).endswith("but within its 95 % interval")
    assert report_ev.verdict(0.4, (0.3, 0.5), 0.5, False).startswith("beats")  # MAE: lower is better
    assert report_ev.verdict(0.4, (0.3, 0.5), 0.5, True) == "does not beat the best baseline"


# --- sections without data -----------------------------------------------------------------------------------------


def test_every_section_says_so_when_it_has_no_data(tmp_path: Path) -> None:
    html = build_report(empty_data(), tmp_path).read_text(encoding="utf-8")
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in html
    for message in (
        "Nothing recorded.",
        "No input was dead-lettered.",
        "No evaluation was run.",
        "No held-out predictions were given.",
        "Not in this evaluation (genre on the held-out channels).",
        "No similarity queries were run.",
        "No concepts were recorded.",
        "No occlusion heatmaps were computed.",
        "No model was registered in this run.",
        "The predictor was not started in this run.",
    ):
        assert message in html, message
    assert "<img" not in html and parse(html).errors == []


def test_confusion_matrices_show_only_what_the_evaluation_holds(evaluation: dict[str, Any]) -> None:
    without_genre = figures.confusions_html(evaluation)
    assert without_genre.count("<img") == 2  # view buckets and channels; genre was skipped
    assert "genre on the held-out channels: skipped" in without_genre
    no_genre_task = {**evaluation, "tasks": [t for t in evaluation["tasks"] if t["task"] != ev.GENRE]}
    assert "Not in this evaluation (genre on the held-out channels)." in figures.confusions_html(no_genre_task)
    with_all = figures.confusions_html(with_genre(evaluation))
    assert with_all.count("<img") == 3 and "two_stream on the held-out channels" in with_all


def test_unreadable_thumbnails_and_empty_grids_do_not_break_the_page(evaluation: dict[str, Any]) -> None:
    data = sample_data(evaluation)
    broken = replace(
        data,
        similar=[SimilarExample("q", "query", b"not a jpeg", [Match("m", "match", 0.5, False, jpeg((1, 2, 3))[:40])])],
        heatmaps=[
            Heatmap("a", "bad bytes", b"\xff\xd8 cut", np.zeros((2, 2)), 3.0),
            Heatmap("b", "no grid", jpeg((9, 9, 9)), np.zeros((0, 0)), 3.0),
            Heatmap("c", "flat", jpeg((9, 9, 9)), np.zeros((2, 2)), 3.0),
        ],
    )
    html = render(broken)
    assert html.count("image unreadable") == 2
    assert "The thumbnail could not be read." in html and "The occlusion grid is empty." in html
    assert "No cell changes the prediction" in html


def test_the_same_data_gives_the_same_page_apart_from_the_timestamp(evaluation: dict[str, Any], tmp_path: Path) -> None:
    data = sample_data(with_genre(evaluation))
    first = build_report(data, tmp_path / "a").read_bytes()
    second = build_report(data, tmp_path / "b").read_bytes()
    assert first == second
    later = render(replace(data, generated_at=datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)))
    assert later != first.decode("utf-8")
    assert later.replace("2027-01-02 03:04:05", "2026-05-01 12:00:00") == first.decode("utf-8")


# --- pieces --------------------------------------------------------------------------------------------------------


def test_the_scatter_caption_uses_the_trainers_definitions() -> None:
    rng = np.random.default_rng(3)
    actual = np.round(rng.uniform(2, 6, 40), 1)  # rounded: ties, which Spearman must average
    predicted = np.round(actual + rng.normal(0, 0.5, 40), 1)
    assert figures.spearman(actual, predicted) == pytest.approx(m.spearman(actual, predicted))
    assert figures.spearman(actual, np.full(40, 3.0)) == 0.0
    points = [
        VideoPoint(str(i), "t", "c", float(a), float(p), 0.25)
        for i, (a, p) in enumerate(zip(actual, predicted, strict=True))
    ]
    caption = figures.popularity_html(points)
    assert f"Spearman ρ = {m.spearman(actual, predicted):.3f}" in caption
    assert f"MAE = {m.mae(actual, predicted):.3f} log10 views" in caption
    inside = np.mean(np.abs(actual - predicted) <= 1.96 * 0.25)
    assert f"{inside:.0%} of actual values fall inside the ±1.96σ band" in caption


def test_the_overlay_paints_raising_regions_red_and_lowering_ones_blue() -> None:
    grey = Image.new("RGB", (40, 20), (128, 128, 128))
    painted = np.asarray(images.overlay(grey, np.array([[1.0, -1.0]]), scale=1.0)).astype(int)
    left, right = painted[10, 2], painted[10, 37]
    assert left[0] > 128 > left[2] and right[2] > 128 > right[0]
    unchanged = np.asarray(images.overlay(grey, np.zeros((3, 4)), scale=0.0))
    assert (unchanged == 128).all()
    upscaled = images.upscale(np.array([[0.0, 1.0]]), 40, 20)
    assert upscaled[10, 0] == 0.0 and upscaled[10, 39] == 1.0 and 0 < upscaled[10, 20] < 1  # bilinear in between


def test_word_clouds_size_by_weight_in_a_fixed_order_with_shared_concepts_grey() -> None:
    popular = [("stage", 3042.0), ("feather_boa", 270.0), ("toyshop", 227.0), ("nan", float("nan")), ("zero", 0.0)]
    unpopular = [("basketball", 135.0), ("stage", 1108.0)]
    left, right = wordcloud.clouds_html(popular, unpopular)
    assert (left, right) == wordcloud.clouds_html(popular[::-1], unpopular[::-1])
    popular_px, unpopular_px = (
        {label: float(size) for size, label in re.findall(r'font-size:([\d.]+)px;color:#\w+" title="([^:"]+)', cloud)}
        for cloud in (left, right)
    )
    assert popular_px["stage"] == wordcloud.LARGEST_PX > popular_px["feather_boa"] > popular_px["toyshop"]
    # One scale for both clouds: the same concept seen less often among unpopular videos is drawn smaller.
    assert popular_px["stage"] > unpopular_px["stage"] > unpopular_px["basketball"]
    assert unpopular_px["basketball"] < popular_px["toyshop"]
    assert "nan" not in popular_px and "zero" not in popular_px
    assert f'color:{wordcloud.SHARED_COLOUR}" title="stage' in left and "feather boa" in left
    assert f'color:{wordcloud.SHARED_COLOUR}" title="feather_boa' not in left
    ranked = [label for label, _ in wordcloud.top_words(popular)]
    assert wordcloud.centre_out(wordcloud.top_words(popular))[1][0] == ranked[0]  # heaviest in the middle


def test_word_clouds_come_out_the_same_in_every_process() -> None:
    """Python salts str hashes per process: colours or order drawn from hash() would change from run to run."""
    script = (
        "from tubelens.devtools.report.wordcloud import clouds_html; "
        "print(clouds_html([('stage', 9.0), ('kimono', 2.0), ('wig', 1.0)], [('altar', 3.0), ('torch', 2.0)]))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1 and "kimono" in runs.pop()


# --- occlusion -----------------------------------------------------------------------------------------------------


def left_half_redness(batch: list[Image.Image]) -> np.ndarray:
    """A fake popularity model that looks only at how red the left half of a picture is."""
    return np.array([np.asarray(im.convert("RGB"))[:, : im.width // 2, 0].mean() / 255 for im in batch])


def test_occlusion_weighs_exactly_the_cells_the_model_looks_at() -> None:
    pixels = np.zeros((60, 80, 3), dtype=np.uint8)
    pixels[:, :40, 0] = 255  # a red left half, a black right half
    image = Image.fromarray(pixels)
    calls: list[int] = []

    def predict(batch: list[Image.Image]) -> np.ndarray:
        calls.append(len(batch))
        return left_half_redness(batch)

    grid, baseline = occlusion_grid(image, predict, rows=6, cols=8)
    assert calls == [1 + 6 * 8]  # every occluded copy, and the whole image, in one call
    assert grid.shape == (6, 8)
    assert (grid[:, :4] > 0).all() and (grid[:, 4:] == 0).all()
    assert baseline == pytest.approx(float(left_half_redness([image])[0]))
    # Each left cell is 10x10 of 60x40 red pixels; the mean colour it is filled with keeps half the red.
    assert grid[0, 0] == pytest.approx(100 * (1 - 128 / 255) / (60 * 40))


def test_occlusion_grids_cover_uneven_images_and_reject_bad_grids() -> None:
    assert cell_edges(61, 6).tolist() == [0, 10, 20, 30, 41, 51, 61]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (61, 83, 3), dtype=np.uint8))
    seen: list[Image.Image] = []

    def mean_brightness(batch: list[Image.Image]) -> np.ndarray:
        seen.extend(batch)
        return np.array([np.asarray(im, dtype=np.float64).mean() for im in batch])

    grid, baseline = occlusion_grid(image, mean_brightness)
    assert grid.shape == (6, 8) and all(copy.size == image.size for copy in seen)
    changed = sum((np.asarray(copy) != np.asarray(image)).any(axis=2).sum() for copy in seen[1:])
    assert changed <= 61 * 83  # the cells tile the image: no pixel is hidden twice
    flat = Image.new("RGB", (32, 24), (90, 30, 200))
    assert (occlusion_grid(flat, mean_brightness, rows=3, cols=4)[0] == 0).all()  # nothing to hide in a flat image
    with pytest.raises(ValueError, match="at least one row"):
        occlusion_grid(image, mean_brightness, rows=0)
    with pytest.raises(ValueError, match="empty cells"):
        occlusion_grid(flat, mean_brightness, rows=25)
    with pytest.raises(ValueError, match="returned 1 values for 49 images"):
        occlusion_grid(image, lambda batch: np.zeros(1))
