"""The overview page and its figures, from the backend's records of finished jobs; the shared checks.

:func:`overview` is re-exported by :mod:`jobchain_dashboard.data` with the
other pages. A refresh reads, per queue and per state (succeeded, failed),
the records that finished within the window, newest first, at most ``cap``
of them (:func:`read_finished`). Everything shown is computed from those
records (:func:`figures`), so two dashboards looking at one backend show the
same figures, and a dashboard that restarts has lost nothing. (A backend
keeps finished records for a time: the Redis backends for ``result_ttl``; a
window longer than that shows what is kept.)

- **wait**: ``started_at`` minus the time the job became due
  (``not_before`` when it is later than ``enqueued_at``, else
  ``enqueued_at``; a retried job's ``not_before`` is its retry time, so the
  wait is the last attempt's). Clocks of different hosts can make it
  negative; it is shown as 0 then.
- **run**: ``finished_at`` minus ``started_at`` (the last attempt).
- A record without one of those times counts in the throughput and the
  sparkline, not in the percentiles (a failed job's record on the memory
  backend has no ``started_at``).
- **capped**: the window held more than ``cap`` records of a state. The
  figures of that state then cover the time from the oldest record read to
  ``now`` (:attr:`Sample.since`): the throughput is the rate over that time,
  and the sparkline's buckets that start before it are None (not known),
  never a false zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from attrs import frozen

from jobchain.browsing import Jobs, order_key
from jobchain.capabilities import Browse, Capability, Pause, Stats, WorkerRegistry, supports
from jobchain.cli.queues import queue_rows
from jobchain.cli.report import percentile
from jobchain.model import JobRecord, JobState
from jobchain.plugins import scheme_of

if TYPE_CHECKING:
    from jobchain.app import App

__all__ = [
    "Figures",
    "Overview",
    "QueueRow",
    "Sample",
    "due_of",
    "figures",
    "overview",
    "read_finished",
    "run_of",
    "wait_of",
]

#: the largest page read at a time while sampling (a backend serves up to jobchain.browsing.MAX_LIMIT)
PAGE = 500
#: the longest queue, task, error type or id a request may name (an explicit id is at most 200
#: characters, a chain member's id a few more; names have no limit of their own, so a generous bound)
MAX_NAME = 1024
#: bounds of the overview's parameters
MAX_WINDOW = 86_400.0
MAX_BUCKETS = 240
MAX_CAP = 100_000


# --- checks every page shares: a bad parameter is a ValueError of one line --------------


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high}, got {_short(value)}")
    return value


def check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ValueError(f"{what} must be a text of 1 to {MAX_NAME} characters")
    return value


def check_now(app: App, now: object) -> float:
    """``now`` as a float, or the App's clock when None."""
    if now is None:
        return app.clock.now()
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, got {_short(now)}")
    return float(now)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def lacks(app: App, capability: type[Capability]) -> str:
    """The note a page shows for a capability the backend lacks (its scheme only: no host, no password)."""
    return f"{scheme_of(app.backend_url)}:// does not support {capability.what}"


# --- the figures ------------------------------------------------------------------------


@frozen(kw_only=True)
class Sample:
    """The finished records of one queue in one state read for one refresh (newest first)."""

    queue: str
    state: JobState
    #: the records that finished in the window (``since`` to ``now``), newest first
    records: tuple[JobRecord, ...]
    #: where the records read reach back to: the window's start, or the oldest record read when capped
    since: float
    #: the window held more records than were read (the figures are from the newest ones)
    capped: bool = False


def read_finished(jobs: Jobs, queue: str, state: JobState, *, start: float, now: float, cap: int) -> Sample:
    """``queue``'s jobs that finished in ``state`` from ``start`` to ``now`` (both included), newest first.

    Pages through the backend's listing newest first and stops at the first
    record older than ``start``, or after ``cap + 1`` records (the one past
    the cap only tells whether the window holds more).
    """
    found: list[JobRecord] = []
    read = 0
    cursor: str | None = None
    while True:
        page = jobs.list(queue, state, limit=min(PAGE, cap + 1 - read), cursor=cursor)
        for record in page.records:
            read += 1
            finished = order_key(record)
            if finished < start:
                return Sample(queue=queue, state=state, records=tuple(found), since=start)
            if read > cap:  # one more in the window than may be read
                since = order_key(found[-1]) if found else now
                return Sample(queue=queue, state=state, records=tuple(found), since=since, capped=True)
            if finished <= now:  # a record after ``now`` (a ``now`` in the past) is outside the window
                found.append(record)
        cursor = page.cursor
        if cursor is None or not page.records:
            return Sample(queue=queue, state=state, records=tuple(found), since=start)


def due_of(record: JobRecord) -> float:
    """When the job (its last attempt) became due: ``not_before`` if later than ``enqueued_at``."""
    job = record.job
    return job.enqueued_at if job.not_before is None else max(job.enqueued_at, job.not_before)


