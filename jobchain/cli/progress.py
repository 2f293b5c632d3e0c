"""The progress display of ``jobchain run``, driven by the worker's ``jobchain_progress`` event.

The worker's monitor thread emits the event a few times a second; this
plugin redraws a rich live display on a terminal, or prints a plain line
every few seconds when stdout is not a terminal. The worker threads that run
jobs never touch it, so the display costs the jobs nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from jobchain.cli.output import fmt_seconds
from jobchain.hookspecs import hookimpl

__all__ = ["ProgressDisplay"]


def _eta(left: int | None, rate: float) -> str:
    if left is None:
        return "-"
    if left == 0:
        return "0s"
    if rate <= 0:
        return "?"
    return fmt_seconds(left / rate)


class ProgressDisplay:
    """A plugin showing total / done / failed / left, rate and ETA.

    ``mode`` is ``live`` (rich, on ``console``) or ``plain`` (a line on
    ``stream`` at most every ``every`` seconds, and one at the end).
    """

    def __init__(
        self,
        total: int,
        *,
        mode: str,
        console: Console | None = None,
        stream: TextIO | None = None,
        every: float = 2.0,
        label: str = "jobchain run",
    ) -> None:
        self.total = total
        self.mode = mode
        self.every = every
        self.stream = stream
        self._lock = threading.Lock()
        self._last_line = 0.0
        self._last: dict[str, Any] | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if mode == "live":
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=30, complete_style="green", finished_style="green"),
                TextColumn("{task.completed:>6.0f}/{task.total:.0f}"),
                TextColumn(
                    "done [green]{task.fields[done]}[/] · failed [red]{task.fields[failed]}[/] · "
                    "left {task.fields[left]}"
                ),
                TextColumn("· {task.fields[rate]:,.1f} jobs/s · ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                console=console,
                auto_refresh=False,
                transient=False,
            )
            self._task = self._progress.add_task(
                label, total=total, done=0, failed=0, left=total, rate=0.0, eta="-"
            )

    def start(self) -> None:
        """Show the display (a live one) or the first line (plain): the run is under way."""
        if self._progress is not None:
            self._progress.start()
            self._progress.refresh()
        elif self.mode == "plain":
            self._line({"done": 0, "failed": 0, "left": self.total, "rate": 0.0, "eta": "-"})
        self._last_line = time.monotonic()

    def stop(self) -> None:
        """Draw the final numbers and release the terminal."""
        if self._progress is not None:
            self._progress.refresh()
            self._progress.stop()
        elif self.mode == "plain" and self._last is not None:
            self._line(self._last)

    @hookimpl
    def jobchain_progress(
        self, total: int | None, done: int, failed: int, left: int | None, rate: float
    ) -> None:
        self.update(done=done, failed=failed, left=left, rate=rate)

    def update(self, *, done: int, failed: int, left: int | None, rate: float) -> None:
        """Show new counts (called from the worker's monitor thread, and once at the end)."""
        if left is None:
            left = max(0, self.total - done - failed)
        state = {"done": done, "failed": failed, "left": left, "rate": rate, "eta": _eta(left, rate)}
        with self._lock:
            self._last = state
            if self._progress is not None and self._task is not None:
                self._progress.update(
                    self._task,
                    completed=self.total - left,
                    done=done,
                    failed=failed,
                    left=left,
                    rate=rate,
                    eta=state["eta"],
                )
                self._progress.refresh()
                return
            if self.mode != "plain":
                return
            now = time.monotonic()
            if now - self._last_line < self.every:
                return
            self._last_line = now
        self._line(state)

    def _line(self, state: dict[str, Any]) -> None:
        finished = self.total - state["left"]
        pct = 100.0 * finished / self.total if self.total else 100.0
        stream = self.stream or sys.stderr
        stream.write(
            f"progress: {finished}/{self.total} ({pct:.0f}%) done={state['done']} failed={state['failed']} "
            f"left={state['left']} rate={state['rate']:.1f}/s eta={state['eta']}\n"
        )
        stream.flush()
