"""Delays that read well: ``countdown=`` seconds or an ``eta=`` time, checked in one place.

``task.submit(..., countdown=30)`` runs the job no sooner than 30 s from the
submit; ``eta=`` is an absolute time: a timezone-aware :class:`datetime.datetime`
or seconds since the epoch. An ``eta`` already past runs the job now (like a
countdown of 0). Both are turned into the job's delay (seconds from the
submit) by :func:`delay_of`; the job waits in the backend's delayed set and is
judged on the backend's clock.

The CLI's ``--delay 30s|5m|1h30m`` and ``--at ISO8601`` are read by
:func:`parse_duration` and :func:`parse_instant`.
"""

from __future__ import annotations

import re
from datetime import datetime

from jobchain.errors import InvalidJobError

__all__ = ["delay_of", "parse_duration", "parse_instant"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def delay_of(countdown: object = None, eta: object = None, *, now: float) -> float | None:
    """Seconds to wait from ``now``: ``countdown``, or until ``eta``; None when neither is given.

    One line of :class:`~jobchain.errors.InvalidJobError` when both are given,
    a countdown is not a number >= 0, or an eta is a naive datetime or not a time.
    """
    if countdown is not None and eta is not None:
        raise InvalidJobError("give countdown= (seconds from now) or eta= (a time), not both")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, int | float) or countdown != countdown:
            raise InvalidJobError(f"countdown must be a number of seconds >= 0, got {countdown!r}")
        if countdown < 0:
            raise InvalidJobError(f"countdown must be >= 0 seconds, got {countdown!r}")
        return float(countdown)
    if eta is None:
        return None
    if isinstance(eta, datetime):
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise InvalidJobError(
                f"eta {eta.isoformat()} has no time zone: give an aware datetime "
                "(e.g. datetime.now(timezone.utc) + timedelta(minutes=5)) or epoch seconds"
            )
        at = eta.timestamp()
    elif isinstance(eta, int | float) and not isinstance(eta, bool) and eta == eta:
        at = float(eta)
    else:
        raise InvalidJobError(f"eta must be an aware datetime or epoch seconds, got {eta!r}")
    return max(0.0, at - now)


def parse_duration(text: str) -> float:
    """``30``, ``30s``, ``5m``, ``1h30m``, ``250ms``, ``2d`` as seconds; ValueError saying why otherwise."""
    spelled = text.strip().lower()
    if not spelled:
        raise ValueError("an empty delay; write e.g. 30s, 5m or 1h30m")
    try:
        seconds = float(spelled)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"a delay must be >= 0, got {text!r}")
        return seconds
    position, total = 0, 0.0
    for match in _PART.finditer(spelled):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(spelled):
        if spelled.startswith("-"):
            raise ValueError(f"a delay must be >= 0, got {text!r}")
        raise ValueError(f"cannot read {text!r} as a delay; write e.g. 30s, 5m, 1h30m or 250ms")
    return total


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with its offset (``2026-05-01T09:00:00+02:00``, ``...Z``) as an aware datetime."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        example = "2026-05-01T09:00:00+02:00"
        raise ValueError(f"cannot read {text!r} as an ISO 8601 time, e.g. {example}") from None
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add an offset such as +02:00 or Z")
    return at
