"""The worker's shared state, and what every part of the worker uses.

One lock (``_cv``, and the conditions made from it) guards all of it: the
buffer of reserved deliveries, the pending outcomes, the deliveries held, the
local deadlines of unstarted ones, the running jobs with a timeout. So the
parts of the worker are mixins over this one state, one concern per module:
:mod:`._pool` (threads, the fetcher, taking the next job), :mod:`._execution`
(running one job), :mod:`._settling` (the pending outcomes and their
settlement) and :mod:`._monitor` (leases, heartbeats, timeouts, progress);
:class:`~jobchain.worker.Worker` composes them and holds the life cycle.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import structlog
from attrs import define, field

from jobchain.capabilities import Cancel, WorkerRegistry
from jobchain.errors import BackendAuthError, ConfigurationError, WorkerNameTakenError
from jobchain.model import Delivery, Outcome
from jobchain.outage import Backoff, Outage
from jobchain.payload import find_non_json
from jobchain.worker._runtime import Runtime, SupportsRuntime

__all__ = ["SlotStats", "WorkerCore"]

logger = structlog.get_logger("jobchain.worker")

#: the deadline of a delivery that has none
_NEVER = float("inf")


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
    #: jobs stopped at a cancel request (Aborted)
    cancelled: int = 0
    #: of those, the ones given up on while their task still ran (a hard abort)
    aborted: int = 0
    skipped: int = 0
    rejected: int = 0
    #: pool threads that died (a bug in the worker, never a task's doing) and were replaced
    threads_died: int = 0
    #: outcomes the backend refused (not an outage): turned into failures, or left for lease expiry
    refused: int = 0
    started: float = field(factory=time.monotonic)


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(16):04x}"


#: seconds of work (at the average job time) an adaptive prefetch reserves per thread and round trip
PREFETCH_WINDOW = 0.02
#: the most deliveries an adaptive prefetch reserves at once
PREFETCH_CAP = 64
#: seconds the deliveries beyond one per thread of an adaptive batch may wait unstarted: then they go
#: back to their queue (the jobs grew long since the batch was sized; other workers may be idle)
PREFETCH_HOLD = 1.0
#: coroutine jobs an event loop runs at once unless told otherwise, and the most it may be told
DEFAULT_ASYNC_CONCURRENCY = 100
MAX_ASYNC_CONCURRENCY = 10000
#: the most deliveries one reserve asks for
MAX_RESERVE = 1000
#: weight of the newest job time in the moving average
_RUN_WEIGHT = 0.1


def adaptive_prefetch(concurrency: int, run_avg: float) -> int:
    """Deliveries to reserve per batch when jobs take ``run_avg`` seconds on a thread.

    Short jobs make the round trip of a reservation the cost of a job: a batch
    then holds about :data:`PREFETCH_WINDOW` of work per thread, up to
    :data:`PREFETCH_CAP`. Jobs of that length or longer get one per thread, so a
    reserved job never waits long for a thread while another worker is idle.
    """
    per_thread = PREFETCH_WINDOW / max(run_avg, 1e-6)
    return max(concurrency, min(PREFETCH_CAP, int(concurrency * per_thread)))


class WorkerCore:
    """The state the parts of a :class:`~jobchain.worker.Worker` share, and the helpers they all use."""

    def __init__(
        self,
        runtime: Runtime | SupportsRuntime,
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
        async_concurrency: int | None = None,
        loop_block_threshold: float = 0.5,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if async_concurrency is not None and (
            isinstance(async_concurrency, bool)
            or not isinstance(async_concurrency, int)
            or not 1 <= async_concurrency <= MAX_ASYNC_CONCURRENCY
        ):
            raise ValueError(
                f"async_concurrency must be an int from 1 to {MAX_ASYNC_CONCURRENCY}, "
                f"got {async_concurrency!r}"
            )
        if (
            isinstance(loop_block_threshold, bool)
            or not isinstance(loop_block_threshold, int | float)
            or not loop_block_threshold > 0
        ):
            raise ValueError(f"loop_block_threshold must be > 0 seconds, got {loop_block_threshold!r}")
        if lease <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch!r}")
        if max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {max_redeliveries!r}")
        if not isinstance(runtime, Runtime):
            if not callable(getattr(runtime, "runtime", None)):
                raise TypeError(f"a Worker runs on a jobchain.worker.Runtime or an App, got {runtime!r}")
            runtime = runtime.runtime()
        #: what the worker runs on: its tasks, the backend, the events facade, the clock, settings
        self.runtime: Runtime = runtime
        self.backend = runtime.backend
        #: where the worker registers its name (None: the backend keeps no worker registry, and the
        #: worker runs unregistered: no name check, no remote stop, `jobchain workers` cannot list it)
        self._registry: WorkerRegistry | None = (
            runtime.backend if isinstance(runtime.backend, WorkerRegistry) else None
        )
        #: the backend records cancel requests (Cancel): the monitor polls them, Aborted is reported
        self._can_cancel = isinstance(runtime.backend, Cancel)
        #: ids of held jobs the backend asked to stop (added by the monitor, read by the running task)
        self._cancel_asked: set[str] = set()
        #: job id -> monotonic time the worker learnt of its cancel request (for a hard abort)
        self._cancel_asked_at: dict[str, float] = {}
        #: ids of jobs given up by a hard abort (reported cancelled) whose thread may still return
        self._abandoned: set[str] = set()
        self.queues = tuple(queues) if queues else runtime.queues
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
        #: deliveries reserved per batch: ``prefetch`` when given, else adapted to how long jobs run
        #: (:func:`adaptive_prefetch`: more per round trip while jobs are short), never below concurrency
        self.prefetch = prefetch or concurrency
        self._adaptive = prefetch is None
        #: moving average of a job's time on a thread (seconds), None before the first one ends
        self._run_avg: float | None = None
        #: pool thread -> monotonic time it took its current delivery
        self._taken_at: dict[threading.Thread, float] = {}
        #: monotonic time the fetcher last filled the buffer
        self._buffered_at = 0.0
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
        self.events = runtime.events
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
        #: wakes threads waiting for a settlement in progress to end (never the pool threads: a wake-up
        #: of every idle thread at each settlement's end cost context switches on every job)
        self._flushed_cv = threading.Condition(lock)
        #: wakes the thread that starts coroutine jobs on the event loop (see :mod:`._aio`)
        self._aio_cv = threading.Condition(lock)
        self._settler: threading.Thread | None = None
        self._fetcher: threading.Thread | None = None
        self._buffer: deque[Delivery] = deque()
        self._fetching = False
        #: coroutine jobs the event loop runs at once (``async def`` tasks, see :mod:`._aio`)
        self.async_concurrency = async_concurrency or DEFAULT_ASYNC_CONCURRENCY
        #: the option was given: the event loop starts even when no task is async yet
        self._async_asked = async_concurrency is not None
        #: seconds the event loop may not answer before the watchdog logs ``event_loop_blocked``
        self.loop_block_threshold = float(loop_block_threshold)
        #: the worker's event loop, while it runs (None: no async task, every job runs on a thread)
        self._aio_loop: asyncio.AbstractEventLoop | None = None
        #: reserved deliveries of async tasks, waiting for a place on the event loop
        self._abuffer: deque[Delivery] = deque()
        #: monotonic time the fetcher last added to ``_abuffer``
        self._abuffered_at = 0.0
        #: coroutine jobs reserved ahead of a full loop, so one that ends is followed without a round trip
        self._async_ahead = self._async_ahead_default = max(1, min(PREFETCH_CAP, self.async_concurrency // 4))
        #: the runtime has plain (threaded) tasks: the fetcher reserves for the threads too
        self._plain_tasks = True
        #: coroutine jobs taken for the loop and not yet over (started, or on their way)
        self._aio_running = 0
        #: what the coroutine jobs did (one row for all of them: they share one thread)
        self.async_slot = SlotStats(name=_loop_slot_name(names[0]))
        #: set by stop() when it went on without the fetcher's blocking reserve: what it returns is released
        self._orphaned = False
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

    def request_stop(self) -> None:
        """Ask the worker to stop; returns at once (safe from a signal handler)."""
        self._stopping.set()
        if self._cv.acquire(blocking=False):
            try:
                self._cv.notify_all()
                self._aio_cv.notify_all()
            finally:
                self._cv.release()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

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

    def _is_async(self, delivery: Delivery) -> bool:
        """True if the job's task is ``async def`` and this worker runs an event loop for it."""
        if self._aio_loop is None:
            return False
        task = self.runtime.tasks.get(delivery.job.task)
        return task is not None and bool(getattr(task, "is_async", False))

    def _buffered(self, deliveries: Sequence[Delivery], *, front: bool = False) -> None:
        """Hand reserved deliveries to the threads or the event loop, by task kind (the lock is held)."""
        if not deliveries:
            return
        now = time.monotonic()
        coros: list[Delivery] = []
        plain: list[Delivery] = []
        if self._aio_loop is None:
            plain = list(deliveries)
        else:
            for delivery in deliveries:
                (coros if self._is_async(delivery) else plain).append(delivery)
        if plain:
            if front:
                self._buffer.extendleft(reversed(plain))
            else:
                self._buffer.extend(plain)
            self._buffered_at = now
        if coros:
            self._abuffer.extend(coros)
            self._abuffered_at = now
        if plain:
            self._cv.notify(len(plain))  # as many pool threads as there are jobs
        if coros:
            self._aio_cv.notify()

    def _reserve_limit(self) -> int:
        """Deliveries the fetcher should reserve now; 0: none (the lock is held).

        Threads: a batch (``prefetch``) once their buffer is empty. The event
        loop: as many as it has room for (``async_concurrency`` less what runs
        and waits, plus a quarter of it, at most PREFETCH_CAP, reserved ahead).
        Neither side piles up past its share: no reserve while a batch of the
        threads' jobs waits, nor for the threads while a batch of coroutine
        jobs waits beyond the loop's room (a reserve may bring either kind).
        """
        if self._aio_loop is None:
            return 0 if self._buffer else self.prefetch
        if len(self._buffer) >= max(self.prefetch, self.concurrency):
            return 0
        room = self.async_concurrency + self._async_ahead - self._aio_running - len(self._abuffer)
        # idle threads get a batch while at most a batch of coroutine jobs waits for the loop (what it
        # brings may be coroutine jobs too); with no plain task the threads have nothing to wait for
        hungry = self._plain_tasks and not self._buffer and len(self._abuffer) < self.prefetch
        return min(MAX_RESERVE, (self.prefetch if hungry else 0) + max(0, room))

    def _note_leased(self, deliveries: Iterable[Delivery], since: float) -> None:
        """Record deadlines of deliveries leased by a backend call made at monotonic ``since`` (lock held)."""
        until = since + self.lease - self._lease_margin
        for delivery in deliveries:
            self._deadline[delivery.token] = until

    def _run_job(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        """Run one job and return its outcome (:class:`~jobchain.worker._execution.Execution`)."""
        raise NotImplementedError

    def _hold_suspect(self, delivery: Delivery) -> bool:
        """Ready a suspect to run alone; False if given back (:class:`~jobchain.worker._pool.Pool`)."""
        raise NotImplementedError

    def _cancel_coroutines(self, job_ids: Iterable[str]) -> None:
        """Cancel the coroutines running these jobs (:class:`~jobchain.worker._aio.AsyncRunner`)."""
        raise NotImplementedError

    def _settle_now(self) -> bool:
        """Settle every pending outcome now (:class:`~jobchain.worker._settling.Settling`)."""
        raise NotImplementedError

    def _flush(self, outcome: Outcome | None = None, deadline: float | None = None) -> bool:
        """Settle ``outcome`` and everything pending (:class:`~jobchain.worker._settling.Settling`)."""
        raise NotImplementedError


def _loop_slot_name(first_thread: str) -> str:
    """The event loop's row, named like the threads' (``p2-worker-1`` -> ``p2-async``)."""
    return first_thread.removesuffix("worker-1") + "async" if first_thread.endswith("worker-1") else "async"


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never negative), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