def started_of(record: JobRecord) -> float | None:
    """When the job's last attempt started: the record's start, else (a failed attempt) its error's.

    A failed attempt's record keeps no start time; its error says when it
    failed (``at``) and how long it had run (``ran``).
    """
    if record.started_at is not None:
        return record.started_at
    error = record.error
    ran = None if error is None else error.ran
    if error is None or ran is None or record.state is not JobState.FAILED:
        return None
    return error.at - ran


def wait_of(record: JobRecord) -> float | None:
    """Seconds the job's last attempt waited from the time it was due to its start (None: not known)."""
    started = started_of(record)
    if started is None:
        return None
    return max(0.0, started - due_of(record))


def run_of(record: JobRecord) -> float | None:
    """Seconds the job's last attempt ran (None: not known)."""
    if record.started_at is None or record.finished_at is None:
        error = record.error
        if record.state is JobState.FAILED and error is not None and error.ran is not None:
            return max(0.0, error.ran)
        return None
    return max(0.0, record.finished_at - record.started_at)


@frozen(kw_only=True)
class Figures:
    """Throughput, wait and run percentiles and a sparkline over one window (of a queue, or of all)."""

    #: finished jobs read in the window (all of them unless ``sampled``)
    succeeded: int
    failed: int
    #: finished jobs per minute (the rate over the time the records read cover)
    throughput: float
    #: seconds; None when no record read has the times
    wait_p50: float | None
    wait_p95: float | None
    run_p50: float | None
    run_p95: float | None
    #: how many records the wait and the run percentiles are computed from
    timed: int
    #: the sparkline: the start of the first bucket, the width of each, jobs finished per bucket
    spark_start: float
    bucket_seconds: float
    spark_succeeded: tuple[int | None, ...]
    spark_failed: tuple[int | None, ...]
    #: some state of some queue held more records than the cap: the figures are from a sample
    sampled: bool

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def spark_max(self) -> int:
        """The largest bucket (succeeded plus failed), for scaling a drawing (0 when all are empty)."""
        pairs = zip(self.spark_succeeded, self.spark_failed, strict=True)
        return max(((s or 0) + (f or 0) for s, f in pairs), default=0)


def _spark(samples: Sequence[Sample], *, start: float, width: float, buckets: int) -> tuple[int | None, ...]:
    counts: list[int | None] = [0] * buckets
    for sample in samples:
        for index in range(buckets):
            if start + index * width < sample.since - 1e-9:  # starts before the records read reach
                counts[index] = None
        for record in sample.records:
            index = min(buckets - 1, max(0, math.floor((order_key(record) - start) / width)))
            held = counts[index]
            if held is not None:
                counts[index] = held + 1
    return tuple(counts)


def _rate(samples: Sequence[Sample], now: float) -> float:
    """Jobs per minute: each sample's count over the time it covers (at least a second)."""
    return sum(len(s.records) * 60.0 / max(1.0, now - s.since) for s in samples)


def _p(values: list[float], q: float) -> float | None:
    return percentile(sorted(values), q)


def figures(
    succeeded: Sequence[Sample], failed: Sequence[Sample], *, start: float, now: float, buckets: int
) -> Figures:
    """The figures of these samples (one queue's, or every queue's for the totals)."""
    width = (now - start) / buckets
    waits: list[float] = []
    runs: list[float] = []
    for sample in (*succeeded, *failed):
        for record in sample.records:
            wait, run = wait_of(record), run_of(record)
            if wait is not None and run is not None:
                waits.append(wait)
                runs.append(run)
    return Figures(
        succeeded=sum(len(s.records) for s in succeeded),
        failed=sum(len(s.records) for s in failed),
        throughput=_rate(succeeded, now) + _rate(failed, now),
        wait_p50=_p(waits, 50),
        wait_p95=_p(waits, 95),
        run_p50=_p(runs, 50),
        run_p95=_p(runs, 95),
        timed=len(waits),
        spark_start=start,
        bucket_seconds=width,
        spark_succeeded=_spark(succeeded, start=start, width=width, buckets=buckets),
        spark_failed=_spark(failed, start=start, width=width, buckets=buckets),
        sampled=any(s.capped for s in (*succeeded, *failed)),
    )


# --- the overview -----------------------------------------------------------------------


@frozen(kw_only=True)
class QueueRow:
    """One queue of the overview: its counts, its oldest waiting job, and its figures over the window."""

    queue: str
    ready: int
    delayed: int
    running: int
    #: entries of the failed queue from this queue (without Stats: failed job records still kept)
    failed: int
    paused: bool
    #: seconds the first ready job (by enqueue time) has waited since it became due (None: none, or unknown)
    oldest_age: float | None
    oldest_job: str | None
    figures: Figures


