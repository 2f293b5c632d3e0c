"""The live progress line of ``jobchain run`` fits the terminal: fields left out, never wrapped."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rich.text import Text

from jobchain.cli._fit import Part, fit_line
from jobchain.cli.progress import BAR_WIDTH, ProgressDisplay

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _display(console: Console | None = None) -> ProgressDisplay:
    display = ProgressDisplay(1200, mode="live", console=console)
    display.update(done=500, failed=30, left=670, rate=2345.6)
    return display


def test_the_whole_line_at_a_wide_terminal() -> None:
    """At 160 columns every field shows, the bar at its widest."""
    line = _display().render(160).plain
    bar = "━" * BAR_WIDTH[1]
    assert line.startswith(f"jobchain run {bar}  530/1200 done 500 · failed 30 · left 670 · ")
    assert re.search(r"2,345\.6 jobs/s · ETA \S+ \d:\d\d:\d\d$", line), line


def test_at_80_columns_the_label_and_elapsed_time_go_first() -> None:
    """At 80 columns: no label, no elapsed time, a shorter bar; every count, the rate and the ETA stay."""
    line = _display().render(80).plain
    assert len(line) <= 80
    assert "jobchain run" not in line
    assert "━" * BAR_WIDTH[0] in line
    assert re.search(r" 530/1200 done 500 · failed 30 · left 670 · 2,345\.6 jobs/s · ETA \S+$", line), line


def test_at_40_columns_the_bar_rate_and_left_go() -> None:
    """At 40 columns what is left is the count, done, failed (and the ETA when it fits)."""
    line = _display().render(40).plain
    assert len(line) <= 40
    assert not {"━", "jobs/s", "left"} & set(re.findall(r"━|jobs/s|left", line))
    assert re.fullmatch(r" 530/1200 done 500 · failed 30( · ETA \S+)?", line), line
    short = ProgressDisplay(120, mode="live")
    short.update(done=50, failed=3, left=67, rate=0.0)
    assert short.render(40).plain == " 53/120 done 50 · failed 3 · ETA ?"


@pytest.mark.parametrize("width", range(1, 161))
def test_never_longer_than_the_terminal(width: int) -> None:
    assert len(_display().render(width).plain) <= width


@pytest.mark.parametrize("width", [80, 40])
def test_the_live_display_never_wraps(width: int) -> None:
    """Drawn by rich on a terminal of that width, every line the display writes fits it."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system="standard")
    display = _display(console)
    display.start()
    for done in range(0, 1200, 300):
        display.update(done=done, failed=3, left=1200 - done - 3, rate=1234.5)
    display.update(done=1197, failed=3, left=0, rate=1234.5)
    display.stop()
    lines = [line for line in re.split(r"[\r\n]+", ANSI.sub("", out.getvalue())) if line]
    assert lines, out.getvalue()
    assert all(len(line) <= width for line in lines), lines
    assert re.search(r"1200/1200 done 1197 · failed 3", lines[-1]), lines


def test_a_flexible_part_takes_the_room_left_up_to_its_largest_width() -> None:
    def bar(width: int) -> Text:
        return Text("#" * width)

    parts = [Part(rank=1, draw=bar, min_width=2, max_width=5), Part(rank=0, text=Text("12/20"))]
    assert fit_line(parts, 100).plain == "##### 12/20"
    assert fit_line(parts, 10).plain == "#### 12/20"
    assert fit_line(parts, 7).plain == "12/20"  # below its smallest width, the bar goes
    assert fit_line(parts, 3).plain == "12/"  # the last part standing is cut, never wrapped
