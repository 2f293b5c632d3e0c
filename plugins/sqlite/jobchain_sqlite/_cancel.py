"""Cancel on SQLite: waiting jobs marked cancelled in the transaction, running ones asked in a table.

A ready or delayed job's row becomes ``cancelled`` in one ``BEGIN IMMEDIATE``
transaction with its chain record, so a reservation either took it before
(then it is running, and asked to stop) or never sees it. A running job's
request is a row of ``cancel_requests`` (added within schema version 1: a
file written before it gets the table when next opened), read by the
worker's monitor with :meth:`SqliteCancel.cancel_requested` and deleted when
the job is settled :class:`~jobchain.model.Aborted`; a request whose job
finished otherwise is forgotten after a day.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from jobchain import workflow
from jobchain.capabilities import Cancel, CancelReport
from jobchain.clock import Clock
from jobchain.model import ChainRecord, Job, JobState

__all__ = ["SqliteCancel", "mark_cancelled"]

_CANCEL_TABLE = "CREATE TABLE IF NOT EXISTS cancel_requests (job_id TEXT PRIMARY KEY, at REAL NOT NULL)"
#: a cancel request older than this is forgotten (its job was settled otherwise long ago)
_CANCEL_REQUEST_TTL = 86400.0
_WAITING = ("queued", "delayed")


def mark_cancelled(
    conn: sqlite3.Connection, job: Job | None, now: float, *, job_id: str = "", started_at: Any = None
) -> ChainRecord | None:
    """Record a job (no longer ready, delayed or leased) cancelled and end its chain; the chain if it ended.

    ``job`` is None for a row whose payload cannot be read (``job_id`` names it): no chain to end.
    """
    the_id = job.id if job is not None else job_id
    conn.execute(
        "UPDATE jobs SET state = ?, token = NULL, worker = NULL, lease_until = NULL, marked = NULL, "
        "seq = NULL, not_before = NULL, deliveries = 0, crashes = 0, started_at = ?, finished_at = ? "
        "WHERE id = ?",
        (JobState.CANCELLED.value, started_at, now, the_id),
    )
    conn.execute("DELETE FROM cancel_requests WHERE job_id = ?", (the_id,))
    if job is None or job.chain is None:
        return None
    row = conn.execute("SELECT record FROM chains WHERE id = ?", (job.chain.chain_id,)).fetchone()
    if row is None:
        return None
    record = ChainRecord.from_wire(json.loads(row[0]))
    updated = workflow.apply_cancelled(record, job.chain, now=now)
    if updated == record:
        return None
    conn.execute(
        "UPDATE chains SET record = ? WHERE id = ?",
        (json.dumps(updated.to_wire(), separators=(",", ":")), updated.id),
    )
    return updated


def _readable(payload: Any, job_id: str) -> Job | None:
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        job = Job.from_wire(json.loads(text))
    except (ValueError, TypeError):  # unreadable: cancelled all the same, with no chain to end
        return None
    return job if job.id == job_id else None


class SqliteCancel(Cancel):
    """The Cancel capability of :class:`~jobchain_sqlite.SqliteBackend` (a mixin of it)."""

    clock: Clock

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _promote(self, conn: sqlite3.Connection, now: float) -> None:
        raise NotImplementedError

    def cancel(self, job_ids: Sequence[str]) -> CancelReport:
        out: dict[str, list[str]] = {"cancelled": [], "requested": [], "finished": [], "unknown": []}
        with self._write() as conn:
            now = self.clock.now()
            self._promote(conn, now)
            conn.execute("DELETE FROM cancel_requests WHERE at < ?", (now - _CANCEL_REQUEST_TTL,))
            for job_id in dict.fromkeys(job_ids):
                row = conn.execute(
                    "SELECT state, CAST(payload AS BLOB) FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
                if row is None:
                    out["unknown"].append(job_id)
                elif row[0] == "running":
                    conn.execute(
                        "INSERT OR REPLACE INTO cancel_requests (job_id, at) VALUES (?, ?)", (job_id, now)
                    )
                    out["requested"].append(job_id)
                elif row[0] in _WAITING:
                    mark_cancelled(conn, _readable(row[1], job_id), now, job_id=job_id)
                    out["cancelled"].append(job_id)
                else:
                    out["finished"].append(job_id)
        return CancelReport(**{k: tuple(v) for k, v in out.items()})

    def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        asked: set[str] = set()
        with self._read() as conn:
            for part in _chunks(list(dict.fromkeys(job_ids))):
                marks = ",".join("?" * len(part))
                query = f"SELECT job_id FROM cancel_requests WHERE job_id IN ({marks})"
                asked.update(job_id for (job_id,) in conn.execute(query, part))
        return [job_id for job_id in job_ids if job_id in asked]

    def purge(self, queue: str) -> int:
        with self._write() as conn:
            now = self.clock.now()
            self._promote(conn, now)
            rows = conn.execute(
                "SELECT id, CAST(payload AS BLOB) FROM jobs WHERE queue = ? AND state IN (?, ?)",
                (queue, *_WAITING),
            ).fetchall()
            for job_id, payload in rows:
                mark_cancelled(conn, _readable(payload, job_id), now, job_id=job_id)
        return len(rows)


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
