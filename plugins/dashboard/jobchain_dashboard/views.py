"""Template filters: times, durations, JSON and sparklines, as text the templates escape.

Nothing here returns markup except :func:`sparkline`, which builds an SVG from
numbers only (every value is formatted as a number, so no job's text can
reach it).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

__all__ = ["FILTERS", "ago", "duration", "pretty_json", "short_json", "sparkline", "stamp"]

#: what a missing time or duration shows
NONE = "\u2013"

#: the largest JSON a page shows whole; longer values are cut with a note
MAX_JSON_CHARS = 20_000


def duration(seconds: float | None) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 10 min``; a dash for None."""
    if seconds is None or not math.isfinite(seconds):
        return NONE
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        rest = int(seconds % 60)
        return f"{int(seconds // 60)} min" + (f" {rest} s" if rest else "")
    if seconds < 86_400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86_400)} d {int(seconds % 86_400 // 3600)} h"


def ago(at: float | None, now: float | None = None) -> str:
    """How long ago the timestamp ``at`` was: ``4.2 s ago``."""
    if at is None:
        return NONE
    return duration((time.time() if now is None else now) - at) + " ago"


def stamp(at: float | None) -> str:
    """The timestamp in UTC, to the millisecond."""
    if at is None or not math.isfinite(at):
        return NONE
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def pretty_json(value: Any) -> str:
    """Indented JSON of a job's arguments or result, cut at :data:`MAX_JSON_CHARS`."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=repr)
    if len(text) > MAX_JSON_CHARS:
        return text[:MAX_JSON_CHARS] + f"\n… ({len(text) - MAX_JSON_CHARS} more characters not shown)"
    return text


def short_json(value: Any, limit: int = 80) -> str:
    """One line of JSON, cut at ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sparkline(values: Sequence[float], width: int = 120, height: int = 24, kind: str = "ok") -> Markup:
    """A small SVG line of ``values`` (oldest first), scaled to its own maximum."""
    numbers = [float(v) if isinstance(v, int | float) and math.isfinite(v) else 0.0 for v in values][-500:]
    if not numbers:
        return Markup("")
    top = max(numbers) or 1.0
    step = width / max(1, len(numbers) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(numbers)
    )
    colour = "#b42318" if kind == "bad" else "#1f7a44"
    total = sum(numbers)
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{total:.0f} in the window">'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/></svg>'
    )


def state_class(state: Any) -> str:
    """``state-failed`` for a state (an enum or its value): the colour of a state's word."""
    value = getattr(state, "value", state)
    word = "".join(c for c in str(value) if c.isalnum() or c == "_")
    return f"state-{word}"


def state_word(state: Any) -> str:
    value = str(getattr(state, "value", state))
    return value.replace("_", " ")


FILTERS: dict[str, Callable[..., Any]] = {
    "duration": duration,
    "ago": ago,
    "stamp": stamp,
    "pretty_json": pretty_json,
    "short_json": short_json,
    "sparkline": sparkline,
    "state_class": state_class,
    "state_word": state_word,
}
