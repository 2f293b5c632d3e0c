"""Error text that is always safe to build and bounded in size.

A task may raise anything: an exception whose ``__str__`` or ``__repr__``
raises, whose message is 10 MB, or that holds a lone surrogate that no
backend can encode. :func:`describe` and :func:`format_traceback` never raise,
and :func:`cap` bounds a text to a number of UTF-8 bytes (lone surrogates
escaped as ``\\udxxx``), cutting it whole characters at a time and saying
how much it cut: ``… [cut 9,934,464 bytes]``.
"""

from __future__ import annotations

import traceback

__all__ = [
    "DEFAULT_MAX_ERROR_BYTES",
    "MIN_MAX_ERROR_BYTES",
    "cap",
    "describe",
    "format_traceback",
    "type_name",
]

#: The default cap of an error message and of a traceback, each, in UTF-8 bytes.
DEFAULT_MAX_ERROR_BYTES = 64 * 1024

#: The smallest cap accepted: room for the cut marker and some text.
MIN_MAX_ERROR_BYTES = 256


def type_name(exc: BaseException) -> str:
    """The name of the exception's class."""
    try:
        name = type(exc).__name__
    except BaseException:  # a metaclass may do anything
        return "BaseException"
    return str.__str__(name) if isinstance(name, str) and name else "BaseException"


def describe(exc: BaseException) -> str:
    """``str(exc)``, else ``repr(exc)``, else ``<unprintable ExcType>``; never raises.

    Anything the exception's own methods raise (a ``BaseException`` included:
    that code is the task's, not the caller's) is swallowed.
    """
    for render in (str, repr):
        try:
            text = render(exc)
        except BaseException:  # try the next way to print it
            continue
        if isinstance(text, str):
            return str.__str__(text)  # a plain str even if __str__ returned a subclass
    return f"<unprintable {type_name(exc)}>"


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback as Python prints it; never raises.

    When the standard formatting fails (an exception whose ``__notes__`` or
    chained exceptions cannot be read, say), the frames are formatted on
    their own and followed by ``ExcType: message``.
    """
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:  # fall back to the frames alone
        pass
    last = f"{type_name(exc)}: {describe(exc)}\n"
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__))
    except BaseException:
        frames = "  <the frames could not be formatted>\n"
    return f"Traceback (most recent call last):\n{frames}{last}"


def _marker(cut: int, *, middle: bool) -> str:
    return f"\n… [cut {cut:,} bytes] …\n" if middle else f"… [cut {cut:,} bytes]"


def cap(text: str, limit: int, *, keep_tail: bool = False) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes, the marker included.

    Lone surrogates are escaped (``\\ud800``), so the result always encodes.
    Over the limit, the start is kept (and the end too with ``keep_tail``,
    for a traceback, whose last lines say what was raised), followed (or
    split) by a marker with the number of bytes cut. No character is split.
    """
    if len(text) <= limit and text.isascii():
        return text
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    room = max(0, limit - len(_marker(len(data), middle=keep_tail).encode("utf-8")))
    if keep_tail:
        head = data[: room // 2].decode("utf-8", "ignore")  # "ignore" drops only a split last char
        tail = data[len(data) - (room - room // 2) :].decode("utf-8", "ignore") if room > 1 else ""
    else:
        head, tail = data[:room].decode("utf-8", "ignore"), ""
    cut = len(data) - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    return f"{head}{_marker(cut, middle=keep_tail)}{tail}"
