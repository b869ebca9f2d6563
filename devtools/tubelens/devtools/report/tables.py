"""The report's tables: what the pipeline processed, every model beside its baselines per split, the registry."""

from __future__ import annotations

import math
from typing import Any

from tubelens.devtools.report import evaluation as ev
from tubelens.devtools.report.markup import empty, table, text

LEGEND = (
    "Splits run from the most honest to the most flattering: time (train on the oldest videos, test on the newest), "
    "held-out channels (no test channel seen in training), random. In each table the models come first and the "
    "baselines (grey, italic) after them; the best value of each column is bold; the shaded column is the task's "
    "headline metric; brackets hold 95 % bootstrap intervals. A model that cannot beat its baselines has learned "
    "nothing the baselines did not already know."
)


def pipeline_html(pipeline: list[tuple[str, int]], dead_letters: list[tuple[str, str]]) -> str:
    rows = [(text(what), text(_count(count))) for what, count in pipeline]
    processed = table(("what", "count"), rows, css="pipeline", numeric=(1,)) if rows else empty("Nothing recorded.")
    return processed + "\n" + dead_letters_html(dead_letters)


def dead_letters_html(dead_letters: list[tuple[str, str]]) -> str:
    """Every dead-lettered input with its reason, folded: the summary already gives the count."""
    if not dead_letters:
        return empty("No input was dead-lettered.")
    rows = [(f"<code>{text(video_id)}</code>", text(reason)) for video_id, reason in dead_letters]
    listing = table(("video id", "reason"), rows, css="dead-letters")
    return f"<details>\n<summary>{_plural(len(dead_letters), 'dead-lettered input')}</summary>\n{listing}\n</details>"


def evaluation_html(evaluation: dict[str, Any]) -> str:
    if not evaluation.get("tasks"):
        return empty("No evaluation was run.")
    parts = [f'<p class="legend">{text(LEGEND)}</p>']
    for split in ev.split_order(evaluation):
        tasks = ev.tasks_of_split(evaluation, split)
        if tasks:
            parts.append(f"<h3>{text(ev.SPLIT_TITLES.get(split, split))}</h3>")
            parts.extend(task_html(task) for task in tasks)
    return "\n".join(parts)


def task_html(task: dict[str, Any]) -> str:
    name = task.get("task", "")
    heading = f'<h4>{text(ev.TASK_TITLES.get(name, name))} <span class="rows">{text(_rows(task))}</span></h4>'
    if task.get("skipped"):
        return f'{heading}\n<p class="skipped">{text(task["skipped"])}</p>'
    results = ev.ordered_results(task)
    if not results:
        return f"{heading}\n{empty('No model was scored.')}"
    return f"{heading}\n{metric_table(task, results)}\n{notes_html(results)}"


def metric_table(task: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """Models above baselines; best per column in bold; the headline column shaded."""
    columns = ev.columns(results)
    headline = ev.headline_key(task)
    best = {column.key: ev.best(results, column) for column in columns}
    heads = "".join(
        f'<th class="num{" headline" if c.key == headline else ""}">{text(c.header)}'
        f"{' [95 % CI]' if c.interval else ''}</th>"
        for c in columns
    )
    rows = []
    for result in results:
        role = ev.BASELINE if result.get("role") == ev.BASELINE else ev.MODEL
        cells = "".join(metric_cell(result, c, best[c.key], c.key == headline) for c in columns)
        tag = f'<span class="tag {role}">{role}</span>'
        rows.append(f'<tr class="{role}"><td>{text(result.get("name", ""))} {tag}</td>{cells}</tr>')
    target = f"<caption>target: {text(task['target'])}</caption>" if task.get("target") else ""
    body = "\n".join(rows)
    head = f"<thead><tr><th>model</th>{heads}</tr></thead>"
    return f'<table class="metrics">{target}\n{head}\n<tbody>\n{body}\n</tbody></table>'


def metric_cell(result: dict[str, Any], column: ev.Column, best: float | None, headline: bool) -> str:
    classes = ["num"] + (["best"] if ev.is_best(result, column, best) else []) + (["headline"] if headline else [])
    bounds = ev.interval(result, column.interval)
    interval = f' <span class="ci">{ev.fmt_interval(bounds)}</span>' if bounds else ""
    return f'<td class="{" ".join(classes)}">{ev.fmt(ev.value(result, column.key))}{interval}</td>'


def notes_html(results: list[dict[str, Any]]) -> str:
    notes = [f"<li><b>{text(r.get('name', ''))}</b>: {text(r['note'])}</li>" for r in results if r.get("note")]
    return f'<ul class="notes">{"".join(notes)}</ul>' if notes else ""


def models_html(models: list[dict[str, Any]]) -> str:
    if not models:
        return empty("No model was registered in this run.")
    rows = []
    for model in models:
        promoted = '<span class="tag promoted">promoted</span>' if model.get("promoted") else ""
        rows.append(
            (text(model.get("task", "")), f"<code>{text(model.get('version', ''))}</code>", promoted,
             metrics_summary(model.get("metrics") or {}))
        )  # fmt: skip
    return table(("task", "version", "promoted", "metrics"), rows, css="models")


def metrics_summary(metrics: dict[str, Any]) -> str:
    """A registry entry's metrics as "name value" pairs, nested dicts flattened with dots."""
    pairs = [f"{text(key)} <b>{text(_number(value))}</b>" for key, value in flatten(metrics)]
    return " · ".join(pairs) if pairs else "—"


def flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    flat: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        flat.extend(flatten(value, f"{name}.") if isinstance(value, dict) else [(name, value)])
    return flat


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.3f}"
    return str(value)


def _count(count: Any) -> str:
    return f"{count:,}" if isinstance(count, int) and not isinstance(count, bool) else str(count)


def _rows(task: dict[str, Any]) -> str:
    rows = task.get("rows") or {}
    return " · ".join(f"{part} {rows[part]}" for part in ("train", "val", "test") if part in rows)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
