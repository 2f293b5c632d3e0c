"""What the dashboard's pages show: frozen values gathered from a :class:`jobchain.App`, nothing HTTP.

One function per page: :func:`overview`, :func:`queue_page`,
:func:`job_detail`, :func:`chain_detail`, :func:`failed_page` (with
:func:`failed_matching`, the ids a bulk action touches) and
:func:`workers`. They work on any backend the App opens: a capability the
backend lacks (:mod:`jobchain.capabilities`) leaves its section empty and
adds a line to the value's ``notes``; it never raises. A backend that cannot
be reached raises as it does everywhere (:class:`jobchain.errors.BackendError`).
Every parameter a request can set is checked here: a bad one is a
ValueError with a one-line message.

Every read is bounded: the overview reads at most ``cap`` finished records
per queue and state (:mod:`jobchain_dashboard._figures` says how the
figures are made and what "sampled" means), the failed page scans at most
``scan`` entries, a worker's running jobs come from one page per queue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from attrs import field, frozen

from jobchain.browsing import BROWSABLE, MAX_LIMIT, decode_cursor, parse_state
from jobchain.capabilities import Browse, Cancel, FailedQueue, Pause, ScheduleSlots, WorkerRegistry, supports
from jobchain.model import ChainRecord, ErrorInfo, FailedEntry, JobRecord, JobState, StepState
from jobchain.scheduler import ScheduleInfo, describe
from jobchain_dashboard._figures import (
    MAX_CAP,
    MAX_NAME,
    Figures,
    Overview,
    QueueRow,
    check_int,
    check_name,
    check_now,
    lacks,
    overview,
    run_of,
    started_of,
    wait_of,
)

if TYPE_CHECKING:
    from jobchain.app import App

__all__ = [
    "MAX_NAME",
    "ChainDetail",
    "FailedPage",
    "Figures",
    "JobDetail",
    "MemberView",
    "Overview",
    "QueuePage",
    "QueueRow",
    "StepView",
    "WorkerRow",
    "WorkersView",
    "chain_detail",
    "failed_matching",
    "failed_page",
    "job_detail",
    "overview",
    "queue_page",
    "workers",
]

#: the longest cursor a request may carry (the backends' cursors are far shorter)
MAX_CURSOR = 512
#: bounds of the failed page's parameters
MAX_OFFSET = 1_000_000
MAX_SCAN = 1_000_000


def _opt_name(what: str, value: object) -> str | None:
    return None if value is None else check_name(what, value)


# --- one queue ------------------------------------------------------------------------


@frozen(kw_only=True)
class QueuePage:
    """One page of a queue's jobs in one state, with the counts of every state and the task filter."""

    queue: str
    state: JobState
    task: str | None
    limit: int
    records: tuple[JobRecord, ...]
    #: the cursor of the next page (None: this is the last)
    cursor: str | None
    #: every browsable state, in :data:`jobchain.browsing.BROWSABLE` order (empty: not known)
    counts: Mapping[JobState, int] = field(factory=dict, hash=False)
    paused: bool = False
    #: the task names to offer in the filter: the App's tasks of this queue and those listed
    tasks: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def queue_page(
    app: App,
    queue: str,
    state: JobState | str,
    *,
    task: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> QueuePage:
    """A page of ``queue``'s jobs in ``state`` (a JobState or its name, ``ready`` too), newest first."""
    queue = check_name("queue", queue)
    if not isinstance(state, str):  # a JobState is a str too
        raise ValueError(f"state must be one of ready, {', '.join(s.value for s in BROWSABLE)}")
    wanted = parse_state(state[:40])
    task = _opt_name("task", task)
    limit = check_int("limit", limit, 1, MAX_LIMIT)
    if cursor is not None:
        try:
            if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR:
                raise ValueError
            decode_cursor(cursor)
        except ValueError:
            raise ValueError("not a cursor of this listing") from None
    backend = app.backend
    notes: list[str] = []
    records: tuple[JobRecord, ...] = ()
    following: str | None = None
    counts: dict[JobState, int] = {}
    if supports(backend, Browse):
        page = app.jobs.list(queue, wanted, task=task, limit=limit, cursor=cursor)
        records, following = page.records, page.cursor
        found = app.jobs.counts(queue)
        counts = {s: found.get(s, 0) for s in BROWSABLE}
    else:
        notes.append(lacks(app, Browse))
    paused = queue in app.paused() if supports(backend, Pause) else False
    tasks = {t.name for t in app.tasks.values() if t.queue == queue} | {r.job.task for r in records}
    return QueuePage(
        queue=queue,
        state=wanted,
        task=task,
        limit=limit,
        records=records,
        cursor=following,
        counts=counts,
        paused=paused,
        tasks=tuple(sorted(tasks | ({task} if task else set()))),
        notes=tuple(notes),
    )


# --- one job --------------------------------------------------------------------------


@frozen(kw_only=True)
class JobDetail:
    """One job: its record, every attempt's error (oldest first), its chain, and what can be done to it."""

    record: JobRecord
    #: each an ErrorInfo: type, message, traceback, when (``at``), how long it ran, the backoff after it
    errors: tuple[ErrorInfo, ...]
    #: seconds from due to start, and from start to finish, of the last attempt (None: not known)
    #: when the last attempt started (a failed one's from its error: ``at - ran``; None: not known)
    started: float | None
    wait: float | None
    run: float | None
    chain_id: str | None
    #: the job's step in its chain, counted from 1 (None: not a chain step)
    chain_step: int | None
    in_failed_queue: bool
    #: queued, delayed or running, and the backend can cancel
    can_cancel: bool
    #: failed and in the failed queue
    can_redrive: bool
    notes: tuple[str, ...] = ()

    @property
    def state(self) -> JobState:
        return self.record.state


def job_detail(app: App, job_id: str) -> JobDetail | None:
    """The job ``job_id``, or None when the backend does not know it."""
    job_id = check_name("job id", job_id)
    record = app.jobs.get(job_id)
    if record is None:
        return None
    backend = app.backend
    notes: list[str] = []
    history = record.errors
    errors = history or ((record.error,) if record.error is not None else ())
    in_failed = False
    if record.state is JobState.FAILED:
        if supports(backend, FailedQueue):
            in_failed = app.failed.show(job_id) is not None
        else:
            notes.append(lacks(app, FailedQueue))
    cancellable = record.state in (JobState.QUEUED, JobState.DELAYED, JobState.RUNNING)
    if cancellable and not supports(backend, Cancel):
        notes.append(lacks(app, Cancel))
    ref = record.job.chain
    return JobDetail(
        record=record,
        errors=tuple(errors),
        started=started_of(record),
        wait=wait_of(record),
        run=run_of(record),
        chain_id=None if ref is None else ref.chain_id,
        chain_step=None if ref is None else ref.step + 1,
        in_failed_queue=in_failed,
        can_cancel=cancellable and supports(backend, Cancel),
        can_redrive=in_failed,
        notes=tuple(notes),
    )


# --- one chain ------------------------------------------------------------------------


@frozen(kw_only=True)
class MemberView:
    """One job of a chain step."""

    job_id: str
    task: str
    state: StepState
    started_at: float | None
    finished_at: float | None
    error: ErrorInfo | None


@frozen(kw_only=True)
class StepView:
    """One step of a chain: its state and its jobs (several for a group step)."""

    #: counted from 1
    index: int
    kind: str
    label: str
    state: StepState
    members: tuple[MemberView, ...]

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(m.job_id for m in self.members)


@frozen(kw_only=True)
class ChainDetail:
    """A chain or group: its steps in order, ``A (succeeded) -> B (failed) -> C (not executed)``,
    and the failed step's jobs a "re-drive from the failed step" moves."""

    record: ChainRecord
    rendered: str
    steps: tuple[StepView, ...]
    #: the first failed step, counted from 1 (None: no step failed)
    failed_step: int | None
    #: that step's failed jobs
    failed_job_ids: tuple[str, ...]
    #: those of them in the failed queue: what a re-drive moves (the chain resumes from that step)
    redrive_ids: tuple[str, ...]
    notes: tuple[str, ...] = ()


def chain_detail(app: App, chain_id: str) -> ChainDetail | None:
    """The chain or group ``chain_id`` (its steps shown running while their job runs), or None."""
    chain_id = check_name("chain id", chain_id)
    record = app.chain(chain_id).record()
    if record is None:
        return None
    steps = tuple(
        StepView(
            index=index,
            kind=step.kind,
            label=step.label,
            state=step.state,
            members=tuple(
                MemberView(
                    job_id=m.job_id,
                    task=m.task,
                    state=m.state,
                    started_at=m.started_at,
                    finished_at=m.finished_at,
                    error=m.error,
                )
                for m in step.members
            ),
        )
        for index, step in enumerate(record.steps, start=1)
    )
    failed = next((s for s in steps if s.state is StepState.FAILED), None)
    failed_ids = tuple(m.job_id for m in failed.members if m.state is StepState.FAILED) if failed else ()
    notes: list[str] = []
    redrive: tuple[str, ...] = ()
    if failed_ids:
        if supports(app.backend, FailedQueue):
            redrive = tuple(i for i in failed_ids if app.failed.show(i) is not None)
        else:
            notes.append(lacks(app, FailedQueue))
    return ChainDetail(
        record=record,
        rendered=record.render(),
        steps=steps,
        failed_step=None if failed is None else failed.index,
        failed_job_ids=failed_ids,
        redrive_ids=redrive,
        notes=tuple(notes),
    )


# --- the failed queue -----------------------------------------------------------------


@frozen(kw_only=True)
class FailedPage:
    """A page of the failed queue's entries that match the filter, and the counts by task and error type.

    Everything comes from one scan of at most ``scan`` entries, oldest first;
    ``capped`` says the failed queue holds more (the counts are of the
    entries scanned). ``offset`` counts matching entries.
    """

    entries: tuple[FailedEntry, ...]
    task: str | None
    error_type: str | None
    limit: int
    offset: int
    #: entries scanned that match the filter
    matched: int
    next_offset: int | None
    #: (name, entries) of every task and error type scanned, most entries first
    by_task: tuple[tuple[str, int], ...]
    by_error: tuple[tuple[str, int], ...]
    scanned: int
    capped: bool
    notes: tuple[str, ...] = ()


def _matches(entry: FailedEntry, task: str | None, error_type: str | None) -> bool:
    return (task is None or entry.job.task == task) and (error_type is None or entry.error.type == error_type)


def _ranked(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def failed_page(
    app: App,
    *,
    task: str | None = None,
    error_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
    scan: int = 10_000,
) -> FailedPage:
    """The failed queue, oldest first, filtered by task and error type, with its facets."""
    task = _opt_name("task", task)
    error_type = _opt_name("error type", error_type)
    limit = check_int("limit", limit, 1, MAX_LIMIT)
    offset = check_int("offset", offset, 0, MAX_OFFSET)
    scan = check_int("scan", scan, 1, MAX_SCAN)
    if not supports(app.backend, FailedQueue):
        return FailedPage(
            entries=(), task=task, error_type=error_type, limit=limit, offset=offset, matched=0,
            next_offset=None, by_task=(), by_error=(), scanned=0, capped=False,
            notes=(lacks(app, FailedQueue),),
        )  # fmt: skip
    by_task: Counter[str] = Counter()
    by_error: Counter[str] = Counter()
    shown: list[FailedEntry] = []
    matched = scanned = 0
    capped = False
    for entry in app.failed.iter():
        if scanned == scan:
            capped = True
            break
        scanned += 1
        by_task[entry.job.task] += 1
        by_error[entry.error.type] += 1
        if _matches(entry, task, error_type):
            if offset <= matched < offset + limit:
                shown.append(entry)
            matched += 1
    return FailedPage(
        entries=tuple(shown),
        task=task,
        error_type=error_type,
        limit=limit,
        offset=offset,
        matched=matched,
        next_offset=offset + limit if matched > offset + limit else None,
        by_task=_ranked(by_task),
        by_error=_ranked(by_error),
        scanned=scanned,
        capped=capped,
        notes=(f"counts are of the oldest {scan} failed jobs",) if capped else (),
    )


def failed_matching(
    app: App, *, task: str | None = None, error_type: str | None = None, cap: int = 10_000
) -> list[str]:
    """The ids of the failed entries a bulk re-drive or purge with this filter acts on, oldest first.

    At most ``cap`` of them (a list of ``cap`` ids may leave more behind); an
    empty list on a backend without a failed queue.
    """
    task = _opt_name("task", task)
    error_type = _opt_name("error type", error_type)
    cap = check_int("cap", cap, 1, MAX_CAP)
    if not supports(app.backend, FailedQueue):
        return []
    found: list[str] = []
    for entry in app.failed.iter():
        if _matches(entry, task, error_type):
            found.append(entry.job.id)
            if len(found) == cap:
                break
    return found


# --- workers and schedules ------------------------------------------------------------


@frozen(kw_only=True)
class WorkerRow:
    """A live worker as the workers page shows it."""

    name: str
    host: str
    pid: int
    queues: tuple[str, ...]
    labels: Mapping[str, str] = field(factory=dict, hash=False)
    concurrency: int
    state: str
    started_at: float
    #: seconds since its last heartbeat
    heartbeat_age: float
    #: jobs it holds that wait for a rate or concurrency limit
    held: int
    #: ids of the jobs it runs now (from one page of each queue's running jobs)
    running: tuple[str, ...]


@frozen(kw_only=True)
class WorkersView:
    """The live workers by name, and the App's schedules with their next and last runs."""

    workers: tuple[WorkerRow, ...]
    schedules: tuple[ScheduleInfo, ...]
    notes: tuple[str, ...] = ()


def workers(app: App, now: float | None = None) -> WorkersView:
    """The workers page: live workers (with the jobs each runs) and the schedules the App declares."""
    end = check_now(app, now)
    backend = app.backend
    notes: list[str] = []
    live = app.workers() if supports(backend, WorkerRegistry) else []
    if not supports(backend, WorkerRegistry):
        notes.append(lacks(app, WorkerRegistry))
    running: dict[str, list[str]] = {}
    if live and supports(backend, Browse):
        for queue in sorted({q for w in live for q in w.queues}):
            page = app.jobs.list(queue, JobState.RUNNING, limit=MAX_LIMIT, oldest_first=True)
            for record in page.records:
                if record.worker is not None:
                    running.setdefault(record.worker, []).append(record.job.id)
            if page.cursor is not None:
                notes.append(f"queue {queue} runs more than {MAX_LIMIT} jobs: the oldest are listed")
    elif live:
        notes.append(lacks(app, Browse) + ": the jobs each worker runs are not listed")
    rows = tuple(
        WorkerRow(
            name=w.name,
            host=w.host,
            pid=w.pid,
            queues=w.queues,
            labels=dict(w.labels),
            concurrency=w.concurrency,
            state=w.state,
            started_at=w.started_at,
            heartbeat_age=max(0.0, end - w.heartbeat_at),
            held=w.held,
            running=tuple(running.get(w.name, ())),
        )
        for w in sorted(live, key=lambda w: w.name)
    )
    schedules: tuple[ScheduleInfo, ...] = ()
    if app.schedules:
        if supports(backend, ScheduleSlots):
            schedules = tuple(describe(app))
        else:
            notes.append(lacks(app, ScheduleSlots))
    return WorkersView(workers=rows, schedules=schedules, notes=tuple(notes))
