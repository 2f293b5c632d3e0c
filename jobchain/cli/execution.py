"""How ``jobchain run`` runs its workload: on one worker here, or on a pool of worker processes.

Both submit everything first, then start the workers and take the time, and
wait until every submitted job has reached a final state (see :func:`_wait`).
With one worker its counters are read directly and the progress display is a
plugin on its ``jobchain_progress`` event; with a pool (``--processes``) the
children report their counts over their pipes, :class:`_PoolSource` sums them
and feeds the display, and the report reads :class:`PoolStats`, the children's
final reports summed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import click
from attrs import define

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.capabilities import Stats
from jobchain.cli.common import EXIT_INTERRUPTED
from jobchain.cli.processes import ChildFailed, ChildSpec, Pool, Totals
from jobchain.cli.progress import ProgressDisplay
from jobchain.cli.report import RunStats
from jobchain.cli.workload import Workload
from jobchain.handles import ChainHandle, JobHandle
from jobchain.worker import SlotStats, Worker

__all__ = ["Execution", "PoolStats", "execute_pool", "execute_worker"]

Handle = JobHandle | ChainHandle

#: how long worker processes get to start (import, open the backend) and to stop
_START_TIMEOUT = 120.0
_STOP_TIMEOUT = 60.0


@define
class Execution:
    worker: RunStats
    handles: list[Handle]
    wall: float
    interrupted: bool
    timed_out: bool
    #: why a worker process failed (the run was stopped), if one did
    failure: str | None = None


@define
class PoolStats:
    """The worker processes' final reports, summed: what the report reads of a worker."""

    concurrency: int
    counters: Totals
    slots: list[SlotStats]


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Let SIGTERM stop the run the way Ctrl-C does."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- one worker, here ---------------------------------------------------------------------


def execute_worker(
    app: App, worker: Worker, workload: Workload, display: ProgressDisplay | None, timeout: float | None
) -> Execution:
    handles: list[Handle] = []
    interrupted = timed_out = False
    wall = 0.0
    with _sigterm_interrupts():
        handles = app.submit_many(workload.targets)
        worker.expect(workload.jobs_total)
        if display is not None:
            display.start()
        try:
            t0 = time.perf_counter()
            try:
                worker.start()
                finished_at = _wait(_WorkerSource(worker), app.backend, handles, workload.jobs_total, timeout)
                timed_out = interrupted = finished_at is None
                wall = (finished_at or time.perf_counter()) - t0
            except KeyboardInterrupt:
                interrupted = True
            if timed_out:
                click.echo("time is up (--timeout): stopping", err=True)
            _stop_worker(worker, interrupted and not timed_out)
            if interrupted:  # the jobs that were running finished during stop(): count their time
                wall = time.perf_counter() - t0
        finally:
            if display is not None:
                _final_display(display, worker.counters, workload.jobs_total, wall)
    return Execution(worker=worker, handles=handles, wall=wall, interrupted=interrupted, timed_out=timed_out)


