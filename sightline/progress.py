"""Progress bars that also show in a log.

rich draws a progress bar only on an interactive terminal. Written to a file, a pipe or a
CI log it prints nothing until the bar stops, so a 20-minute benchmark run under ``nohup``
left an empty log until its end. ``progress_bar`` returns rich's bar on a terminal and,
anywhere else, a bar that prints its row as a line of text when it changes, at most once
every ``every_s`` seconds per task, and always when the task completes.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.text import Text


class LoggedProgress(Progress):
    """A ``Progress`` for a console that is not a terminal: each change is a printed line."""

    def __init__(self, *columns: str | ProgressColumn, every_s: float = 15.0, **kwargs: Any) -> None:
        # Transient: rich's own final render would repeat the last line; ``stop`` prints
        # whatever changed since a task's last line instead.
        super().__init__(*columns, **{**kwargs, "transient": True})
        self.every_s = every_s
        self._logged_at: dict[TaskID, float] = {}
        self._logged_finished: set[TaskID] = set()
        self._unlogged: set[TaskID] = set()

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def stop(self) -> None:
        for task_id in sorted(self._unlogged):
            self._log(task_id, force=True)
        super().stop()

    def _log(self, task_id: TaskID, force: bool = False) -> None:
        task = next((t for t in self.tasks if t.id == task_id), None)
        if task is None or task_id in self._logged_finished:
            return
        now = time.monotonic()
        if task.finished:
            self._logged_finished.add(task_id)
        elif not force and now - self._logged_at.get(task_id, -math.inf) < self.every_s:
            self._unlogged.add(task_id)
            return
        self._unlogged.discard(task_id)
        self._logged_at[task_id] = now
        self.console.print(self.row_text(task), markup=False, highlight=False, soft_wrap=True)

    def row_text(self, task: Task) -> str:
        """The task's row as one line of plain text, the bar as a percentage: a log is
        read, and grepped, long after the fact, and nothing in it may be cut to a width."""
        parts = []
        for column in self.columns:
            if isinstance(column, BarColumn):
                parts.append(f"{task.percentage:.0f}%" if task.total else "")
                continue
            cell = Text.from_markup(column.format(task=task)) if isinstance(column, str) else column(task)
            parts.append(cell.plain if isinstance(cell, Text) else str(cell))
        return " ".join(part.strip() for part in parts if part.strip())


def progress_bar(*columns: str | ProgressColumn, console: Console | None = None, every_s: float = 15.0,
                 **kwargs: Any) -> Progress:
    """rich's ``Progress(*columns, console=console, **kwargs)`` on a terminal; elsewhere one
    that prints its row at most every ``every_s`` seconds (and when a task completes)."""
    console = console or get_console()
    if console.is_interactive:
        return Progress(*columns, console=console, **kwargs)
    return LoggedProgress(*columns, console=console, every_s=every_s, **kwargs)
