"""Schedule slots on SQLite: the ``schedules`` table, one row per schedule a scheduler marked or paused.

A row holds a schedule's latest slot enqueued (seconds since the epoch, NULL
before the first), that slot's job id and a paused flag. The table is added
within schema version 1: a file written before it gets the table when next
opened. A mark is one ``BEGIN IMMEDIATE`` transaction whose single
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` writes the slot only if it is
later than the one stored, so schedulers racing on a slot (or one marking
late) leave the latest. Schedulers touch this table once per tick, never on
the job path.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence

from jobchain.capabilities import ScheduleSlots, ScheduleState

__all__ = ["SCHEDULES_TABLE", "SqliteSchedules"]

SCHEDULES_TABLE = (
    "CREATE TABLE IF NOT EXISTS schedules ("
    "name TEXT PRIMARY KEY, last_slot REAL, last_job TEXT, paused INTEGER NOT NULL DEFAULT 0)"
)

_MARK = (
    "INSERT INTO schedules (name, last_slot, last_job) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET last_slot = excluded.last_slot, last_job = excluded.last_job "
    "WHERE schedules.last_slot IS NULL OR schedules.last_slot < excluded.last_slot"
)
_PAUSE = (
    "INSERT INTO schedules (name, paused) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused"
)
#: names per SELECT (SQLite's limit on bound parameters is 999 in old builds)
_CHUNK = 500


class SqliteSchedules(ScheduleSlots):
    """The ScheduleSlots capability of :class:`~jobchain_sqlite.SqliteBackend` (a mixin of it)."""

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def mark_slot(self, schedule: str, slot: float, job_id: str) -> None:
        with self._write() as conn:
            conn.execute(_MARK, (schedule, float(slot), job_id))

    def schedule_states(self, names: Sequence[str]) -> list[ScheduleState]:
        held: dict[str, ScheduleState] = {}
        unique = list(dict.fromkeys(names))
        with self._read() as conn:
            for start in range(0, len(unique), _CHUNK):
                part = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                query = f"SELECT name, last_slot, last_job, paused FROM schedules WHERE name IN ({marks})"
                for name, slot, job, paused in conn.execute(query, part):
                    held[name] = ScheduleState(
                        name=name,
                        last_slot=None if slot is None else float(slot),
                        last_job=job,
                        paused=bool(paused),
                    )
        return [held.get(name, ScheduleState(name=name)) for name in names]

    def pause_schedule(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(_PAUSE, (name, 1))

    def resume_schedule(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(_PAUSE, (name, 0))
