"""Schedules: a task or chain submitted at every slot of a cron expression or a fixed interval.

Declared in the app (:meth:`jobchain.App.periodic`, :meth:`jobchain.App.schedule`),
run by any number of schedulers (:mod:`jobchain.scheduler`). A **slot** is a
time the schedule fires at, in seconds since the epoch:

* ``every=S`` (seconds or a :class:`~datetime.timedelta`, at least 1 s): the
  multiples of S since the epoch (``every=3600`` fires on the hour, UTC);
* ``cron="*/5 * * * *"`` with ``tz="Europe/Paris"`` (default UTC): the times
  croniter gives in that zone, so "9:00 every day" stays 9:00 local across
  DST changes, and a local time skipped or repeated by a DST change is handled
  as croniter documents (a sixth field counts seconds).

**Exactly once.** A slot's job (or chain) id is :func:`slot_id` of the
schedule's name and the slot time, and storing an id that exists stores
nothing. So every scheduler that sees a slot due submits the same id and one
job results, whatever their number and their clocks; no leader is elected.

**Missed slots** (after all schedulers were down, or while a schedule was
paused) follow ``missed=``: ``"latest"`` (default) runs the latest missed slot
once; ``"skip"`` runs none (only a slot seen within ``grace`` seconds of its
time runs); ``"all"`` runs every missed slot, at most ``max_missed`` of them
(the latest ones). A schedule never run before starts with a slot seen on time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from attrs import field, frozen

from jobchain.errors import ConfigurationError

__all__ = ["MISSED_POLICIES", "MissedPolicy", "Schedule", "slot_id"]

MissedPolicy = Literal["latest", "skip", "all"]
MISSED_POLICIES: tuple[str, ...] = ("latest", "skip", "all")

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def slot_id(name: str, slot: float) -> str:
    """The id of ``name``'s job (or chain) for ``slot``: ``sched.NAME.20260501T090000Z``."""
    stamp = datetime.fromtimestamp(slot, UTC)
    text = stamp.strftime("%Y%m%dT%H%M%S")
    if stamp.microsecond:
        text += f".{stamp.microsecond // 1000:03d}"
    return f"sched.{name}.{text}Z"


def _seconds(every: object) -> float | None:
    if every is None:
        return None
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 1:
        raise ConfigurationError(f"every= must be at least 1 second (a number or a timedelta), got {every!r}")
    return float(seconds)


@frozen(kw_only=True)
class Schedule:
    """One declared schedule: what to submit (``target`` with ``args``/``kwargs``) and when."""

    name: str
    target: Any
    cron: str | None = None
    every: float | None = field(default=None, converter=_seconds)
    tz: str = "UTC"
    args: tuple[Any, ...] = field(default=(), converter=tuple)
    kwargs: Mapping[str, Any] = field(factory=dict)
    missed: MissedPolicy = "latest"
    max_missed: int = 10
    #: seconds after its time a slot still counts as on time (for ``skip`` and a first run)
    grace: float = 60.0
    #: the target is a chain or group: its slot ids are chain ids (set by the App)
    is_chain: bool = False

    def __attrs_post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"schedule name {self.name!r}: 1-100 letters, digits and _ . : - only (it is part of job ids)"
            )
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"{where}: give cron= or every=, exactly one")
        if self.cron is not None:
            from croniter import croniter

            if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
                raise ConfigurationError(f"{where}: cannot read cron={self.cron!r} (e.g. '*/5 * * * *')")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(f"{where}: unknown time zone {self.tz!r}, e.g. Europe/Paris") from None
        if self.missed not in MISSED_POLICIES:
            raise ConfigurationError(f"{where}: missed= must be one of {', '.join(MISSED_POLICIES)}")
        if isinstance(self.max_missed, bool) or not isinstance(self.max_missed, int) or self.max_missed < 1:
            raise ConfigurationError(f"{where}: max_missed= must be an int >= 1, got {self.max_missed!r}")

    @property
    def spec(self) -> str:
        """The schedule's timing, for display: ``cron '*/5 * * * *' Europe/Paris`` or ``every 30s``."""
        if self.cron is not None:
            return f"cron '{self.cron}' {self.tz}"
        return f"every {self.every:g}s"

    # --- slots -------------------------------------------------------------------------------

    def latest_at(self, t: float) -> float:
        """The latest slot at or before ``t``."""
        if self.every is not None:
            return math.floor(t / self.every) * self.every
        return self._cron(t + 1e-6).get_prev(float)  # type: ignore[no-any-return]

    def next_after(self, t: float) -> float:
        """The first slot after ``t``."""
        if self.every is not None:
            return (math.floor(t / self.every) + 1) * self.every
        return self._cron(t).get_next(float)  # type: ignore[no-any-return]

    def due(self, now: float, last: float | None) -> list[float]:
        """The slots to submit at ``now`` when ``last`` was the latest one submitted, oldest first."""
        latest = self.latest_at(now)
        if last is not None and latest <= last:
            return []
        on_time = now - latest <= self.grace
        if last is None or self.missed == "skip":
            return [latest] if on_time else []
        if self.missed == "latest":
            return [latest]
        slots = [latest]
        while len(slots) < self.max_missed:
            before = self.latest_at(slots[-1] - 1e-3) if self.every is None else slots[-1] - self.every
            if before <= last:
                break
            slots.append(before)
        return slots[::-1]

    def _cron(self, t: float) -> Any:
        from croniter import croniter

        return croniter(self.cron or "", datetime.fromtimestamp(t, ZoneInfo(self.tz)))