@frozen(kw_only=True)
class Overview:
    """Every queue, worst first, with totals, the live workers and notes on what is missing or sampled.

    Worst first: the most failed jobs, then (equal failed) the oldest ready
    job's longest wait, then the deepest ready backlog, then by name.
    """

    now: float
    window: float
    buckets: int
    cap: int
    queues: tuple[QueueRow, ...]
    ready: int
    delayed: int
    running: int
    failed: int
    #: every queue's figures together
    totals: Figures
    #: live workers (None: the backend keeps no worker registry)
    workers: int | None
    notes: tuple[str, ...] = ()

    @property
    def sampled(self) -> bool:
        return self.totals.sampled


def worst_first(row: QueueRow) -> tuple[int, float, int, str]:
    """The overview's sort key."""
    return (-row.failed, -(row.oldest_age or 0.0), -row.ready, row.queue)


#: a queue's counts: ready, delayed, running, failed, paused
_Counts = tuple[int, int, int, int, bool]


def _counts(app: App, notes: list[str]) -> dict[str, _Counts]:
    """Every queue the backend counts, the paused ones and the App's, with their counts."""
    backend = app.backend
    counted: dict[str, _Counts] = {}
    if supports(backend, Stats):  # the paused queues too; a queue not counted has no job
        for stats, paused in queue_rows(app):
            counted[stats.queue] = (stats.ready, stats.delayed, stats.in_flight, stats.failed, paused)
        for queue in app.queues:
            counted.setdefault(queue, (0, 0, 0, 0, False))
        return counted
    notes.append(lacks(app, Stats))
    held = set(app.paused()) if supports(backend, Pause) else set()
    for queue in sorted(held | set(app.queues)):
        if supports(backend, Browse):  # counts of the job records; failed: the failed records kept
            c = app.jobs.counts(queue)
            ready, delayed, running, failed = (c[s] for s in _COUNTED)
            counted[queue] = (ready, delayed, running, failed, queue in held)
        else:
            counted[queue] = (0, 0, 0, 0, queue in held)
    return counted


_COUNTED = (JobState.QUEUED, JobState.DELAYED, JobState.RUNNING, JobState.FAILED)


def overview(
    app: App,
    *,
    window: float = 300.0,
    buckets: int = 30,
    now: float | None = None,
    cap: int = 1_000,
) -> Overview:
    """The overview page: one row per queue (those the backend counts, the paused ones, the App's), worst
    first, with figures over the last ``window`` seconds to ``now`` (default: the App's clock).

    ``buckets`` is the sparkline's number of bars; ``cap`` bounds the finished
    records read per queue and state (succeeded, failed) on each call.
    """
    if isinstance(window, bool) or not isinstance(window, int | float) or not 1.0 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be between 1 and {MAX_WINDOW:g} seconds, got {_short(window)}")
    buckets = check_int("buckets", buckets, 1, MAX_BUCKETS)
    cap = check_int("cap", cap, 1, MAX_CAP)
    end = check_now(app, now)
    start = end - float(window)
    notes: list[str] = []
    counted = _counts(app, notes)
    browse = supports(app.backend, Browse)
    if not browse:
        notes.append(lacks(app, Browse) + ": no oldest job, throughput, wait or run times")
    rows: list[QueueRow] = []
    every: tuple[list[Sample], list[Sample]] = ([], [])
    for queue, (ready, delayed, running, failed, paused) in counted.items():
        oldest: JobRecord | None = None
        done: list[Sample] = []
        lost: list[Sample] = []
        if browse:
            if ready:
                first = app.jobs.list(queue, JobState.QUEUED, limit=1, oldest_first=True).records
                oldest = first[0] if first else None
            done = [read_finished(app.jobs, queue, JobState.SUCCEEDED, start=start, now=end, cap=cap)]
            lost = [read_finished(app.jobs, queue, JobState.FAILED, start=start, now=end, cap=cap)]
        every[0].extend(done)
        every[1].extend(lost)
        rows.append(
            QueueRow(
                queue=queue,
                ready=ready,
                delayed=delayed,
                running=running,
                failed=failed,
                paused=paused,
                oldest_age=None if oldest is None else max(0.0, end - due_of(oldest)),
                oldest_job=None if oldest is None else oldest.job.id,
                figures=figures(done, lost, start=start, now=end, buckets=buckets),
            )
        )
    rows.sort(key=worst_first)
    live = len(app.workers()) if supports(app.backend, WorkerRegistry) else None
    if live is None:
        notes.append(lacks(app, WorkerRegistry))
    if any(r.figures.sampled for r in rows):
        notes.append(f"the busiest queues' figures are from their newest {cap} finished jobs per state")
    return Overview(
        now=end,
        window=float(window),
        buckets=buckets,
        cap=cap,
        queues=tuple(rows),
        ready=sum(r.ready for r in rows),
        delayed=sum(r.delayed for r in rows),
        running=sum(r.running for r in rows),
        failed=sum(r.failed for r in rows),
        totals=figures(*every, start=start, now=end, buckets=buckets),
        workers=live,
        notes=tuple(notes),
    )
