"""The worker: runs jobs from a backend on a pool of threads.

Threads share a local buffer of deliveries. A thread that finds the buffer
empty reserves the next batch for everyone (one backend call, blocking up to
``poll`` seconds while the queues are empty); a thread that finishes a job
adds its outcome to a pending list and, unless another thread is already
doing it, settles everything pending in one backend call. So under load one
call serves many jobs, and at light load nothing waits for a timer.

A monitor thread extends the leases of everything the worker holds, refreshes
its registration (and so learns of a remote stop request), enforces per-job
timeouts and emits progress events.

A backend call that raises never ends a thread: reservation and settlement
retry after a capped exponential backoff with jitter (:class:`Backoff`),
outcomes wait in the pending list until the backend takes them, and the
monitor's calls are retried on its next rounds. :class:`Outage` logs each
outage once, when it starts and when it ends. A settlement the backend
refuses (an error that is not an outage) is split: the outcomes are settled
one by one, so one the backend will not take holds up no other (see
:meth:`Worker._settle_each`).

Nothing a task does ends a pool thread either: whatever it raises (a
``BaseException``, an exception that cannot be printed) or returns is
recorded as its failure. A pool thread that dies anyway (a bug) is replaced,
and its job is released (``worker_thread_died``, ``counters.threads_died``).
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import random
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from attrs import define, field

from jobchain import signing
from jobchain.errors import (
    BackendAuthError,
    BackendFullError,
    ConfigurationError,
    InvalidJobError,
    JobTimeout,
    ResultTooLarge,
    UnknownTaskError,
    WorkerLost,
    WorkerNameTakenError,
)
from jobchain.errortext import cap, describe, format_traceback, type_name
from jobchain.model import (
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    ErrorInfo,
    Failed,
    Outcome,
    Released,
    Retried,
    SettleResult,
    StepState,
    WorkerInfo,
)
from jobchain.outage import Backoff, Outage, is_unavailable
from jobchain.payload import find_non_json, has_unstorable

if TYPE_CHECKING:
    from jobchain.app import App

__all__ = ["SlotStats", "Worker"]

logger = structlog.get_logger("jobchain.worker")

#: the error type of the failure settled in place of an outcome the backend refused
SETTLE_REFUSED = "SettleRefused"

_result_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_utf8_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_NEVER = float("inf")


class JobExpired(Exception):  # noqa: N818 - recorded as the error type name
    """The job was not started before its expiry time."""


@define
class SlotStats:
    """What one worker thread did."""

    name: str
    jobs: int = 0
    succeeded: int = 0
    retries: int = 0
    failures: int = 0
    busy_seconds: float = 0.0


@define
class _Running:
    delivery: Delivery
    thread_id: int
    deadline: float | None
    timed_out: bool = False


@define
class _Counters:
    done: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    rejected: int = 0
    #: pool threads that died (a bug in the worker, never a task's doing) and were replaced
    threads_died: int = 0
    #: outcomes the backend refused (not an outage): turned into failures, or left for lease expiry
    refused: int = 0
    started: float = field(factory=time.monotonic)


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(16):04x}"


class Worker:
    """Runs the App's tasks from its backend.

    ``queues``: which queues to take jobs from (default: every queue a task uses).
    ``concurrency``: threads. ``lease``: seconds a delivery is held before it is
    given to another worker unless extended (the monitor extends every
    ``lease / 3``). ``prefetch``: deliveries reserved per batch (default:
    ``concurrency``). ``max_redeliveries``: leases lost while the job was
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

    #: how many times an outcome refused on its own is tried before a failure is settled instead
    SETTLE_TRIES = 8

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 8,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        lease: float = 30.0,
        prefetch: int | None = None,
        max_redeliveries: int = 3,
        poll: float = 1.0,
        heartbeat_ttl: float | None = None,
        progress_interval: float = 0.5,
        slot_names: Sequence[str] | None = None,
        rng: random.Random | None = None,
        reconnect_base: float = 0.05,
        reconnect_cap: float = 5.0,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if lease <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch!r}")
        if max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {max_redeliveries!r}")
        self.app = app
        self.backend = app.backend
        self.queues = tuple(queues) if queues else app.queues
        if not self.queues or not all(isinstance(q, str) and q for q in self.queues):
            raise ValueError(f"queues must be non-empty names, got {queues!r}")
        self.concurrency = concurrency
        self.name = name or _default_name()
        where = find_non_json(self.name, "name") or find_non_json(dict(labels or {}), "labels")
        if where is not None:  # a name from undecodable command-line bytes: no backend could store it
            raise ConfigurationError(f"worker name and labels must be valid UTF-8 text; found {where}")
        #: random per Worker object, stored in the registration: tells this worker from a namesake
        self.instance = secrets.token_hex(8)
        #: set when another worker took this worker's name while it ran (it then stops)
        self.name_lost: WorkerNameTakenError | None = None
        self.labels = dict(labels or {})
        self.lease = float(lease)
        self.prefetch = prefetch or concurrency
        self.max_redeliveries = max_redeliveries
        self.poll = poll
        self.heartbeat_ttl = heartbeat_ttl or max(10.0, self.lease)
        self.progress_interval = progress_interval
        self.rng = rng or random.Random()
        names = list(slot_names or [f"worker-{i + 1}" for i in range(concurrency)])
        if len(names) != concurrency:
            raise ValueError("slot_names must name every thread")
        self.slots = [SlotStats(name=n) for n in names]
        self.expected: int | None = None
        self.counters = _Counters()
        self.plugins = app.plugins
        self.log = logger.bind(worker=self.name)
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        # one backoff per role: only the fetching thread reserves, only the flushing one settles
        self._reserve_backoff = Backoff(base=reconnect_base, cap=reconnect_cap, rng=self.rng)
        self._settle_backoff = Backoff(base=reconnect_base, cap=reconnect_cap, rng=self.rng)
        self.outage = Outage(self.log)

        lock = threading.Lock()
        self._cv = threading.Condition(lock)
        #: wakes the settler thread (same lock as ``_cv``: it guards the pending outcomes too)
        self._settle_cv = threading.Condition(lock)
        #: wakes the fetcher thread when the buffer of reserved jobs runs dry
        self._fetch_cv = threading.Condition(lock)
        self._settler: threading.Thread | None = None
        self._fetcher: threading.Thread | None = None
        self._buffer: deque[Delivery] = deque()
        self._fetching = False
        self._pending: list[Outcome] = []
        self._flushing = False
        self._settling: list[Outcome] = []
        # set once stop() ran out of time: a settle that fails from then on is given up
        self._abandon = threading.Event()
        self._finished = False
        self._held: dict[str, Delivery] = {}
        #: how many pool threads died running each job (a bug): the second death fails the job
        self._deaths: dict[str, int] = {}
        #: token -> local monotonic time after which a reserved, unstarted delivery may no longer start
        self._deadline: dict[str, float] = {}
        self._lease_margin = min(1.0, self.lease / 10)
        self._wait = min(self.poll, self.lease / 4)
        #: pool thread -> the delivery it runs (set by _next; cleared by its next call to _next)
        self._busy: dict[threading.Thread, Delivery] = {}
        #: job id of the suspect that runs (or waits to run) alone; no other job starts meanwhile
        self._solo: str | None = None
        self._running: dict[str, _Running] = {}
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        #: the name is registered as this worker's: nothing is reserved before
        self._registered = threading.Event()
        self._threads: list[threading.Thread] = []
        self._monitor: threading.Thread | None = None
        self._started_at = 0.0
        self._idle_threads = 0
        #: the error that stopped the worker: the backend refused its credentials (BackendAuthError)
        self.fatal: BackendAuthError | None = None

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> Worker:
        """Start the threads and return at once."""
        if self._threads:
            raise RuntimeError("worker already started")
        self._started_at = self.app.clock.now()
        self.counters = _Counters()
        try:
            self._claim()
        except (BackendAuthError, WorkerNameTakenError):
            raise  # waiting fixes neither a password nor a name held by a live worker: refuse to start
        except Exception as exc:  # the monitor registers the worker once the backend answers
            self.outage.failed("heartbeat", exc)
        else:
            self._registered.set()
        self.plugins.emit(
            "jobchain_worker_started", worker=self.name, queues=self.queues, concurrency=self.concurrency
        )
        self.log.info("worker_started", queues=list(self.queues), concurrency=self.concurrency)
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

    def _pool_thread(self, slot: SlotStats) -> threading.Thread:
        return threading.Thread(
            target=self._thread_main, args=(slot,), name=f"jobchain-{slot.name}", daemon=True
        )

    def run(self) -> None:
        """Start and block until stopped (by :meth:`stop`, a remote request or Ctrl-C)."""
        self.start()
        try:
            while not self._stopping.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.log.info("worker_interrupted")
        finally:
            self.stop()
        if self.fatal is not None:
            raise self.fatal

    def request_stop(self) -> None:
        """Ask the worker to stop; returns at once (safe from a signal handler)."""
        self._stopping.set()
        if self._cv.acquire(blocking=False):
            try:
                self._cv.notify_all()
            finally:
                self._cv.release()

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
        clean = self._join_pool(deadline)
        if self._fetcher is not None:  # a reserve in flight adds to the buffer: wait for it first
            self._fetcher.join(_left(deadline))
        with self._cv:
            unstarted = list(self._buffer)
            self._buffer.clear()
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
        self.plugins.emit("jobchain_worker_stopped", worker=self.name, processed=processed)
        self.log.info(
            "worker_stopped", processed=processed, released=len(unstarted), clean=clean, unsettled=len(left)
        )
        return clean and not left

    def _join_pool(self, deadline: float | None) -> bool:
        """Wait for the pool threads (a replacement for one that died included); True if all ended."""
        while True:
            with self._cv:
                threads = list(self._threads)
            for thread in threads:
                thread.join(_left(deadline))
            with self._cv:
                if self._threads == threads or _left(deadline) == 0.0:
                    return not any(t.is_alive() for t in self._threads)

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
            holder = next((w for w in self.backend.workers() if w.name == self.name), None)
            if holder is None or (holder.host, holder.pid) != (exc.host, exc.pid):
                raise
            self.log.info(
                "worker_name_taken_over", dead_pid=exc.pid, reason="its process on this host is gone"
            )
            self.backend.remove_worker(self.name, holder.instance)
            self._heartbeat()  # a third worker taking the name meanwhile makes this raise

    def _unregister(self) -> None:
        try:
            self.backend.remove_worker(self.name, self.instance)
        except Exception as exc:
            self.log.warning("worker_unregister_failed", error=str(exc), error_type=type(exc).__name__)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

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
        queues = set(self.queues)
        idle = 0
        while True:
            busy = bool(self.held())
            if not busy:
                try:
                    stats = self.backend.stats()
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

    # --- the thread loop -------------------------------------------------------------

    def _thread_main(self, slot: SlotStats) -> None:
        delivery: Delivery | None = None
        try:
            while True:
                delivery = self._next()
                if delivery is None:
                    return
                outcome = self._run_job(delivery, slot)
                # the settler thread reports it (batched with the others' outcomes); this thread goes on
                with self._cv:
                    self._pending.append(outcome)
                    self._settle_cv.notify()
                    solo = delivery.job.id == self._solo
                if solo:  # a suspect's outcome is settled before any other job may start (see _next)
                    self._settle_now()
                delivery = None
        except BaseException as exc:  # a bug in the worker: hand the job on and replace this thread
            self._thread_died(slot, delivery, exc)

    def _run_job(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        """Run one job and return its outcome, whatever the task does (raises only on a bug here)."""
        try:
            return self._execute(delivery, slot)
        except BaseException as exc:  # a timeout that landed outside the task, a hook raising BaseException
            return self._failure_outcome(delivery, exc, slot, 0.0, retry_allowed=True)

    def _thread_died(self, slot: SlotStats, delivery: Delivery | None, exc: BaseException) -> None:
        """A pool thread is ending on an exception: release its job, log and count it, start another.

        The job goes back unrun (a ``Released`` outcome: no attempt used). A job
        whose run killed a thread of this worker before is failed as
        ``WorkerThreadDied`` instead, so that a bug it triggers cannot loop.
        """
        job_id = None if delivery is None else delivery.job.id
        outcome: Outcome | None = None
        with self._cv:
            self.counters.threads_died += 1
            self._busy.pop(threading.current_thread(), None)
            if delivery is not None and delivery.job.id == self._solo:  # let the other threads go on
                self._solo = None
                self._cv.notify_all()
            if delivery is not None:
                deaths = self._deaths[delivery.job.id] = self._deaths.get(delivery.job.id, 0) + 1
                if deaths < 2:
                    outcome = Released(delivery=delivery)
                else:
                    error = ErrorInfo(
                        type="WorkerThreadDied",
                        message=cap(
                            f"the worker thread running this job died {deaths} times: "
                            f"{type_name(exc)}: {describe(exc)}",
                            self.app.max_error_bytes,
                        ),
                        traceback=cap(format_traceback(exc), self.app.max_error_bytes, keep_tail=True),
                        attempt=delivery.job.attempt,
                        at=self.app.clock.now(),
                    )
                    outcome = Failed(delivery=delivery, error=error)
            replaced: str | None = None
            if not self._stopping.is_set():
                try:
                    thread = self._pool_thread(slot)
                    thread.start()  # (it waits for the lock held here before it takes a job)
                except Exception as start_failed:  # out of threads: the pool runs one short
                    replaced = f"no: {type_name(start_failed)}: {describe(start_failed)}"
                else:
                    current = threading.current_thread()
                    self._threads = [thread if t is current else t for t in self._threads]
                    replaced = "yes"
        try:
            self.log.error(
                "worker_thread_died",
                thread=slot.name,
                job_id=job_id,
                outcome=None if outcome is None else type(outcome).__name__,
                replaced=replaced or "no: the worker is stopping",
                error_type=type_name(exc),
                error=cap(describe(exc), 1024),
                traceback=cap(format_traceback(exc), self.app.max_error_bytes, keep_tail=True),
            )
        finally:  # settled after the line is logged (stop() waits for this thread before it settles)
            if outcome is not None:
                with self._cv:
                    self._pending.append(outcome)
                    self._settle_cv.notify()

    def _settler_main(self) -> None:
        """Settle the threads' outcomes in batches, off their path from one job to the next."""
        while True:
            with self._cv:
                while not self._pending or self._flushing:
                    if self._stopped.is_set() or self._abandon.is_set():
                        return
                    self._settle_cv.wait(0.2)
            try:
                self._flush()
            except Exception:  # a bug (a backend answering the wrong number of results, say)
                self.log.error("settle_crashed", exc_info=True)

    def _next(self) -> Delivery | None:
        """The next reserved job for a thread; the fetcher refills the buffer when it runs dry.

        The thread's previous job (if any) is over when it asks. A delivery whose
        lease the worker may no longer hold is dropped, never started. A suspect
        (delivered before) waits until no other job runs, holds back the other
        threads while it runs, and is marked running on the backend first.
        """
        me = threading.current_thread()
        while True:
            with self._cv:
                done = self._busy.pop(me, None)
                if done is not None and done.job.id == self._solo:
                    self._solo = None
                    self._cv.notify_all()
                delivery = self._take_next(me)
                if delivery is None or not (delivery.suspect and delivery.crashes <= self.max_redeliveries):
                    return delivery
            # a suspect: every other job has finished, none starts until it does. It may kill this
            # process (a poison job): what ran before it is settled first, or a job that merely finished
            # beside it would be delivered again and charged with the death. Then mark it on the backend.
            if not self._settle_now() or self._stopping.is_set():
                with self._cv:  # give it back unstarted: its next delivery tries again
                    self._pending.append(Released(delivery=delivery))
                    self._settle_cv.notify()
                continue
            try:
                [held] = self.backend.mark_running([delivery])
            except Exception as exc:
                self._backend_failed("mark_running", exc)
                with self._cv:  # give it back unstarted: its next delivery tries again
                    self._pending.append(Released(delivery=delivery))
                    self._settle_cv.notify()
                continue
            self.outage.succeeded("mark_running")
            if held:
                return delivery
            with self._cv:
                self._drop([delivery], "lease_lost_before_start")

    def _settle_now(self) -> bool:
        """Settle every pending outcome now (within a lease); False if some are left (backend down, stop)."""
        self._flush_until(time.monotonic() + self.lease)
        with self._cv:
            return not self._pending and not self._flushing

    def _take_next(self, me: threading.Thread) -> Delivery | None:
        """Pop the next delivery that may start (the lock is held); None when stopping."""
        while True:
            if self._stopping.is_set():
                return None
            if self._buffer and self._solo is None:
                delivery = self._buffer.popleft()
                if not self._buffer:
                    self._fetch_cv.notify()  # reserve the next batch while this one runs
                if self._deadline.pop(delivery.token, _NEVER) <= time.monotonic():
                    self._drop([delivery], "lease_expired_before_start")
                    continue
                self._busy[me] = delivery
                if delivery.suspect and delivery.crashes <= self.max_redeliveries:
                    self._solo = delivery.job.id
                    # threads that died running a job (replaced since) do not hold the suspect back
                    while any(t is not me and t.is_alive() for t in self._busy):
                        if self._stopping.is_set():
                            self._busy.pop(me, None)
                            self._solo = None
                            self._buffer.appendleft(delivery)  # stop() releases it
                            self._cv.notify_all()
                            return None
                        self._cv.wait(0.1)
                return delivery
            if not self._buffer:
                self._fetch_cv.notify()
            self._cv.wait()

    def _drop(self, deliveries: Sequence[Delivery], event: str) -> None:
        """Forget unstarted deliveries whose lease is gone (the lock is held): never run, never settled.

        Their jobs are another worker's now, or will be when the backend sees the
        lease ended; a release would be rejected, so none is sent.
        """
        for delivery in deliveries:
            self._deadline.pop(delivery.token, None)
            if self._held.get(delivery.job.id) is delivery:
                del self._held[delivery.job.id]
        self.log.warning(event, job_ids=[d.job.id for d in deliveries][:50], count=len(deliveries))

    def _drop_expired(self, now: float) -> None:
        """Drop buffered deliveries past their local deadline (the monitor, each tick)."""
        with self._cv:
            if not self._buffer:
                return
            deadline = self._deadline
            expired = [d for d in self._buffer if deadline.get(d.token, _NEVER) <= now]
            if expired:
                gone = {id(d) for d in expired}
                self._buffer = deque(d for d in self._buffer if id(d) not in gone)
                self._drop(expired, "lease_expired_before_start")

    def _note_leased(self, deliveries: Iterable[Delivery], since: float) -> None:
        """Record deadlines of deliveries leased by a backend call made at monotonic ``since`` (lock held)."""
        until = since + self.lease - self._lease_margin
        for delivery in deliveries:
            self._deadline[delivery.token] = until

    def _fetcher_main(self) -> None:
        """Reserve a batch whenever the buffer is empty, off the threads' path from job to job."""
        backoff = self._reserve_backoff
        while True:
            with self._cv:
                # not before the name is registered: a reserve may resume the jobs of a dead namesake
                while (self._buffer or not self._registered.is_set()) and not self._stopping.is_set():
                    self._fetch_cv.wait(0.2)
                if self._stopping.is_set():
                    return
                self._fetching = True
            got: list[Delivery] = []
            since = time.monotonic()  # the backend's leases start after this
            try:
                # a blocking reserve may lease a job at the end of its wait: waits of a quarter lease at
                # most leave every delivery most of its lease to start in (see _note_leased)
                got = self.backend.reserve(
                    self.queues, limit=self.prefetch, lease=self.lease, worker=self.name, wait=self._wait
                )
            except Exception as exc:
                self._backend_failed("reserve", exc)
                if not self._stopping.is_set():
                    self.outage.pause(backoff.next())
            else:
                backoff.reset()
                self.outage.succeeded("reserve")
            finally:
                with self._cv:
                    self._fetching = False
                    for delivery in got:
                        self._held[delivery.job.id] = delivery
                    self._note_leased(got, since)
                    self._buffer.extend(got)
                    self._cv.notify_all()

    def _execute(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        job = delivery.job
        app = self.app
        now = app.clock.now()
        slot.jobs += 1
        if delivery.crashes > self.max_redeliveries:
            error = WorkerLost(
                f"lease lost {delivery.crashes} times while the job ran (workers running it died or "
                f"stalled); max_redeliveries is {self.max_redeliveries}"
            )
            return self._failure_outcome(delivery, error, slot, 0.0, retry_allowed=False)
        forged = signing.check_job(app.signer, job)  # before anything of the job is trusted
        if forged is not None:
            return self._failure_outcome(delivery, forged, slot, 0.0, retry_allowed=False)
        if job.expires_at is not None and now > job.expires_at:
            error_exp = JobExpired(f"job expired {now - job.expires_at:.3f}s before it could start")
            return self._failure_outcome(delivery, error_exp, slot, 0.0, retry_allowed=False)
        task = app.tasks.get(job.task)
        if task is None:
            unknown = UnknownTaskError(job.task, list(app.tasks))
            return self._failure_outcome(delivery, unknown, slot, 0.0, retry_allowed=False)

        plugins = self.plugins
        plugins.emit("jobchain_job_started", job=job, worker=self.name, thread=slot.name)
        timeout = task.timeout
        running: _Running | None = None
        if timeout is not None:
            # only the monitor's timeout check reads _running: a job without a timeout skips the lock
            running = _Running(
                delivery=delivery, thread_id=threading.get_ident(), deadline=time.monotonic() + timeout
            )
            with self._cv:
                self._running[job.id] = running
        started_at = now
        t0 = time.perf_counter()
        failure: BaseException | None = None
        result: Any = None
        try:
            try:
                result = task.fn(*job.args, **job.kwargs)
            finally:
                if running is not None:
                    with self._cv:
                        self._running.pop(job.id, None)
                        if running.timed_out:
                            _clear_in_thread(running.thread_id)
        except BaseException as exc:
            failure = exc
        duration = time.perf_counter() - t0
        if running is not None and running.timed_out:
            failure = JobTimeout(f"task {task.name!r} ran past its timeout of {timeout:g}s")
        if failure is not None:
            return self._failure_outcome(
                delivery, failure, slot, duration, retry_allowed=True, retry=task.retry
            )
        if inspect.iscoroutine(result):  # a function that returned a coroutine without awaiting it
            result.close()  # no "never awaited" warning
            bad = InvalidJobError(
                f"task {task.name!r} returned a coroutine; jobchain does not run async tasks yet: "
                "run it inside the task with asyncio.run(...)"
            )
            return self._failure_outcome(delivery, bad, slot, duration, retry_allowed=False)
        try:
            size = _result_too_large(result, app.max_payload)
        except Exception as exc:  # TypeError/ValueError, or whatever the value's own methods raise
            where = _where_not_json(result, exc)
            bad = InvalidJobError(f"task {task.name!r} returned a value JSON cannot carry: {where}")
            return self._failure_outcome(delivery, bad, slot, duration, retry_allowed=False)
        if size is not None:
            too_large = ResultTooLarge(task.name, size, app.max_payload)
            return self._failure_outcome(delivery, too_large, slot, duration, retry_allowed=False)
        slot.busy_seconds += duration
        slot.succeeded += 1
        plugins.emit(
            "jobchain_job_succeeded",
            job=job,
            result=result,
            duration=duration,
            worker=self.name,
            thread=slot.name,
        )
        return Completed(
            delivery=delivery,
            result=result,
            started_at=started_at,
            finished_at=app.clock.now(),
            result_sig=signing.sign_result(app.signer, job, result),
        )

    def _failure_outcome(
        self,
        delivery: Delivery,
        exc: BaseException,
        slot: SlotStats,
        duration: float,
        *,
        retry_allowed: bool,
        retry: Any = None,
    ) -> Outcome:
        job = delivery.job
        now = self.app.clock.now()
        error = ErrorInfo.from_exception(exc, attempt=job.attempt, at=now, max_bytes=self.app.max_error_bytes)
        slot.busy_seconds += duration
        if retry_allowed and retry is not None and retry.should_retry(exc, job.attempt):
            delay = retry.delay(job.attempt, self.rng)
            slot.retries += 1
            self.plugins.emit(
                "jobchain_job_retrying",
                job=job,
                error=error,
                delay=delay,
                duration=duration,
                worker=self.name,
                thread=slot.name,
            )
            return Retried(delivery=delivery, error=error, delay=delay)
        slot.failures += 1
        self.plugins.emit(
            "jobchain_job_failed", job=job, error=error, duration=duration, worker=self.name, thread=slot.name
        )
        return Failed(delivery=delivery, error=error)

    # --- settling --------------------------------------------------------------------

    def _pending_add(self, outcomes: Iterable[Outcome]) -> None:
        with self._cv:
            self._pending.extend(outcomes)

    def _flush(self, outcome: Outcome | None = None, deadline: float | None = None) -> bool:
        """Add ``outcome`` to the pending list, then settle everything pending unless another
        thread already is doing it (that thread then settles ``outcome`` too).

        The flusher finds the list empty and gives up the role in one step under the lock, so an
        outcome added meanwhile is never left behind unsettled. While the backend is down the
        flusher retries; it gives up only at ``deadline`` or once :meth:`stop` ran out of time,
        and then puts what is left of the batch back at the head of the pending list. Returns
        False then. A batch the backend refuses is settled one outcome at a time.
        """
        with self._cv:
            if outcome is not None:
                self._pending.append(outcome)
            if self._flushing or not self._pending:
                return True
            self._flushing = True
            batch = self._settling = self._pending
            self._pending = []
        try:
            while True:
                settled, results, left = self._settle(batch, deadline)
                self._after_settle(settled, results)
                if left:
                    with self._cv:
                        self._pending[:0] = left
                        self._settling = []
                        self._flushing = False
                        self._cv.notify_all()
                    return False
                with self._cv:
                    batch = self._settling = self._pending
                    if not batch:
                        self._flushing = False
                        self._cv.notify_all()
                        return True
                    self._pending = []
        except BaseException:
            with self._cv:
                self._settling = []
                self._flushing = False
                self._cv.notify_all()
            raise

    def _flush_until(self, deadline: float | None) -> None:
        """Settle everything pending by ``deadline``, waiting for a thread that is settling now."""
        while True:
            with self._cv:
                while self._flushing:
                    left = _left(deadline)
                    if left == 0.0:
                        return
                    self._cv.wait(left)
                if not self._pending:
                    return
            if not self._flush(deadline=deadline):
                return

    def _settle(
        self, batch: list[Outcome], deadline: float | None = None
    ) -> tuple[list[Outcome], list[SettleResult], list[Outcome]]:
        """Settle ``batch``, retrying while the backend is unavailable.

        Returns the outcomes settled (with, in place of one the backend refused,
        the failure settled instead: see :meth:`_settle_each`), their results, and
        the outcomes left unsettled when it gave up (see :meth:`_flush`).
        """
        backoff = self._settle_backoff
        settled: list[Outcome] = []
        results: list[SettleResult] = []
        while batch:
            try:
                answers, taken = self._settle_and_take(batch)
            except Exception as exc:
                self._backend_failed("settle", exc)
                if not _is_outage(exc):  # the backend refused (something in) the batch: one at a time
                    done, got, batch = self._settle_each(batch, deadline)
                    settled += done
                    results += got
                    if not batch:
                        break
                # keep the outcomes: nothing is acknowledged until the backend takes them
                delay = backoff.next()
                if deadline is not None:
                    delay = min(delay, deadline - time.monotonic())
                if self._abandon.is_set() or delay <= 0 or (self.fatal is not None and self.stopping):
                    return settled, results, batch
                self.outage.pause(delay)
                continue
            backoff.reset()
            self.outage.succeeded("settle")
            if taken:
                with self._cv:
                    for delivery in taken:
                        self._held[delivery.job.id] = delivery
                    if self._stopping.is_set():  # stop() has emptied the buffer already: give them back
                        self._pending.extend(Released(delivery=d) for d in taken)
                    else:
                        self._buffer.extendleft(reversed(taken))
                        self._cv.notify(len(taken))
            settled += batch
            results += answers
            break
        return settled, results, []

    def _settle_each(
        self, batch: list[Outcome], deadline: float | None
    ) -> tuple[list[Outcome], list[SettleResult], list[Outcome]]:
        """Settle a refused batch one outcome at a time, so that one refused outcome holds up no other.

        An outcome refused on its own is tried again after a backoff, up to
        :attr:`SETTLE_TRIES` times in all (no more when the backend says its
        content is invalid: an :class:`InvalidJobError`), while outcomes that
        arrive meanwhile are settled too. Then it is replaced by a permanent
        failure (``SettleRefused``) that gives the reason; if even that is
        refused, or the outcome was a release, it is let go: logged, no longer
        held, so its lease expires and the job is delivered again.

        Returns what was settled, the results, and the outcomes left when an
        outage, the deadline or an abandoned stop cut it short.
        """
        settled: list[Outcome] = []
        results: list[SettleResult] = []
        items = [(outcome, 0) for outcome in batch]  # (outcome, refusals so far)
        backoff = Backoff(base=self.reconnect_base, cap=self.reconnect_cap, rng=self.rng)
        while True:
            again: list[tuple[Outcome, int]] = []
            for index, (outcome, refusals) in enumerate(items):
                try:
                    (result,) = self.backend.settle([outcome])
                except Exception as exc:
                    if _is_outage(exc):
                        self.outage.failed("settle", exc)
                        return settled, results, [o for o, _ in again + items[index:]]
                    refusals += 1
                    if refusals < self.SETTLE_TRIES and not isinstance(exc, InvalidJobError):
                        again.append((outcome, refusals))
                    else:
                        instead = self._refused(outcome, exc)
                        if instead is not None:
                            again.append((instead, 0))
                    continue
                self.outage.succeeded("settle")
                settled.append(outcome)
                results.append(result)
                if isinstance(outcome, Failed) and outcome.error.type == SETTLE_REFUSED:
                    self.plugins.emit(
                        "jobchain_job_failed",
                        job=outcome.delivery.job,
                        error=outcome.error,
                        duration=0.0,
                        worker=self.name,
                        thread=threading.current_thread().name,
                    )
            if not again:
                return settled, results, []
            delay = backoff.next()
            if deadline is not None:
                delay = min(delay, deadline - time.monotonic())
            if delay <= 0 or self._abandon.wait(delay):
                return settled, results, [o for o, _ in again]
            with self._cv:  # what finished meanwhile is settled now, not after the refused ones
                arrived, self._pending = self._pending, []
                self._settling = self._settling + arrived
            items = again + [(outcome, 0) for outcome in arrived]

    def _refused(self, outcome: Outcome, exc: Exception) -> Failed | None:
        """The failure to settle instead of an outcome the backend refused, or None to let the job go."""
        job = outcome.delivery.job
        kind = type(outcome).__name__
        reason = f"{type_name(exc)}: {cap(describe(exc), 1024)}"
        replacement = isinstance(outcome, Failed) and outcome.error.type == SETTLE_REFUSED
        let_go = replacement or isinstance(outcome, Released)
        with self._cv:
            if not replacement:
                self.counters.refused += 1
        if let_go:
            self.log.error("outcome_dropped", job_id=job.id, outcome=kind, error=reason)
            with self._cv:
                self._held.pop(job.id, None)  # its lease expires; then the job is delivered again
            return None
        self.log.warning("outcome_refused", job_id=job.id, outcome=kind, error=reason)
        message = f"the backend refused this job's outcome ({kind}): {reason}"
        if isinstance(outcome, Failed | Retried):
            message += f"; it had failed with {outcome.error.type}: {cap(outcome.error.message, 1024)}"
        error = ErrorInfo(
            type=SETTLE_REFUSED,
            message=cap(message, self.app.max_error_bytes),
            attempt=job.attempt,
            at=self.app.clock.now(),
        )
        return Failed(delivery=outcome.delivery, error=error)

    def _settle_and_take(self, batch: list[Outcome]) -> tuple[list[SettleResult], list[Delivery]]:
        """Settle; when threads are free and a chain moves on, take its next steps in the same step."""
        with self._cv:
            free = self.concurrency - len(self._running) - len(self._buffer)
        if free < 1 or self._stopping.is_set() or not any(o.delivery.job.chain for o in batch):
            return self.backend.settle(batch), []
        since = time.monotonic()
        results, taken = self.backend.settle_and_take(
            batch, worker=self.name, queues=self.queues, lease=self.lease, limit=free
        )
        with self._cv:
            self._note_leased(taken, since)
        return results, taken

    def _after_settle(self, batch: list[Outcome], results: list[Any]) -> None:
        counters = self.counters
        chains: list[ChainRecord] = []
        with self._cv:
            for outcome, result in zip(batch, results, strict=True):
                self._held.pop(outcome.delivery.job.id, None)
                if not result.accepted:
                    counters.rejected += 1
                    continue
                if isinstance(outcome, Completed):
                    counters.done += 1
                elif isinstance(outcome, Failed):
                    counters.failed += 1
                elif isinstance(outcome, Retried):
                    counters.retried += 1
                if result.chain is not None:
                    chains.append(result.chain)
                    if result.chain.state is ChainState.HALTED:
                        counters.skipped += sum(
                            1
                            for s in result.chain.steps
                            for m in s.members
                            if m.state is StepState.NOT_EXECUTED
                        )
        for outcome, result in zip(batch, results, strict=True):
            if not result.accepted:
                self.log.warning(
                    "stale_delivery_rejected", job_id=outcome.delivery.job.id, outcome=type(outcome).__name__
                )
        for record in chains:
            hook = (
                "jobchain_chain_completed"
                if record.state is ChainState.COMPLETED
                else "jobchain_chain_halted"
            )
            self.plugins.emit(hook, chain=record, worker=self.name)

    # --- monitor ---------------------------------------------------------------------

    def _heartbeat(self) -> bool:
        info = WorkerInfo(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            labels=self.labels,
            concurrency=self.concurrency,
            started_at=self._started_at,
            heartbeat_at=self.app.clock.now(),
            state="stopping" if self._stopping.is_set() else "running",
            instance=self.instance,
        )
        return self.backend.heartbeat(info, self.heartbeat_ttl)

    def _beat(self) -> bool:
        """Refresh the registration and see if a stop was requested; False if the backend failed."""
        try:
            asked = self._heartbeat()
        except WorkerNameTakenError as exc:
            self.outage.succeeded("heartbeat")
            if self.name_lost is None:
                self.name_lost = exc
                self.log.error(
                    "worker_name_lost",
                    holder_host=exc.host,
                    holder_pid=exc.pid,
                    reason="another worker took the name (was this one paused past its ttl?); stopping",
                )
            self.request_stop()
            return True
        except Exception as exc:
            self._backend_failed("heartbeat", exc)
            return False
        self.outage.succeeded("heartbeat")
        if not self._registered.is_set():
            self._registered.set()
            with self._cv:
                self._fetch_cv.notify_all()
        if asked and not self._stopping.is_set():
            self.log.info("worker_stop_requested")
            self.request_stop()
        return True

    def _backend_failed(self, operation: str, exc: Exception) -> None:
        """Note a failed backend call; credentials refused stop the worker (:attr:`fatal` says why)."""
        if not isinstance(exc, BackendAuthError):
            self.outage.failed(operation, exc)
            return
        if self.fatal is None:
            self.fatal = exc
            self.log.error("worker_stopped_by_backend_auth", operation=operation, error=str(exc))
            self.request_stop()
            self.outage.kick()

    def _monitor_main(self) -> None:
        tick = min(0.1, self.lease / 10)
        extend_every = self.lease / 3
        beat_every = min(self.heartbeat_ttl / 3, 2.0)
        # after a failure the next try comes sooner than the regular interval, so leases and the
        # registration are fresh again soon after the backend returns
        retry = Backoff(base=self.reconnect_base, cap=self.reconnect_cap, rng=self.rng)
        now = time.monotonic()
        next_extend, next_beat, last_progress = now + extend_every, now + beat_every, now
        while not self._stopped.is_set():
            if self._stopping.is_set() and not any(t.is_alive() for t in self._threads):
                break
            time.sleep(tick)
            now = time.monotonic()
            try:
                self._enforce_timeouts(now)
                self._drop_expired(now)
                if now >= next_extend:
                    ok = self._extend_leases()
                    next_extend = time.monotonic() + (extend_every if ok else min(extend_every, retry.next()))
                if now >= next_beat:
                    ok = self._beat()
                    next_beat = time.monotonic() + (beat_every if ok else min(beat_every, retry.next()))
                    if ok:
                        retry.reset()
                if now - last_progress >= self.progress_interval:
                    last_progress = now
                    self.emit_progress()
            except Exception:  # a bug here must not end lease extension for good
                self.log.error("monitor_failed", exc_info=True)

    def emit_progress(self) -> None:
        """Emit a ``jobchain_progress`` event with the current counts."""
        if not self.plugins.has_listeners("jobchain_progress"):
            return
        c = self.counters
        elapsed = max(1e-9, time.monotonic() - c.started)
        finished = c.done + c.failed
        left = None if self.expected is None else max(0, self.expected - finished - c.skipped)
        self.plugins.emit(
            "jobchain_progress",
            worker=self.name,
            total=self.expected,
            done=c.done,
            failed=c.failed,
            left=left,
            rate=finished / elapsed,
        )

    def _extend_leases(self) -> bool:
        """Extend the lease of everything held; False if the backend failed (retried soon)."""
        with self._cv:
            held = list(self._held.values())
        if not held:
            return True
        since = time.monotonic()
        try:
            kept = self.backend.extend(held, self.lease)
        except Exception as exc:
            self._backend_failed("extend", exc)
            return False
        self.outage.succeeded("extend")
        with self._cv:
            # a delivery settled meanwhile (or whose settlement is under way, perhaps applied already
            # with its reply lost) has no lease to extend: that is not a lost lease
            settling = {o.delivery.job.id for o in self._settling}
            lost = [
                d.job.id
                for d, ok in zip(held, kept, strict=True)
                if not ok and self._held.get(d.job.id) is d and d.job.id not in settling
            ]
            # unstarted deliveries: a kept lease may start until the new deadline, a lost one never
            unstarted = self._deadline
            self._note_leased(
                (d for d, ok in zip(held, kept, strict=True) if ok and d.token in unstarted), since
            )
            gone = {d.token for d, ok in zip(held, kept, strict=True) if not ok}
            dropped = [d for d in self._buffer if d.token in gone]
            if dropped:
                self._buffer = deque(d for d in self._buffer if d.token not in gone)
                self._drop(dropped, "lease_expired_before_start")
        if lost:
            self.log.warning("leases_lost", job_ids=lost[:10], count=len(lost))
        return True

    def _enforce_timeouts(self, now: float) -> None:
        with self._cv:
            for running in self._running.values():
                if running.deadline is not None and not running.timed_out and now >= running.deadline:
                    running.timed_out = True
                    job = running.delivery.job
                    self.log.warning("job_timeout", job_id=job.id, task=job.task)
                    _raise_in_thread(running.thread_id, JobTimeout)


def _is_outage(exc: Exception) -> bool:
    """True if a backend call failed because the backend is away or full: retry it as it is.

    Anything else (an :class:`InvalidJobError`, a :class:`~jobchain.BackendError`
    the backend answered with, a bug) may be a refusal of what was sent.
    """
    return is_unavailable(exc) or isinstance(exc, BackendFullError | BackendAuthError)


def _result_too_large(result: Any, limit: int) -> int | None:
    """The UTF-8 size of the result's JSON if over ``limit``, else None; raises if JSON cannot carry it."""
    encoded = _result_encoder.encode(result)  # ASCII, escapes included: never smaller than the UTF-8 form
    if has_unstorable(result):  # {1: x} would come back as {"1": x}; "\ud800", 65 levels: unstorable
        raise TypeError("keys must be str, strings valid UTF-8, nesting bounded")
    if len(encoded) <= limit:
        return None
    size = len(_utf8_encoder.encode(result).encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def _where_not_json(result: Any, exc: Exception) -> str:
    """Where in ``result`` the value JSON cannot carry is, or what went wrong when that cannot be told."""
    try:
        where = find_non_json(result, "result")
    except Exception:  # the value's own methods raise: say so below
        where = None
    if where is not None and isinstance(exc, TypeError | ValueError | RecursionError):
        return where
    return f"result: {type(result).__name__} ({type_name(exc)}: {cap(describe(exc), 1024)})"


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


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never negative), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in another thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


def _clear_in_thread(thread_id: int) -> None:
    """Drop an exception :func:`_raise_in_thread` set that has not been raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
