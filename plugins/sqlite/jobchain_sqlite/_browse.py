"""Browsing the SQLite backend's jobs: one indexed query per page, in the order of :mod:`jobchain.browsing`.

The jobs of one queue in one state are found through the ``jobs_state``
index (state, queue); each row's order key is computed from its columns or its
payload (``enqueued_at``), so a page costs a pass over that queue's jobs in
that state, and no write anywhere else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from jobchain.browsing import BROWSABLE, check_limit, check_state, decode_cursor, encode_cursor
from jobchain.capabilities import JobPage
from jobchain.model import JobRecord, JobState

__all__ = ["RECORD_COLUMNS", "browse", "counts"]

#: the columns a record is read from, in the order :func:`browse` hands them to its ``build``
RECORD_COLUMNS = (
    "id, CAST(payload AS BLOB), queue, state, result, error, started_at, finished_at, worker, errors"
)

_ENQUEUED = "(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.enqueued_at') ELSE 0 END)"
_TASK = "(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.task') END)"


def _key(state: JobState) -> str:
    """The SQL of :func:`jobchain.browsing.order_key` for a row in ``state``."""
    if state is JobState.DELAYED:
        return f"COALESCE(not_before, {_ENQUEUED})"
    if state in (JobState.QUEUED, JobState.RUNNING):
        return _ENQUEUED
    return f"COALESCE(finished_at, {_ENQUEUED})"


def browse(
    conn: sqlite3.Connection,
    build: Callable[[tuple[Any, ...]], JobRecord],
    *,
    queue: str,
    state: JobState,
    task: str | None,
    limit: int,
    cursor: str | None,
    oldest_first: bool,
) -> JobPage:
    """One page; ``build`` makes a record of a row of :data:`RECORD_COLUMNS`."""
    check_limit(limit)
    check_state(state)
    where = ["queue = ?", "state = ?"]
    params: list[Any] = [queue, state.value]
    if task is not None:
        where.append(f"{_TASK} = ?")
        params.append(task)
    after = "1"
    if cursor is not None:
        key, job_id = decode_cursor(cursor)
        after = f"(k, id) {'>' if oldest_first else '<'} (?, ?)"
        params += [key, job_id]
    direction = "ASC" if oldest_first else "DESC"
    rows = conn.execute(
        f"SELECT * FROM (SELECT {_key(state)} AS k, {RECORD_COLUMNS} FROM jobs "
        f"WHERE {' AND '.join(where)}) WHERE {after} ORDER BY k {direction}, id {direction} LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    records = tuple(build(tuple(row[1:])) for row in rows)
    last = rows[-1] if rows else None
    return JobPage(records=records, cursor=encode_cursor(float(last[0]), last[1]) if more and last else None)


def counts(conn: sqlite3.Connection, queue: str) -> dict[JobState, int]:
    out = dict.fromkeys(BROWSABLE, 0)
    for state, count in conn.execute(
        "SELECT state, count(*) FROM jobs WHERE queue = ? GROUP BY state", (queue,)
    ):
        try:
            known = JobState(state)
        except ValueError:
            continue
        if known in out:
            out[known] = count
    return out
