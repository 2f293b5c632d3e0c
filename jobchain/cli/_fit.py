"""One line of parts fitted to a width: the least important parts go first, the line never wraps.

:func:`fit_line` lays out :class:`Part` s in their order. When they do not fit,
it leaves out the part of the highest ``rank`` (the least important), then
the next, until they fit; a flexible part (a progress bar) takes the room left,
between its smallest and largest width. Parts of the same ``group`` that end
up side by side are joined by ``" · "``, other neighbours by a space. Whatever
still does not fit (a very narrow terminal) is cut at the width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from attrs import frozen
from rich.cells import cell_len
from rich.text import Text

__all__ = ["Part", "fit_line"]

#: between two neighbouring parts of one group
GROUP_JOINER = " · "


@frozen(kw_only=True)
class Part:
    """A piece of the line: fixed ``text``, or ``draw(width)`` for a flexible one."""

    #: 0 is kept longest; the part of the highest rank is the first left out
    rank: int
    text: Text | None = None
    #: draws a flexible part at a width between ``min_width`` and ``max_width``
    draw: Callable[[int], Text] | None = None
    min_width: int = 0
    max_width: int = 0
    #: neighbours of one group are joined by " · "
    group: str | None = None

    def width(self, flexible: int) -> int:
        return flexible if self.draw is not None else cell_len(self.text.plain if self.text else "")


def _joiner(before: Part, part: Part) -> str:
    return GROUP_JOINER if part.group is not None and part.group == before.group else " "


def _length(parts: Sequence[Part], flexible: dict[int, int]) -> int:
    total = 0
    for index, part in enumerate(parts):
        if index:
            total += len(_joiner(parts[index - 1], part))
        total += part.width(flexible.get(id(part), part.min_width))
    return total


def fit_line(parts: Sequence[Part], width: int) -> Text:
    """The parts that fit in ``width`` cells, as one line of text no longer than ``width``."""
    kept = list(parts)
    for victim in sorted(parts, key=lambda p: p.rank, reverse=True):
        if _length(kept, {}) <= width or len(kept) == 1:
            break
        kept.remove(victim)
    room = width - _length(kept, {})
    flexible: dict[int, int] = {}
    for part in kept:
        if part.draw is not None:
            grown = min(part.max_width, part.min_width + max(0, room))
            room -= grown - part.min_width
            flexible[id(part)] = grown
    line = Text(no_wrap=True, overflow="crop", end="")
    for index, part in enumerate(kept):
        if index:
            line.append(_joiner(kept[index - 1], part))
        if part.draw is not None:
            line.append_text(part.draw(flexible[id(part)]))
        elif part.text is not None:
            line.append_text(part.text)
    line.truncate(max(0, width), overflow="crop")
    return line
