"""The :class:`Worker`: its parts composed, and its life cycle (start, run, stop, drain)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from jobchain.capabilities import Stats, require
from jobchain.errors import BackendAuthError, WorkerNameTakenError
from jobchain.model import Released
from jobchain.worker._aio import AsyncRunner
from jobchain.worker._core import _Counters, _left
from jobchain.worker._monitor import Monitor
from jobchain.worker._pool import Pool
from jobchain.worker._settling import Settling


class Worker(AsyncRunner, Settling, Monitor, Pool):
    """Runs the tasks of a :class:`~jobchain.worker.Runtime` from its backend.

    ``runtime``: the tasks, backend, events, clock and settings it runs with;
    an App (anything with a ``runtime()`` method) stands for ``app.runtime()``.
    ``queues``: which queues to take jobs from (default: every queue a task uses).
    ``concurrency``: threads. ``async_concurrency``: coroutine jobs (of
    ``async def`` tasks) the worker's event loop runs at once (default 100, at
    most 10000); the loop starts when a task is async or this is given, see
    :mod:`jobchain.worker._aio`. ``loop_block_threshold``: seconds the loop may
    not answer before ``event_loop_blocked`` is logged. ``lease``: seconds a delivery is held before it is
    given to another worker unless extended (the monitor extends every
    ``lease / 3``). ``prefetch``: deliveries reserved per batch (default:
    adapted to the jobs: ``concurrency`` while jobs take 20 ms or more, up to 64
    while they are shorter, see :func:`~jobchain.worker._core.adaptive_prefetch`).
    ``max_redeliveries``: leases lost while the job was
    running (its worker died or stalled) tolerated per attempt before the job
    is failed as ``WorkerLost`` (this does not use up retry attempts; leases
    lost by jobs only reserved do not count, see :meth:`Backend.mark_running
    <jobchain.backend.Backend.mark_running>`). ``poll``: longest blocking wait
    of one reserve call.

    A job is started only while the worker still holds its lease: each
    reserved delivery has a local deadline (the monotonic time before the
    reserve call, plus the lease, minus a margin), pushed on by every
    successful extension; a delivery past it, or whose extension the backend
    refused, is dropped unstarted (logged as ``lease_expired_before_start``).
    A job delivered before in this attempt (a *suspect*: its last worker may
    have died running it) is marked running on the backend first, which also
    checks the lease there, and runs alone on this worker: the outcomes of the
    jobs that ran before it are settled before it starts, and its own outcome
    before another job starts, so that if it kills the process only it was
    running (no job that merely finished beside it is charged with the death).
    ``reconnect_base``, ``reconnect_cap``: a backend call that fails is retried
    after an exponential backoff from ``reconnect_base`` seconds, capped at
    ``reconnect_cap`` seconds, with jitter; the worker never gives up, except
    when the backend refuses its credentials (:class:`~jobchain.BackendAuthError`):
    :meth:`start` raises it, and met later it stops the worker, is kept in
    :attr:`fatal` and raised by :meth:`run`.

    A name is held by one live worker at a time: :meth:`start` raises
    :class:`~jobchain.errors.WorkerNameTakenError` when another worker with a
    fresh heartbeat holds ``name``, and the worker reserves nothing before its
    registration went through (so it resumes a dead namesake's jobs only once
    the name is its own). A worker that finds its name taken later (it was
    paused past its heartbeat ttl and another worker took the name) stops
    reserving and stops; :attr:`name_lost` then holds the error.
    """

    #: seconds stop() waits for a reserve in flight before it goes on without it
    FETCH_GRACE = 0.02

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> Worker:
        """Start the threads and return at once."""
        if self._threads:
            raise RuntimeError("worker already started")
        self._started_at = self.runtime.clock.now()
        self.counters = _Counters()
        try:
            if self._registry is not None:
                self._claim()
        except (BackendAuthError, WorkerNameTakenError):
            raise  # waiting fixes neither a password nor a name held by a live worker: refuse to start
        except Exception as exc:  # the monitor registers the worker once the backend answers
            self.outage.failed("heartbeat", exc)
        else:
            self._registered.set()
        self.events.worker_started(worker=self.name, queues=self.queues, concurrency=self.concurrency)
        self.log.info("worker_started", queues=list(self.queues), concurrency=self.concurrency)
        self._aio_start()  # before the fetcher: it reserves for the loop too
        for slot in self.slots:
            thread = self._pool_thread(slot)
            self._threads.append(thread)
            thread.start()
        self._settler = threading.Thread(target=self._settler_main, name="jobchain-settler", daemon=True)
        self._settler.start()
        self._fetcher = threading.Thread(target=self._fetcher_main, name="jobchain-fetcher", daemon=True)
        self._fetcher.start()
        self._monitor = threading.Thread(target=self._monitor_main, name="jobchain-monitor", daemon=True)
        self._monitor.start()
        return self

    def run(self, *, burst: bool = False) -> None:
        """Start and block until stopped (by :meth:`stop`, a remote request or Ctrl-C).

        ``burst=True``: stop by itself once its queues are idle (nothing ready,
        delayed or in flight: :meth:`drain`), so a run works off what is there,
        including what the jobs it runs submit, then returns. That needs the
        backend's :class:`~jobchain.capabilities.Stats`;
        :class:`~jobchain.errors.NotSupportedError` before starting without it.
        """
        if burst:
            require(self.backend, Stats)
        self.start()
        try:
            while not self._stopping.wait(0.2 if not burst else 0.0):
                if burst and self.drain(timeout=0.2):
                    break
        except KeyboardInterrupt:
            self.log.info("worker_interrupted")
        finally:
            self.stop()
        if self.fatal is not None:
            raise self.fatal

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop gracefully: running jobs finish, unstarted ones are released, outcomes are settled.

        Returns True when everything the worker held was settled within ``timeout``.
        Otherwise (a job still running, or the backend down until the end) it
        returns False after ``timeout`` seconds and logs the ids of the jobs it
        left (``jobs_left_for_lease_expiry``): their leases expire and another
        worker gets them, so nothing is lost.
        """
        self._stopping.set()
        self.outage.kick()  # a reserver backing off notices the stop now
        with self._cv:
            self._cv.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        clean = True
        with self._cv:
            self._fetch_cv.notify_all()
        self._wake_reserve()
        clean = self._join_pool(deadline)
        clean = self._aio_stop(deadline) and clean
        if self._fetcher is not None:
            # a reserve in flight adds to the buffer: wait for it briefly (a woken one returns at once); one
            # that keeps blocking (a blocking read on a server) is left behind and releases what it returns
            grace = self.FETCH_GRACE if deadline is None else min(self.FETCH_GRACE, _left(deadline) or 0.0)
            self._fetcher.join(grace)
            with self._cv:
                self._orphaned = self._fetcher.is_alive()
        with self._cv:
            unstarted = [*self._buffer, *self._abuffer]
            self._buffer.clear()
            self._abuffer.clear()
        if unstarted:
            self._pending_add([Released(delivery=d) for d in unstarted])
        # on a thread of its own, so that one backend call that blocks cannot hold stop() past its timeout
        _bounded(self._flush_until, deadline, args=(deadline,), name="jobchain-stop-settle")
        self._abandon.set()  # a thread still settling gives up now or at its next failure
        self.outage.kick()
        with self._cv:
            if self._finished:
                return clean and not self._held
            self._finished = True
            left = sorted(self._held)
        self._stopped.set()
        with self._cv:
            self._settle_cv.notify_all()
        if self._monitor is not None:
            self._monitor.join(5.0 if deadline is None else min(5.0, max(0.1, _left(deadline) or 0.0)))
        if left:
            self.log.warning("jobs_left_for_lease_expiry", job_ids=left, count=len(left))
        # the registration expires after heartbeat_ttl anyway: no retries, and no waiting on a dead backend
        if self.outage.active:
            self.log.warning("worker_unregister_skipped", reason="backend unavailable")
        else:
            until = None if deadline is None else max(deadline, time.monotonic() + 0.5)
            if not _bounded(self._unregister, until, name="jobchain-stop-unregister"):
                self.log.warning("worker_unregister_skipped", reason="backend did not answer in time")
        processed = self.counters.done + self.counters.failed
        self.events.worker_stopped(worker=self.name, processed=processed)
        self.log.info(
            "worker_stopped", processed=processed, released=len(unstarted), clean=clean, unsettled=len(left)
        )
        return clean and not left

    def _wake_reserve(self) -> None:
        """Ask the backend to end this worker's blocking reserve now (best effort)."""
        try:
            self.backend.wake(self.name)
        except Exception as exc:
            self.log.debug("reserve_wake_failed", error_type=type(exc).__name__, error=str(exc))

    def _claim(self) -> None:
        """Register the name; take it over from a holder whose process on this host is gone.

        A supervisor restarting a killed worker at once finds the dead one's
        heartbeat still fresh: its host is this one and its pid no longer
        exists, so it is dead and its name is free to take.
        """
        try:
            self._heartbeat()
        except WorkerNameTakenError as exc:
            if not _gone_from_this_host(exc.host, exc.pid):
                raise
            registry = self._registry
            assert registry is not None  # (only a registry refuses a name)
            holder = next((w for w in registry.workers() if w.name == self.name), None)
            if holder is None or (holder.host, holder.pid) != (exc.host, exc.pid):
                raise
            self.log.info(
                "worker_name_taken_over", dead_pid=exc.pid, reason="its process on this host is gone"
            )
            registry.remove_worker(self.name, holder.instance)
            self._heartbeat()  # a third worker taking the name meanwhile makes this raise

    def _unregister(self) -> None:
        if self._registry is None:
            return
        try:
            self._registry.remove_worker(self.name, self.instance)
        except Exception as exc:
            self.log.warning("worker_unregister_failed", error=str(exc), error_type=type(exc).__name__)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def expect(self, total: int) -> None:
        """Tell the worker how many jobs to expect, for progress events with ``total``/``left``."""
        self.expected = total

    def held(self) -> int:
        """Deliveries this worker holds: buffered, running or waiting to be settled."""
        with self._cv:
            return len(self._held)

    def drain(self, timeout: float | None = None, *, interval: float = 0.01) -> bool:
        """Wait until the worker's queues have nothing ready, delayed or in flight.

        Idle means: this worker holds nothing before and after reading the
        queues' counts, and two reads ``interval`` apart find nothing. A backend
        whose counts are not one snapshot (a Redis Cluster reads each queue on
        its own shard) may show a chain's step settled and its next step not yet
        stored in one read; the second read sees the next step.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        counts = require(self.backend, Stats)  # before the loop: not an outage to wait out
        queues = set(self.queues)
        idle = 0
        while True:
            busy = bool(self.held())
            if not busy:
                try:
                    stats = counts.stats()
                except Exception as exc:  # cannot tell while the backend is down: keep waiting
                    self.outage.failed("stats", exc)
                    busy = True
                else:
                    self.outage.succeeded("stats")
                    busy = any(s.ready or s.delayed or s.in_flight for s in stats if s.queue in queues)
                    busy = busy or bool(self.held())  # a job reserved and settled while the counts were read
            idle = 0 if busy else idle + 1
            if idle >= 2:
                return True
            if busy and deadline is not None and time.monotonic() >= deadline:
                return False  # (an idle read is confirmed even past the deadline: timeout=0 asks "idle now?")
            time.sleep(interval)


def _gone_from_this_host(host: str, pid: int) -> bool:
    """True if ``host`` is this host and no process ``pid`` runs here (POSIX only; elsewhere False)."""
    if os.name != "posix" or host != socket.gethostname() or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


def _bounded(
    fn: Callable[..., object], deadline: float | None, *, args: tuple[Any, ...] = (), name: str
) -> bool:
    """Run ``fn(*args)`` on a daemon thread until ``deadline``; False if it had not returned by then."""
    thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
    thread.start()
    thread.join(_left(deadline))
    return not thread.is_alive()
