"""Printing to stdout: rich tables on a terminal, plain aligned text otherwise.

Every command prints through these helpers so that piping a command into
``grep`` or a file gives stable text with no colour codes or box drawing,
while a terminal gets rich's tables.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import click
from attrs import frozen
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = [
    "Column",
    "call_text",
    "console",
    "echo_json",
    "fmt_age",
    "fmt_seconds",
    "fmt_time",
    "is_tty",
    "json_text",
    "plural",
    "print_table",
    "printable",
    "state_style",
]

#: words whose plural is not the word and an "s"
_PLURALS = {"retry": "retries", "process": "processes", "entry": "entries"}


def plural(count: int, word: str) -> str:
    """``1 thread``, ``2 threads``, ``1 retry``, ``3 retries``: the count and its word."""
    return f"{count} {word if count == 1 else _PLURALS.get(word, word + 's')}"


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters shown as escapes (``\\x1b``, ``\\n``).

    Names come from the backend (queues, tasks, workers): whoever could submit
    could otherwise move the cursor, recolour or clear the terminal of
    whoever runs ``jobchain status``.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


_STATE_STYLES = {
    "completed": "green",
    "succeeded": "green",
    "running": "yellow",
    "queued": "cyan",
    "delayed": "cyan",
    "pending": "cyan",
    "failed": "bold red",
    "halted": "red",
    "not executed": "dim",
    "not_executed": "dim",
}


@frozen
class Column:
    header: str
    justify: str = "left"  # "left" or "right"


def is_tty() -> bool:
    """True when stdout is a terminal (rich output), False when piped (plain text)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr), created now so it sees the current stream."""
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def state_style(state: str) -> str:
    return _STATE_STYLES.get(state, "")


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    footer: Sequence[Any] | None = None,
    styles: Sequence[str | None] | None = None,
) -> None:
    """Print a table; ``footer`` is a totals row, ``styles`` a rich style per row (terminal only)."""
    cells = [[_cell(v) for v in row] for row in rows]
    foot = [_cell(v) for v in footer] if footer is not None else None
    if is_tty():
        table = Table(
            title=title,
            title_justify="left",
            title_style="bold",
            box=box.SIMPLE_HEAD,
            show_footer=foot is not None,
            pad_edge=False,
        )
        for index, column in enumerate(columns):
            table.add_column(
                column.header,
                justify="right" if column.justify == "right" else "left",
                footer=escape(foot[index]) if foot is not None else "",
                footer_style="bold",
            )
        for index, row in enumerate(cells):
            style = styles[index] if styles is not None and index < len(styles) else None
            table.add_row(*(escape(c) for c in row), style=style or None)
        console().print(table)
        return
    all_rows = [[c.header for c in columns], *cells, *([foot] if foot is not None else [])]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(columns))]
    if title:
        click.echo(title)
    for row in all_rows:
        parts = [
            cell.rjust(widths[i]) if columns[i].justify == "right" else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        click.echo("  ".join(parts).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return printable(str(value))  # names come from the backend: no raw control characters


def json_text(value: Any) -> str:
    """A value as one line of JSON (``null``, ``"x"``, ``{"a": 1}``), never as a Python repr."""
    return json.dumps(value, ensure_ascii=False, default=str)


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when anything was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def call_text(args: Sequence[Any], kwargs: Any, limit: int | None = 100) -> str:
    """``("x", 3, n=[1, 2])``: a job's arguments as JSON, as ``submit --wait`` prints them.

    Cut to ``limit`` characters with an ellipsis (None: whole).
    """
    parts = [json_text(a) for a in args] + [f"{k}={json_text(v)}" for k, v in dict(kwargs).items()]
    text = "(" + ", ".join(parts) + ")"
    return text if limit is None else cut(text, limit)


def echo_json(value: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def fmt_time(ts: float | None) -> str:
    """A local timestamp, to the millisecond."""
    if ts is None:
        return "-"
    base = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f"{base}.{int((ts % 1) * 1000):03d}"


def fmt_seconds(seconds: float | None) -> str:
    """``0.042s``, ``3.21s``, ``2m05s``, ``1h02m``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.3f}s" if seconds < 1 else f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_age(ts: float | None, now: float | None = None) -> str:
    """How long ago ``ts`` was: ``3.2s ago``."""
    if ts is None:
        return "-"
    delta = (time.time() if now is None else now) - ts
    return f"{fmt_seconds(max(0.0, delta))} ago"