def _stop_worker(worker: Worker, interrupted: bool) -> None:
    if interrupted:
        click.echo("stopping: running jobs finish, the rest is released (Ctrl-C again to quit now)", err=True)
    try:
        worker.stop(timeout=30)
    except KeyboardInterrupt:
        click.echo("interrupted again: quitting without waiting for running jobs", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _final_display(display: ProgressDisplay, c: Any, total: int, wall: float) -> None:
    left = max(0, total - c.done - c.failed - c.skipped)
    rate = (c.done + c.failed) / wall if wall > 0 else 0.0
    display.update(done=c.done, failed=c.failed, left=left, rate=rate)
    display.stop()


# --- worker processes ---------------------------------------------------------------------


def execute_pool(
    app: App,
    specs: Sequence[ChildSpec],
    workload: Workload,
    display: ProgressDisplay | None,
    timeout: float | None,
    threads: int,
) -> Execution:
    """Run the workload on worker processes; raise :class:`ChildFailed` if one cannot start."""
    pool = Pool(specs)
    handles: list[Handle] = []
    interrupted = timed_out = False
    failure: str | None = None
    wall = 0.0
    t0: float | None = None  # set when the workers start
    with _sigterm_interrupts():
        try:
            try:
                pool.start()  # the children start up while this process submits
                handles = app.submit_many(workload.targets)
                pool.wait_ready(_START_TIMEOUT)
            except (KeyboardInterrupt, ChildFailed):
                _stop_pool(pool, announce=False)
                raise
            if display is not None:
                display.start()
            t0 = time.perf_counter()
            try:
                pool.go()
                source = _PoolSource(
                    pool, app.backend, specs[0].queues or (), display, workload.jobs_total, t0
                )
                finished_at = _wait(source, app.backend, handles, workload.jobs_total, timeout)
                timed_out = interrupted = finished_at is None
                wall = (finished_at or time.perf_counter()) - t0
            except KeyboardInterrupt:
                interrupted = True
            except ChildFailed as exc:
                interrupted = True
                failure = exc.format_message()
                click.echo(f"stopping the run: {failure}", err=True)
            if timed_out:
                click.echo("time is up (--timeout): stopping", err=True)
            _stop_pool(pool, announce=interrupted and not timed_out and failure is None)
            if interrupted:
                wall = time.perf_counter() - t0
        finally:
            pool.close()
            if display is not None and t0 is not None:
                _final_display(display, pool.totals(), workload.jobs_total, wall)
    stats = PoolStats(concurrency=threads, counters=pool.totals(), slots=pool.slots())
    return Execution(
        worker=stats,
        handles=handles,
        wall=wall,
        interrupted=interrupted,
        timed_out=timed_out,
        failure=failure or pool.failure(),
    )


def _stop_pool(pool: Pool, *, announce: bool) -> None:
    if announce:
        click.echo("stopping: running jobs finish, the rest is released (Ctrl-C again to quit now)", err=True)
    pool.request_stop()
    try:
        if not pool.join(_STOP_TIMEOUT):
            click.echo(f"worker processes still running after {_STOP_TIMEOUT:g}s: killing them", err=True)
            pool.kill_all()
    except KeyboardInterrupt:
        click.echo("interrupted again: quitting without waiting for running jobs", err=True)
        pool.signal_all(signal.SIGTERM)  # after a stop request: quit now
        if not pool.join(10):
            pool.kill_all()
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


# --- waiting until the workload is done ---------------------------------------------------


class _Source(Protocol):
    def finished(self) -> int:
        """Jobs that reached a final state (succeeded, failed, not executed) as the workers count them."""

    def idle(self) -> bool:
        """True when the workers hold nothing and their queues have nothing ready, delayed or in flight."""


class _WorkerSource:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def finished(self) -> int:
        c = self.worker.counters
        return c.done + c.failed + c.skipped

    def idle(self) -> bool:
        return self.worker.drain(timeout=0)


class _PoolSource:
    """The children's counts, summed; also keeps the progress display up to date."""

    def __init__(
        self,
        pool: Pool,
        backend: Backend,
        queues: Sequence[str],
        display: ProgressDisplay | None,
        total: int,
        t0: float,
    ) -> None:
        self.pool = pool
        self.backend = backend
        self.queues = set(queues)
        self.display = display
        self.total = total
        self.t0 = t0
        self._shown = 0.0

    def finished(self) -> int:
        failure = self.pool.failure()
        if failure is not None:
            raise ChildFailed(failure)
        t = self.pool.totals()
        now = time.perf_counter()
        if self.display is not None and now - self._shown >= 0.2:
            self._shown = now
            rate = (t.done + t.failed) / max(1e-9, now - self.t0)
            left = max(0, self.total - t.done - t.failed - t.skipped)
            self.display.update(done=t.done, failed=t.failed, left=left, rate=rate)
        return t.done + t.failed + t.skipped

    def idle(self) -> bool:
        if self.pool.held() or not isinstance(self.backend, Stats):
            return False  # without counts to read, the records decide
        stats = self.backend.stats()
        return not any(s.ready or s.delayed or s.in_flight for s in stats if s.queue in self.queues)


def _wait(
    source: _Source, backend: Backend, handles: Sequence[Handle], total: int, timeout: float | None
) -> float | None:
    """Block until every submitted job reached a final state; return when, or None on ``timeout``.

    The workers' counters say when that happened (not-executed chain steps
    count as final) and the submitted records confirm it. Should the counts
    get there early (someone else's jobs in a shared queue were counted) the
    records decide; should they never get there, workers with nothing to do
    and nothing held end the wait too.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    next_check = time.monotonic() + 0.25
    idle_checks = 0
    reached = False
    while True:
        if not reached and source.finished() >= total:
            finished_at = time.perf_counter()
            if _all_final(backend, handles):
                return finished_at
            reached = True
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return None
        if now >= next_check:
            next_check = now + 0.25
            if reached and _all_final(backend, handles):
                return time.perf_counter()
            idle_checks = idle_checks + 1 if source.idle() else 0
            if idle_checks >= 2:
                return time.perf_counter()
        time.sleep(0.002)


def _all_final(backend: Backend, handles: Sequence[Handle]) -> bool:
    for handle in handles:
        if isinstance(handle, JobHandle):
            record = backend.get_job(handle.id)
            if record is None or not record.state.finished:
                return False
        else:
            chain = backend.get_chain(handle.id)
            if chain is None or not chain.finished:
                return False
    return True
