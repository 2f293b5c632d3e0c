"""Uniqueness keys in SQLite: the ``unique_keys`` table, read and written inside the backend's transactions.

A row per held key: ``(queue, key)`` -> the holder's job id and ``until``
(NULL: held until the holder reaches a final state, which the settlement that
finishes it deletes in its own transaction; a time: held until then on the
backend's clock). A row whose holder is finished or gone, or whose time has
passed, is free and is overwritten.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from jobchain.model import Job, JobState
from jobchain.uniqueness import holder_is_live

__all__ = ["UNIQUE_TABLE", "release", "take"]

UNIQUE_TABLE = (
    "CREATE TABLE IF NOT EXISTS unique_keys ("
    "queue TEXT NOT NULL, key TEXT NOT NULL, holder TEXT NOT NULL, until REAL, PRIMARY KEY (queue, key))"
)


def _holder(conn: sqlite3.Connection, queue: str, key: str, now: float) -> str | None:
    row = conn.execute(
        "SELECT holder, until FROM unique_keys WHERE queue = ? AND key = ?", (queue, key)
    ).fetchone()
    if row is None:
        return None
    holder, until = row
    if until is not None:
        return str(holder) if until > now else None
    state = conn.execute("SELECT state FROM jobs WHERE id = ?", (holder,)).fetchone()
    return str(holder) if holder_is_live(None if state is None else JobState(state[0])) else None


def take(
    conn: sqlite3.Connection,
    jobs: Sequence[Job],
    keys: Sequence[str],
    hold: float | None,
    now: float,
    insert: Callable[[Job], object],
) -> list[str]:
    """Per job: its own id if it exists, the holder's if its key is held; else ``insert`` it, take the key."""
    out: list[str] = []
    for job, key in zip(jobs, keys, strict=True):
        if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone() is not None:
            out.append(job.id)
            continue
        holder = _holder(conn, job.queue, key, now)
        if holder is not None:
            out.append(holder)
            continue
        insert(job)
        conn.execute(
            "INSERT OR REPLACE INTO unique_keys (queue, key, holder, until) VALUES (?, ?, ?, ?)",
            (job.queue, key, job.id, None if hold is None else now + hold),
        )
        out.append(job.id)
    return out


def release(conn: sqlite3.Connection, job: Job) -> None:
    """Free the key ``job`` carries if ``job`` holds it (the settlement that finishes it, and cancel)."""
    conn.execute(
        "DELETE FROM unique_keys WHERE queue = ? AND key = ? AND holder = ? AND until IS NULL",
        (job.queue, job.unique, job.id),
    )
