"""Browsing jobs: the order of each state, cursors, and the paging every backend shares.

A page of :meth:`jobchain.capabilities.Browse.browse` is cut from the jobs of
one queue in one state, sorted by a stable key: :func:`order_key` (the time
the job was enqueued, became due, or finished) and then the job id. A cursor
is that pair for the last job of a page, so the next page starts after it
whatever moved meanwhile: a job that stays in the state keeps its key, and is
listed once. :func:`page` does the cutting for a backend that has the
candidate keys (memory, Redis); SQLite does it in SQL with the same order.

:class:`Jobs` is the App's face of it (``app.jobs``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from jobchain.capabilities import Browse, JobPage, require
from jobchain.model import JobRecord, JobState

if TYPE_CHECKING:
    from jobchain.aio import AsyncBridge
    from jobchain.backend import Backend

__all__ = [
    "BROWSABLE",
    "MAX_LIMIT",
    "Jobs",
    "check_limit",
    "check_state",
    "decode_cursor",
    "encode_cursor",
    "order_key",
    "page",
    "parse_state",
]

#: the states jobs can be listed in, in the order counts are shown
BROWSABLE: tuple[JobState, ...] = (
    JobState.QUEUED,
    JobState.DELAYED,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
)

#: the largest page a backend serves
MAX_LIMIT = 1000

#: words accepted for a state besides its value (``ready`` is what queues call queued jobs)
_ALIASES = {"ready": JobState.QUEUED}

#: one page loads candidates' records in chunks of this many
_CHUNK = 200


def parse_state(text: str) -> JobState:
    """The browsable state ``text`` names (a state's value, or ``ready``); ValueError listing them."""
    word = text.strip().lower()
    state = _ALIASES.get(word)
    if state is None:
        try:
            state = JobState(word)
        except ValueError:
            state = None
    if state is None or state not in BROWSABLE:
        names = ", ".join(["ready", *(s.value for s in BROWSABLE)])
        raise ValueError(f"unknown job state {text!r}: expected one of {names}")
    return state


def check_state(state: JobState) -> None:
    if state not in BROWSABLE:
        raise ValueError(f"jobs cannot be listed in state {state.value!r}")


def check_limit(limit: int) -> None:
    """ValueError unless ``1 <= limit <= MAX_LIMIT``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit!r}")


def order_key(record: JobRecord) -> float:
    """Where ``record`` sorts among the jobs of its state (then by id).

    Queued and running: when it was enqueued; delayed: when it is due;
    succeeded, failed, cancelled: when it finished.
    """
    state = record.state
    job = record.job
    if state is JobState.DELAYED:
        return job.not_before if job.not_before is not None else job.enqueued_at
    if state in (JobState.QUEUED, JobState.RUNNING, JobState.BUFFERED):
        return job.enqueued_at
    return record.finished_at if record.finished_at is not None else job.enqueued_at


def encode_cursor(key: float, job_id: str) -> str:
    """An opaque, URL-safe cursor naming the position just after (key, id)."""
    raw = json.dumps([key, job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (key, id) a cursor of :func:`encode_cursor` names; ValueError for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key, job_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if isinstance(key, bool) or not isinstance(key, int | float) or not isinstance(job_id, str):
            raise TypeError
        if not math.isfinite(key):
            raise TypeError
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error):
        raise ValueError(f"not a cursor of this listing: {cursor!r}") from None
    return float(key), job_id


def page(
    candidates: Iterable[tuple[float, str]],
    load: Callable[[Sequence[str]], Sequence[JobRecord | None]],
    *,
    state: JobState,
    task: str | None,
    limit: int,
    cursor: str | None,
    oldest_first: bool,
) -> JobPage:
    """Cut a page from ``candidates`` (``(key, id)`` of the jobs that may be in ``state``).

    ``load`` reads the records of some ids (None for one gone); a record no
    longer in ``state`` or of another task is skipped. The page's cursor is
    None when no candidate is left after it.
    """
    check_limit(limit)
    check_state(state)
    after = decode_cursor(cursor) if cursor is not None else None
    ordered = sorted(set(candidates), reverse=not oldest_first)
    if after is not None:
        ordered = [c for c in ordered if (c > after if oldest_first else c < after)]
    records: list[JobRecord] = []
    last: tuple[float, str] | None = None
    start = 0
    while start < len(ordered) and len(records) < limit:
        chunk = ordered[start : start + max(_CHUNK, limit - len(records))]
        for (key, job_id), record in zip(chunk, load([c[1] for c in chunk]), strict=True):
            start += 1
            last = (key, job_id)
            if record is None or record.state is not state or (task is not None and record.job.task != task):
                continue
            records.append(record)
            if len(records) == limit:
                break
    more = start < len(ordered) and last is not None
    return JobPage(records=tuple(records), cursor=encode_cursor(*last) if more and last else None)


class Jobs:
    """The jobs of an App's backend: ``app.jobs.list(...)``, ``app.jobs.counts(queue)``, ``app.jobs.get(id)``.

    ``list`` and ``counts`` need a backend with :class:`~jobchain.capabilities.Browse`
    (:class:`~jobchain.errors.NotSupportedError` otherwise); ``get`` works on any.
    """

    def __init__(self, backend: Callable[[], Backend], *, aio: AsyncBridge | None = None) -> None:
        self._backend = backend
        self._aio = aio

    def list(
        self,
        queue: str,
        state: JobState | str = JobState.QUEUED,
        *,
        task: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> JobPage:
        """One page of ``queue``'s jobs in ``state`` (a JobState, or its name, or ``"ready"``).

        Newest first unless ``oldest_first``; pass the page's ``cursor`` back
        for the next page (None: it was the last).
        """
        wanted = parse_state(state) if isinstance(state, str) else state
        return require(self._backend(), Browse).browse(
            queue=queue, state=wanted, task=task, limit=limit, cursor=cursor, oldest_first=oldest_first
        )

    def counts(self, queue: str) -> dict[JobState, int]:
        """How many of ``queue``'s jobs are in each browsable state."""
        return require(self._backend(), Browse).counts(queue)

    def get(self, job_id: str) -> JobRecord | None:
        """The record of one job (a running one names its worker where the backend knows it), or None."""
        return self._backend().get_job(job_id)

    # --- the same, for coroutines (see jobchain.aio) -------------------------------------

    def _bridge(self) -> AsyncBridge:
        if self._aio is None:
            from jobchain.aio import AsyncBridge

            self._aio = AsyncBridge(self._backend)
        return self._aio

    async def list_async(
        self,
        queue: str,
        state: JobState | str = JobState.QUEUED,
        *,
        task: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> JobPage:
        """:meth:`list`, awaited (a thread of the App's pool runs it)."""
        return await self._bridge().run(
            self.list, queue, state, task=task, limit=limit, cursor=cursor, oldest_first=oldest_first
        )

    async def counts_async(self, queue: str) -> dict[JobState, int]:
        """:meth:`counts`, awaited (a thread of the App's pool runs it)."""
        return await self._bridge().run(self.counts, queue)

    async def get_async(self, job_id: str) -> JobRecord | None:
        """:meth:`get`, awaited (natively on a backend with the AsyncClient capability)."""
        return await self._bridge().get_job(job_id)
