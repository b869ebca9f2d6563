"""Progress off a terminal: one line when a stage starts, a heartbeat while it moves, one when it ends, each with
counts and rate; as log records when given a logger; nothing extra on a terminal."""

from __future__ import annotations

import io
import logging
import re
import time

from rich.console import Console

from tubelens.progress import StageProgress


def piped() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=120), out


def test_off_a_terminal_each_stage_writes_its_start_and_its_end_with_counts_and_rate() -> None:
    console, out = piped()
    with StageProgress(console=console) as progress:
        crawl = progress.add_task("crawler", total=40)
        for _ in range(40):
            progress.advance(crawl)
        embed = progress.add_task("embedding", total=10)
        progress.update(embed, completed=4)
    lines = out.getvalue().splitlines()
    assert lines[0] == "crawler: started, 40 to do"
    assert re.fullmatch(r"crawler: done: 40/40 in \d+\.\ds, [\d.]+/s", lines[1]), lines[1]
    assert lines[2] == "embedding: started, 10 to do"
    assert re.fullmatch(r"embedding: stopped at 4/10 in \d+\.\ds, [\d.]+/s", lines[3]), lines[3]
    assert len(lines) == 4


def test_a_long_stage_writes_a_heartbeat_so_it_never_looks_hung() -> None:
    console, out = piped()
    with StageProgress(console=console, heartbeat_s=0.05) as progress:
        task = progress.add_task("preprocessor", total=None)
        progress.update(task, completed=3)
        time.sleep(0.06)
        progress.update(task, completed=7)
    lines = out.getvalue().splitlines()
    assert lines[0] == "preprocessor: started"
    assert re.fullmatch(r"preprocessor: 7 in \d+\.\ds, [\d.]+/s", lines[1]), lines
    assert lines[-1].startswith("preprocessor: stopped at 7 in")


def test_with_a_logger_the_lines_are_log_records(caplog) -> None:
    console, out = piped()
    caplog.set_level(logging.INFO, logger="test.progress")
    with StageProgress(console=console, logger=logging.getLogger("test.progress")) as progress:
        task = progress.add_task("ridge", total=2)
        progress.advance(task, 2)
    assert out.getvalue() == ""
    records = [r for r in caplog.records if r.name == "test.progress"]
    assert [r.getMessage().split(":")[1].strip() for r in records] == ["started, 2 to do", "done"]
    assert (records[-1].stage, records[-1].completed, records[-1].total) == ("ridge", 2, 2)


def test_on_a_terminal_it_is_rich_progress_and_writes_no_lines_of_its_own() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with StageProgress(console=console) as progress:
        task = progress.add_task("crawler", total=2)
        progress.advance(task, 2)
    assert "started" not in out.getvalue() and "crawler" in out.getvalue()
