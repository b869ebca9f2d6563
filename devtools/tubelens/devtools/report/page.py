"""The page: one self-contained HTML file (inline CSS, images as data URIs, no script), summary first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tubelens.devtools.report import evaluation as ev
from tubelens.devtools.report.data import ConceptClouds, ReportData
from tubelens.devtools.report.figures import confusions_html, heatmaps_html, popularity_html, similar_html, spearman
from tubelens.devtools.report.markup import empty, section, text
from tubelens.devtools.report.tables import evaluation_html, models_html, pipeline_html
from tubelens.devtools.report.wordcloud import clouds_html

SECTIONS = (
    ("pipeline", "Pipeline"),
    ("evaluation", "Evaluation: models against baselines"),
    ("popularity", "Predicted vs actual views"),
    ("confusion", "Confusion matrices"),
    ("similar", "Similar thumbnails"),
    ("concepts", "Concepts in popular and unpopular videos"),
    ("heatmaps", "What in a thumbnail drives its predicted views"),
    ("models", "Registered models"),
    ("predictor", "Predictor"),
)

CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 0 0 12px; font-size: 21px; }
h3 { margin: 18px 0 8px; font-size: 17px; }
h4 { margin: 16px 0 4px; font-size: 15px; }
.meta { margin: 0 0 16px; color: #5a6270; }
section { margin: 20px 0; padding: 16px 24px; background: #fff; border: 1px solid #e3e6ea; border-radius: 8px; }
nav { margin: 12px 0 0; font-size: 14px; }
nav a { margin-right: 14px; color: #1f4fbf; text-decoration: none; white-space: nowrap; }
.summary li { margin: 4px 0; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
caption { caption-side: top; text-align: left; color: #5a6270; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e6ea; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.model td:first-child { font-weight: 600; }
tr.baseline td { background: #f3f4f6; color: #4b5260; font-style: italic; }
td.best { font-weight: 700; color: #111; }
.headline { background: #fff4cf; }
tr.baseline td.headline { background: #efe6c6; }
.ci { color: #6b7280; font-size: 12px; font-weight: 400; }
.rows { color: #6b7280; font-weight: 400; font-size: 13px; margin-left: 8px; }
.tag { padding: 1px 7px; border-radius: 9px; font-size: 11px; font-style: normal; font-weight: 600;
  background: #e8eefc; color: #1f4fbf; }
.tag.baseline { background: #e5e7eb; color: #4b5563; }
.tag.promoted { background: #dcfce7; color: #166534; }
.tag.dup { background: #fde2e1; color: #a61b1b; }
.legend, .notes { color: #4b5260; font-size: 13px; }
.empty, .skipped { color: #6b7280; font-style: italic; }
figure { margin: 0; }
figcaption { color: #4b5260; font-size: 13px; }
img { max-width: 100%; height: auto; display: block; }
figure.wide img { width: 640px; }
.grid3 { display: grid; grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); gap: 16px; align-items: start; }
.similar { display: grid; grid-template-columns: 220px 1fr; gap: 16px; padding: 12px 0; border-top: 1px solid #e3e6ea; }
.matches { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.thumb img { width: 100%; aspect-ratio: 16 / 9; object-fit: contain; background: #111; border-radius: 4px; }
.thumb.query img { outline: 3px solid #1f77b4; outline-offset: 1px; }
.thumb.duplicate img { outline: 3px solid #d62728; outline-offset: 1px; }
.score { font-weight: 700; font-variant-numeric: tabular-nums; }
.noimage { display: flex; align-items: center; justify-content: center; aspect-ratio: 16 / 9; background: #e5e7eb;
  color: #6b7280; font-size: 12px; border-radius: 4px; }
.clouds { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.cloud { display: flex; flex-wrap: wrap; justify-content: center; align-items: center; gap: 2px 12px;
  min-height: 180px; padding: 12px; background: #fbfbfd; border: 1px solid #eef0f3; border-radius: 8px;
  line-height: 1.15; }
.word { white-space: nowrap; }
.heatmaps { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 20px; }
.heatmap h3 { margin-top: 0; }
.clip { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 6px; }
.colourbar { margin: 8px 0 4px; }
.colourbar .bar { height: 12px; border-radius: 3px;
  background: linear-gradient(to right, rgba(31, 119, 180, .9), #fff, rgba(214, 39, 40, .9)); }
.colourbar .ticks { display: flex; justify-content: space-between; font-size: 12px; color: #4b5260; }
.colourbar .ticks span:last-child { text-align: right; }
pre { padding: 12px 16px; background: #0f172a; color: #e2e8f0; border-radius: 6px; overflow-x: auto; font-size: 13px; }
details summary { cursor: pointer; color: #1f4fbf; margin: 6px 0; }
code { font-size: 13px; }
@media (max-width: 760px) {
  main { padding: 12px; }
  .similar, .clouds, .heatmaps { grid-template-columns: 1fr; }
}
"""


