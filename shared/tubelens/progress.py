"""Progress that shows on a terminal and in logs alike.

On a terminal `StageProgress` is rich's live progress display. Anywhere else (a pipe, a file, a CI log, a pod's
stdout) rich draws nothing until the end, so a long stage looks like a hang: there it writes plain lines instead,
one when a stage starts, one every `heartbeat_s` while it moves, and one when it ends, each with its counts, its
rate and the time spent. A finished stage's line waits for the next stage to start (or the progress to stop), so
that it carries the stage's last word (a summary set as its description once it is done). With a `logger` the
lines are log records (JSON in a service); without, console lines.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rich import get_console
from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

HEARTBEAT_S = 15.0


class StageProgress(Progress):
    def __init__(
        self,
        *columns: str | ProgressColumn,
        console: Console | None = None,
        disable: bool = False,
        logger: logging.Logger | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        **kwargs: Any,
    ) -> None:
        console = console or get_console()
        self.lines = not disable and not console.is_terminal
        super().__init__(*columns, console=console, disable=disable or self.lines, **kwargs)
        self.logger = logger
        self.heartbeat_s = heartbeat_s
        self._began: dict[TaskID, float] = {}
        self._last_line: dict[TaskID, float] = {}
        self._ended: set[TaskID] = set()
        self._finished_at: dict[TaskID, float] = {}  # when each stage reached its total: its time and rate end there

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        self._end_finished()
        task_id = super().add_task(description, *args, **kwargs)
        if self.lines:
            self._began[task_id] = self._last_line[task_id] = time.monotonic()
            total = self._tasks[task_id].total
            self._write(f"{description}: started" + (f", {total:g} to do" if total is not None else ""), task_id)
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self._maybe_write(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_write(task_id)

    def stop(self) -> None:
        super().stop()
        if self.lines:
            self._end_finished()
            for task_id in self._began:
                if task_id not in self._ended:
                    self._end(task_id, "stopped at")

    def _end_finished(self) -> None:
        for task_id in self._began:
            task = self._tasks[task_id]
            if task_id not in self._ended and task.total is not None and task.completed >= task.total:
                self._end(task_id, "done:")

    def _maybe_write(self, task_id: TaskID) -> None:
        if not self.lines or task_id in self._ended or task_id not in self._began:
            return
        task = self._tasks[task_id]
        if task.total is not None and task.completed >= task.total:
            self._finished_at.setdefault(task_id, time.monotonic())
            return  # its end line waits for the next stage or the stop, with its final description
        if time.monotonic() - self._last_line[task_id] >= self.heartbeat_s:
            self._last_line[task_id] = time.monotonic()
            self._write(f"{task.description}: {self._counts(task_id)}", task_id)

    def _end(self, task_id: TaskID, verb: str) -> None:
        self._ended.add(task_id)
        self._write(f"{self._tasks[task_id].description}: {verb} {self._counts(task_id)}", task_id)

    def _counts(self, task_id: TaskID) -> str:
        task = self._tasks[task_id]
        seconds = self._finished_at.get(task_id, time.monotonic()) - self._began[task_id]
        done = f"{task.completed:g}" + (f"/{task.total:g}" if task.total is not None else "")
        rate = f", {task.completed / seconds:.1f}/s" if seconds > 0 and task.completed else ""
        return f"{done} in {seconds:.1f}s{rate}"

    def _write(self, line: str, task_id: TaskID) -> None:
        if self.logger is not None:
            task = self._tasks[task_id]
            extra = {"stage": task.description, "completed": task.completed, "total": task.total}
            self.logger.info(line, extra=extra)
        else:
            self.console.print(line, markup=False, highlight=False)
