"""The progress display of ``jobchain run``, driven by the worker's ``jobchain_progress`` event.

The worker's monitor thread emits the event a few times a second; this
plugin redraws a rich live display on a terminal, or prints a plain line
every few seconds when stdout is not a terminal. The worker threads that run
jobs never touch it, so the display costs the jobs nothing.

The live line fits the terminal's width at every redraw (a resize included)
and never wraps: the least important fields are left out first (the elapsed
time, the label, the bar (which shrinks before it goes), the rate; see
:mod:`jobchain.cli._fit`).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from jobchain.cli._fit import Part, fit_line
from jobchain.cli.output import fmt_seconds
from jobchain.hookspecs import hookimpl

__all__ = ["ProgressDisplay"]


#: the widest and narrowest the live display's bar gets
BAR_WIDTH = (8, 30)


def _elapsed(seconds: float) -> str:
    """``0:01:05``, as rich's elapsed-time column shows it."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _bar(finished: int, total: int, width: int) -> Text:
    filled = width if total <= 0 else min(width, round(width * finished / total))
    bar = Text("━" * filled, style="green")
    bar.append("━" * (width - filled), style="bright_black")
    return bar


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
        self.label = label
        self._started = time.monotonic()
        self._shown: dict[str, Any] = {"done": 0, "failed": 0, "left": total, "rate": 0.0, "eta": "-"}
        self._progress: Live | None = None
        if mode == "live":
            self._progress = Live(
                _Fitted(self), console=console, auto_refresh=False, transient=False, redirect_stderr=False
            )

    def render(self, width: int) -> Text:
        """The live line for a terminal ``width`` cells wide: never longer, fields left out as needed."""
        state = self._shown
        finished = self.total - state["left"]
        bar = BAR_WIDTH
        parts = [
            Part(rank=7, text=Text(self.label, style="bold")),
            Part(rank=6, draw=lambda w: _bar(finished, self.total, w), min_width=bar[0], max_width=bar[1]),
            Part(rank=0, text=Text(f"{finished:>{len(str(self.total))}}/{self.total}")),
            Part(rank=1, text=Text.assemble("done ", (str(state["done"]), "green")), group="stats"),
            Part(rank=2, text=Text.assemble("failed ", (str(state["failed"]), "red")), group="stats"),
            Part(rank=4, text=Text(f"left {state['left']}"), group="stats"),
            Part(rank=5, text=Text(f"{state['rate']:,.1f} jobs/s"), group="stats"),
            Part(rank=3, text=Text(f"ETA {state['eta']}"), group="stats"),
            Part(rank=8, text=Text(_elapsed(time.monotonic() - self._started), style="yellow")),
        ]
        return fit_line(parts, width)

    def start(self) -> None:
        """Show the display (a live one) or the first line (plain): the run is under way."""
        self._started = time.monotonic()
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
            if self._progress is not None:
                self._shown = state
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


class _Fitted:
    """The live line as a rich renderable: drawn at the console's width each time it is refreshed."""

    def __init__(self, display: ProgressDisplay) -> None:
        self.display = display

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.display.render(options.max_width)