def build_report(data: ReportData, out_dir: Path) -> Path:
    """Write out_dir/index.html (self-contained) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(render(data), encoding="utf-8")
    return path


def render(data: ReportData) -> str:
    """The whole page; the same data (timestamp included) gives the same text."""
    bodies = {
        "pipeline": pipeline_html(data.pipeline, data.dead_letters),
        "evaluation": evaluation_html(data.evaluation),
        "popularity": popularity_html(data.popularity),
        "confusion": confusions_html(data.evaluation),
        "similar": similar_html(data.similar),
        "concepts": concepts_html(data.concepts),
        "heatmaps": heatmaps_html(data.heatmaps),
        "models": models_html(data.models),
        "predictor": predictor_html(data.predictor),
    }
    sections = "".join(section(anchor, title, bodies[anchor]) for anchor, title in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{text(data.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{header_html(data)}{summary_html(data)}{sections}</main>\n</body>\n</html>\n"
    )


def header_html(data: ReportData) -> str:
    when = data.generated_at.isoformat(sep=" ", timespec="seconds")
    meta = f"generated {text(when)} · seed {text(data.seed)} · snapshot <code>{text(data.snapshot_id or '—')}</code>"
    links = "".join(f'<a href="#{anchor}">{text(title)}</a>' for anchor, title in SECTIONS)
    return f'<header>\n<h1>{text(data.title)}</h1>\n<p class="meta">{meta}</p>\n<nav>{links}</nav>\n</header>\n'


def summary_html(data: ReportData) -> str:
    """The page in a few lines: what ran, whether each model beats its baselines, where to find what."""
    items = [_processed(data)]
    items.extend(_headline(headline) for headline in ev.headlines(data.evaluation))
    items.append(_popularity_line(data))
    items.append(_models_line(data.models))
    address = data.predictor.get("address") if data.predictor else None
    items.append(f"Predictor serving at <code>{text(address)}</code>." if address else "The predictor was not started.")
    body = "".join(f"<li>{item}</li>" for item in items if item)
    return section("summary", "Summary", f'<ul class="summary">{body}</ul>')


def _processed(data: ReportData) -> str:
    rows = data.evaluation.get("rows")
    videos = f"{rows:,} videos in the dataset snapshot" if isinstance(rows, int) else "no dataset snapshot evaluated"
    dead = len(data.dead_letters)
    letters = f'<a href="#pipeline">{dead} input{"" if dead == 1 else "s"} dead-lettered</a>'
    return f"{text(videos)}; {letters}."


def _headline(headline: ev.Headline) -> str:
    task = ev.TASK_TITLES.get(headline.task, headline.task)
    split = ev.SPLIT_SHORT.get(headline.split, headline.split)
    interval = f" {ev.fmt_interval(headline.model_interval)}" if headline.model_interval else ""
    model = f"{headline.model} {headline.metric} {ev.fmt(headline.model_value)}{interval}"
    rival = f" vs {headline.baseline} {ev.fmt(headline.baseline_value)}" if headline.baseline else ""
    return f"<b>{text(task)}</b> ({text(split)}): {text(model + rival)}: {text(headline.verdict)}."


def _popularity_line(data: ReportData) -> str:
    points = [p for p in data.popularity if np.isfinite(p.actual_log10_views) and np.isfinite(p.predicted_log10_views)]
    if len(points) < 2:
        return ""
    actual = np.array([p.actual_log10_views for p in points])
    predicted = np.array([p.predicted_log10_views for p in points])
    return (
        f'<a href="#popularity">Held-out views</a>: Spearman {spearman(actual, predicted):.3f}, '
        f"MAE {np.mean(np.abs(actual - predicted)):.3f} log10 views over {len(points)} newest videos."
    )


def _models_line(models: list[dict]) -> str:
    if not models:
        return ""
    promoted = [m for m in models if m.get("promoted")]
    names = ", ".join(f"{m.get('task', '')} {m.get('version', '')}" for m in promoted)
    return (
        f'<a href="#models">{len(models)} model version{"" if len(models) == 1 else "s"} registered</a>, '
        f"{len(promoted)} promoted{': ' + text(names) if names else ''}."
    )


def concepts_html(concepts: ConceptClouds) -> str:
    definition = f'<p class="legend">{text(concepts.definition)}</p>' if concepts.definition else ""
    if not concepts.popular and not concepts.unpopular:
        return definition + empty("No concepts were recorded.")
    popular, unpopular = clouds_html(concepts.popular, concepts.unpopular)
    note = (
        '<p class="legend">ImageNet concepts the embedding service saw; larger means seen more often or more '
        "strongly (one scale for both clouds). Grey concepts are in both groups' top words, so they cannot tell "
        "the groups apart; coloured ones are in one group only.</p>"
    )
    columns = f'<div class="clouds"><div><h3>Popular</h3>{popular}</div><div><h3>Unpopular</h3>{unpopular}</div></div>'
    return definition + columns + note


def predictor_html(predictor: dict[str, str]) -> str:
    if not predictor or not predictor.get("address"):
        return empty("The predictor was not started in this run.")
    body = f"<p>gRPC predictor at <code>{text(predictor['address'])}</code>.</p>"
    if predictor.get("example"):
        body += f"\n<p>A client:</p>\n<pre><code>{text(predictor['example'])}</code></pre>"
    return body
