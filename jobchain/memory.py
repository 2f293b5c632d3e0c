"""The embedded ``memory://`` backend: thread-safe, in one process, the default.

Ready jobs sit in one heap per queue keyed by the static aging key
(:func:`jobchain.aging.order_key`), so aging is exact; a condition variable
lets reservers block until work arrives. Every transition happens under one
lock. ``memory://NAME`` returns the same instance for the same name within a
process (handy for tests); plain ``memory://`` is a new, private store.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog
from attrs import evolve

from jobchain import workflow
from jobchain._memory_limits import MemoryLimits
from jobchain._memory_schedules import MemorySchedules
from jobchain.backend import Backend, name_taken
from jobchain.browsing import BROWSABLE, order_key, page
from jobchain.capabilities import (
    AsyncClient,
    Browse,
    Cancel,
    CancelReport,
    FailedQueue,
    JobPage,
    Pause,
    Stats,
    Uniqueness,
    WorkerRegistry,
)
from jobchain.errors import NotInFailedQueueError
from jobchain.hookspecs import hookimpl
from jobchain.model import (
    Aborted,
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    Failed,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    Outcome,
    QueueStats,
    Released,
    Retried,
    SettleResult,
    WorkerInfo,
    kept_errors,
)
from jobchain.registry import BackendRegistry
from jobchain.uniqueness import check_batch, holder_is_live

__all__ = ["MemoryBackend"]

logger = structlog.get_logger("jobchain.memory")

# keyed by class too, so a subclass's `scheme://NAME` never returns a plain memory backend
_named: dict[tuple[type[MemoryBackend], str], MemoryBackend] = {}
_named_lock = threading.Lock()


class MemoryBackend(
    Backend,
    FailedQueue,
    WorkerRegistry,
    Stats,
    Cancel,
    Pause,
    Browse,
    Uniqueness,
    MemorySchedules,
    MemoryLimits,
    AsyncClient,
):
    """All state in dicts and heaps in this process."""

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(**options)
        self.url = url
        self._cond = threading.Condition(threading.Lock())
        self._seq = itertools.count()
        # a job's FIFO position, taken when it is first made ready and kept while it is unfinished,
        # so a released, redelivered or retried job is not put behind equal jobs submitted after it
        self._fifo: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._records: dict[str, JobRecord] = {}
        self._ready: dict[str, list[tuple[float, int, Job]]] = {}
        self._delayed: list[tuple[float, int, Job]] = []
        self._inflight: dict[str, Delivery] = {}
        self._leases: list[tuple[float, str, str]] = []
        self._deliveries: dict[str, int] = {}
        #: job id -> token of the delivery marked running (mark_running), until it is settled or lost
        self._marked: dict[str, str] = {}
        #: job id -> leases of this attempt lost while marked running
        self._crashes: dict[str, int] = {}
        self._failed: dict[str, FailedEntry] = {}
        self._chains: dict[str, ChainRecord] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._stop_requests: set[str] = set()
        self._paused: set[str] = set()
        #: ids of running jobs asked to stop (Cancel), until they are settled
        self._cancel_requests: set[str] = set()
        #: workers whose blocking reserve should return now (see wake)
        self._woken: set[str] = set()
        #: (queue, uniqueness key) -> (holder's job id, held until; None: until the holder finishes)
        self._unique: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._init_schedules()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        name = urlsplit(url).netloc
        if not name:
            return cls(url, **options)
        with _named_lock:
            backend = _named.get((cls, name))
            if backend is None:
                backend = _named[cls, name] = cls(url, **options)
            return backend

    # --- internals (lock held) ------------------------------------------------------

    def _push_ready(self, job: Job) -> None:
        key = job.enqueued_at / self.aging_interval - job.priority
        heap = self._ready.get(job.queue)
        if heap is None:
            heap = self._ready[job.queue] = []
        seq = self._fifo.get(job.id)
        if seq is None:
            seq = self._fifo[job.id] = next(self._seq)
        heapq.heappush(heap, (key, seq, job))

    def _place(self, job: Job, now: float) -> None:
        """Make ``job`` delayed or ready with a fresh record; the error history of one before is kept."""
        previous = self._records.get(job.id)
        errors = () if previous is None else previous.errors
        if job.not_before is not None and job.not_before > now:
            heapq.heappush(self._delayed, (job.not_before, next(self._seq), job))
            self._records[job.id] = JobRecord(job=job, state=JobState.DELAYED, errors=errors)
        else:
            self._push_ready(job)
            self._records[job.id] = JobRecord(job=job, state=JobState.QUEUED, errors=errors)

    def _promote(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            job = heapq.heappop(delayed)[2]
            self._push_ready(job)
            record = self._records[job.id]
            self._records[job.id] = evolve(record, state=JobState.QUEUED)
        leases = self._leases
        while leases and leases[0][0] <= now:
            lease_until, token, job_id = heapq.heappop(leases)
            delivery = self._inflight.get(job_id)
            if delivery is None or delivery.token != token or delivery.lease_until != lease_until:
                continue  # settled or extended since
            del self._inflight[job_id]
            if self._marked.pop(job_id, None) == token:
                self._crashes[job_id] = self._crashes.get(job_id, 0) + 1
            self._push_ready(delivery.job)
            self._records[job_id] = evolve(self._records[job_id], state=JobState.QUEUED)
            logger.info("lease_expired", job_id=job_id, worker=delivery.worker)

    def _take(self, queues: Sequence[str], limit: int, lease_until: float, worker: str) -> list[Delivery]:
        out: list[Delivery] = []
        paused = self._paused
        heaps = [h for h in (self._ready.get(q) for q in queues if q not in paused) if h]
        while heaps and len(out) < limit:
            heap = min(heaps, key=lambda h: h[0][:2]) if len(heaps) > 1 else heaps[0]
            job = heapq.heappop(heap)[2]
            if not heap:
                heaps.remove(heap)
            count = self._deliveries.get(job.id, 0) + 1
            self._deliveries[job.id] = count
            delivery = Delivery(
                job=job,
                token=f"{next(self._tokens):x}",
                lease_until=lease_until,
                worker=worker,
                delivery_count=count,
                crashes=self._crashes.get(job.id, 0),
            )
            self._inflight[job.id] = delivery
            heapq.heappush(self._leases, (lease_until, delivery.token, job.id))
            record = self._records[job.id]
            self._records[job.id] = JobRecord(
                job=job,
                state=JobState.RUNNING,
                error=record.error,
                errors=record.errors,
                started_at=record.started_at,
            )
            out.append(delivery)
        return out

    # --- jobs ------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        with self._cond:
            now = self.clock.now()
            for chain in chains:
                self._chains.setdefault(chain.id, chain)
            for job in jobs:
                if job.id not in self._records:
                    self._place(job, now)
            self._cond.notify_all()

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                now = self.clock.now()
                self._promote(now)
                taken = self._take(queues, limit, now + lease, worker)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0 or worker in self._woken:
                    self._woken.discard(worker)
                    return taken
                # wake up for the next delayed job or lease expiry, at the latest
                self._cond.wait(min(remaining, self._next_wakeup(now)))

    def skip_delay(self, queues: Sequence[str]) -> bool:
        """Test mode: make the delayed job of ``queues`` due soonest ready now; False if there is none."""
        with self._cond:
            entry = min((e for e in self._delayed if e[2].queue in queues), default=None)
            if entry is None:
                return False
            self._delayed.remove(entry)
            heapq.heapify(self._delayed)
            job = entry[2]
            self._push_ready(job)
            self._records[job.id] = evolve(self._records[job.id], state=JobState.QUEUED)
            return True

    def wake(self, worker: str) -> None:
        with self._cond:
            self._woken.add(worker)  # (a stale entry costs one reserve that returns early)
            self._cond.notify_all()

    def _next_wakeup(self, now: float) -> float:
        soonest = 1.0
        if self._delayed:
            soonest = min(soonest, max(0.001, self._delayed[0][0] - now))
        if self._leases:
            soonest = min(soonest, max(0.001, self._leases[0][0] - now))
        return soonest

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        out: list[bool] = []
        with self._cond:
            lease_until = self.clock.now() + lease
            for delivery in deliveries:
                current = self._inflight.get(delivery.job.id)
                if current is None or current.token != delivery.token:
                    out.append(False)
                    continue
                self._inflight[delivery.job.id] = evolve(current, lease_until=lease_until)
                heapq.heappush(self._leases, (lease_until, current.token, delivery.job.id))
                out.append(True)
        return out

    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        out: list[bool] = []
        with self._cond:
            now = self.clock.now()
            self._promote(now)
            for delivery in deliveries:
                current = self._inflight.get(delivery.job.id)
                held = current is not None and current.token == delivery.token and current.lease_until > now
                if held:
                    self._marked[delivery.job.id] = delivery.token
                out.append(held)
        return out

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        results: list[SettleResult] = []
        with self._cond:
            now = self.clock.now()
            woke = False
            for outcome in outcomes:
                delivery = outcome.delivery
                job = delivery.job
                current = self._inflight.get(job.id)
                if current is None or current.token != delivery.token:
                    logger.warning(
                        "stale_settle_rejected",
                        job_id=job.id,
                        worker=delivery.worker,
                        outcome=type(outcome).__name__,
                    )
                    results.append(SettleResult(accepted=False))
                    continue
                del self._inflight[job.id]
                self._marked.pop(job.id, None)
                self._cancel_requests.discard(job.id)
                if not isinstance(outcome, Released):
                    self._crashes.pop(job.id, None)  # a new attempt, or the end: a fresh count
                chain = None
                if isinstance(outcome, Completed):
                    chain = self._complete(outcome, now)
                    woke = True
                elif isinstance(outcome, Retried):
                    retry = job.retried(not_before=now + outcome.delay)
                    self._deliveries.pop(job.id, None)
                    self._place(retry, now)
                    error = outcome.recorded_error
                    record = self._records[job.id]
                    self._records[job.id] = evolve(
                        record, error=error, errors=kept_errors(record.errors, error)
                    )
                    woke = True
                elif isinstance(outcome, Failed):
                    chain = self._fail(job, outcome, now)
                elif isinstance(outcome, Aborted):
                    previous = self._records[job.id]
                    chain = self._cancelled(job, now, started_at=outcome.started_at or previous.started_at)
                elif isinstance(outcome, Released):
                    self._deliveries[job.id] = max(0, self._deliveries.get(job.id, 1) - 1)
                    self._push_ready(job)
                    self._records[job.id] = evolve(self._records[job.id], state=JobState.QUEUED)
                    woke = True
                results.append(SettleResult(accepted=True, chain=chain))
            if woke:
                self._cond.notify_all()
        return results

    def _complete(self, outcome: Completed, now: float) -> ChainRecord | None:
        job = outcome.delivery.job
        if job.unique is not None:
            self._release_unique(job)
        self._deliveries.pop(job.id, None)
        self._fifo.pop(job.id, None)
        self._records[job.id] = JobRecord(
            job=job,
            state=JobState.SUCCEEDED,
            result=outcome.result,
            errors=self._records[job.id].errors,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
        )
        if job.chain is None:
            return None
        record = self._chains.get(job.chain.chain_id)
        if record is None:
            return None
        updated, following = workflow.apply_completed(
            record,
            job.chain,
            outcome.result,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            now=now,
            result_sig=outcome.result_sig,
        )
        self._chains[record.id] = updated
        for next_job in following:
            if next_job.id not in self._records:
                self._place(next_job, now)
        if updated.state is ChainState.COMPLETED and record.state is not ChainState.COMPLETED:
            return updated
        return None

    def _fail(self, job: Job, outcome: Failed, now: float) -> ChainRecord | None:
        if job.unique is not None:
            self._release_unique(job)
        self._deliveries.pop(job.id, None)
        self._fifo.pop(job.id, None)
        previous = self._records[job.id]
        error = outcome.recorded_error
        self._records[job.id] = JobRecord(
            job=job,
            state=JobState.FAILED,
            error=error,
            errors=kept_errors(previous.errors, error),
            started_at=previous.started_at,
            finished_at=now,
        )
        self._failed[job.id] = FailedEntry(job=job, error=outcome.error, failed_at=now)
        if job.chain is None:
            return None
        record = self._chains.get(job.chain.chain_id)
        if record is None:
            return None
        updated = workflow.apply_failed(record, job.chain, outcome.error, now=now)
        self._chains[record.id] = updated
        if updated.state is ChainState.HALTED and record.state is not ChainState.HALTED:
            return updated
        return None

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._cond:
            return self._shown(self._records.get(job_id))

    def _shown(self, record: JobRecord | None) -> JobRecord | None:
        """``record`` as shown: a running job's names the worker holding it (lock held)."""
        if record is None or record.state is not JobState.RUNNING:
            return record
        delivery = self._inflight.get(record.job.id)
        return record if delivery is None else evolve(record, worker=delivery.worker)

    def get_chain(self, chain_id: str) -> ChainRecord | None:
        with self._cond:
            return self._chains.get(chain_id)

    # --- the asyncio client: the same calls, made on the loop (the lock is held for microseconds) ---

    def serves_async(self) -> bool:
        return True

    async def enqueue_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self.enqueue(jobs, chains)

    async def enqueue_new_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self.enqueue_new(jobs, chains)

    async def get_job_async(self, job_id: str) -> JobRecord | None:
        return self.get_job(job_id)

    async def get_chain_async(self, chain_id: str) -> ChainRecord | None:
        return self.get_chain(chain_id)

    async def close_async(self) -> None:
        """Nothing: no connection to close."""

    # --- unique jobs -----------------------------------------------------------------

    def enqueue_unique(
        self, jobs: Sequence[Job], keys: Sequence[str], *, hold: float | None = None
    ) -> list[str]:
        check_batch(jobs, keys, hold)
        out: list[str] = []
        with self._cond:
            now = self.clock.now()
            for job, key in zip(jobs, keys, strict=True):
                if job.id in self._records:
                    out.append(job.id)
                    continue
                holder = self._holder(job.queue, key, now)
                if holder is not None:
                    out.append(holder)
                    continue
                self._place(job, now)
                self._unique[job.queue, key] = (job.id, None if hold is None else now + hold)
                out.append(job.id)
            self._cond.notify_all()
        return out

    def _holder(self, queue: str, key: str, now: float) -> str | None:
        """The id of the job holding ``key`` in ``queue`` (lock held); a key no longer held is dropped."""
        entry = self._unique.get((queue, key))
        if entry is None:
            return None
        holder, until = entry
        if until is None:
            record = self._records.get(holder)
            if holder_is_live(None if record is None else record.state):
                return holder
        elif until > now:
            return holder
        del self._unique[queue, key]
        return None

    def _release_unique(self, job: Job) -> None:
        """Free the key ``job`` carries if ``job`` holds it (lock held): settle, and cancel, call it."""
        assert job.unique is not None
        entry = self._unique.get((job.queue, job.unique))
        if entry is not None and entry[0] == job.id and entry[1] is None:
            del self._unique[job.queue, job.unique]

    # --- failed queue ----------------------------------------------------------------

    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        with self._cond:
            return list(itertools.islice(self._failed.values(), offset, offset + limit))

    def get_failed(self, job_id: str) -> FailedEntry | None:
        with self._cond:
            return self._failed.get(job_id)

    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        moved: list[str] = []
        with self._cond:
            missing = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in self._failed]
            if missing:  # checked under the lock before anything moves: all or nothing
                raise NotInFailedQueueError(missing)
            now = self.clock.now()
            for job_id in job_ids:
                entry = self._failed.pop(job_id, None)
                if entry is None:
                    continue
                job = evolve(entry.job, attempt=1, not_before=None, enqueued_at=now)
                if job.expires_at is not None:
                    job = evolve(job, expires_at=now + (entry.job.expires_at or now) - entry.job.enqueued_at)
                self._deliveries.pop(job_id, None)
                self._crashes.pop(job_id, None)
                self._place(job, now)
                if job.chain is not None and job.chain.chain_id in self._chains:
                    chain = self._chains[job.chain.chain_id]
                    self._chains[chain.id] = workflow.apply_redrive(chain, job.chain)
                moved.append(job_id)
            if moved:
                self._cond.notify_all()
        return moved

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        with self._cond:
            if job_ids is None:
                count = len(self._failed)
                self._failed.clear()
                return count
            return sum(self._failed.pop(job_id, None) is not None for job_id in job_ids)

    # --- workers ---------------------------------------------------------------------

    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        with self._cond:
            now = self.clock.now()
            holder, until = self._workers.get(info.name, (None, 0.0))
            live = until > now
            taken = name_taken(holder, live, info)
            if taken is not None:
                raise taken
            if holder is None or not live or holder.instance != info.instance:
                self._stop_requests.discard(info.name)  # meant for the worker that held the name before
            self._workers[info.name] = (info, now + ttl)
            return info.name in self._stop_requests

    def remove_worker(self, name: str, instance: str | None = None) -> None:
        with self._cond:
            holder = self._workers.get(name)
            if holder is None or (instance is not None and holder[0].instance != instance):
                return
            del self._workers[name]
            self._stop_requests.discard(name)

    def workers(self) -> list[WorkerInfo]:
        with self._cond:
            now = self.clock.now()
            return sorted(
                (info for info, until in self._workers.values() if until > now), key=lambda i: i.name
            )

    def request_stop(self, name: str) -> bool:
        with self._cond:
            entry = self._workers.get(name)
            if entry is None or entry[1] <= self.clock.now():
                return False
            self._stop_requests.add(name)
            return True

    # --- cancelling ------------------------------------------------------------------

    def _cancelled(self, job: Job, now: float, *, started_at: float | None = None) -> ChainRecord | None:
        """Record ``job`` (no longer ready, delayed or in flight) cancelled and end its chain (lock held)."""
        if job.unique is not None:
            self._release_unique(job)
        self._deliveries.pop(job.id, None)
        self._fifo.pop(job.id, None)
        self._crashes.pop(job.id, None)
        previous = self._records.get(job.id)
        self._records[job.id] = JobRecord(
            job=job,
            state=JobState.CANCELLED,
            errors=() if previous is None else previous.errors,
            started_at=started_at,
            finished_at=now,
        )
        if job.chain is None:
            return None
        record = self._chains.get(job.chain.chain_id)
        if record is None:
            return None
        updated = workflow.apply_cancelled(record, job.chain, now=now)
        self._chains[record.id] = updated
        ended = updated.state is ChainState.CANCELLED and record.state is not ChainState.CANCELLED
        return updated if ended else None

    def cancel(self, job_ids: Sequence[str]) -> CancelReport:
        out: dict[str, list[str]] = {"cancelled": [], "requested": [], "finished": [], "unknown": []}
        with self._cond:
            now = self.clock.now()
            self._promote(now)
            for job_id in dict.fromkeys(job_ids):
                record = self._records.get(job_id)
                if record is None:
                    out["unknown"].append(job_id)
                elif record.state.finished:
                    out["finished"].append(job_id)
                elif job_id in self._inflight:
                    self._cancel_requests.add(job_id)
                    out["requested"].append(job_id)
                else:
                    if record.state is JobState.DELAYED:
                        self._delayed = [e for e in self._delayed if e[2].id != job_id]
                        heapq.heapify(self._delayed)
                    else:
                        heap = self._ready.get(record.job.queue, [])
                        heap[:] = [e for e in heap if e[2].id != job_id]
                        heapq.heapify(heap)
                    self._cancelled(record.job, now)
                    out["cancelled"].append(job_id)
        return CancelReport(**{k: tuple(v) for k, v in out.items()})

    def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        with self._cond:
            return [job_id for job_id in job_ids if job_id in self._cancel_requests]

    def purge(self, queue: str) -> int:
        with self._cond:
            now = self.clock.now()
            self._promote(now)
            jobs = [entry[2] for entry in self._ready.pop(queue, [])]
            delayed = [e for e in self._delayed if e[2].queue == queue]
            if delayed:
                self._delayed = [e for e in self._delayed if e[2].queue != queue]
                heapq.heapify(self._delayed)
                jobs.extend(e[2] for e in delayed)
            for job in jobs:
                self._cancelled(job, now)
            return len(jobs)

    # --- paused queues ---------------------------------------------------------------

    def pause(self, queues: Sequence[str]) -> None:
        with self._cond:
            self._paused.update(queues)

    def resume(self, queues: Sequence[str]) -> None:
        with self._cond:
            self._paused.difference_update(queues)
            self._cond.notify_all()

    def paused(self) -> list[str]:
        with self._cond:
            return sorted(self._paused)

    # --- browsing --------------------------------------------------------------------

    def browse(
        self,
        *,
        queue: str,
        state: JobState,
        task: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> JobPage:
        with self._cond:
            self._promote(self.clock.now())
            records = self._records
            candidates = [
                (order_key(r), r.job.id)
                for r in records.values()
                if r.state is state and r.job.queue == queue and (task is None or r.job.task == task)
            ]
            return page(
                candidates,
                lambda ids: [self._shown(records.get(i)) for i in ids],
                state=state,
                task=task,
                limit=limit,
                cursor=cursor,
                oldest_first=oldest_first,
            )

    def counts(self, queue: str) -> dict[JobState, int]:
        with self._cond:
            self._promote(self.clock.now())
            counts = dict.fromkeys(BROWSABLE, 0)
            for record in self._records.values():
                if record.job.queue == queue and record.state in counts:
                    counts[record.state] += 1
            return counts

    # --- inspection ------------------------------------------------------------------

    def stats(self) -> list[QueueStats]:
        with self._cond:
            self._promote(self.clock.now())
            counts: dict[str, dict[str, int]] = {}

            def bump(queue: str, what: str) -> None:
                counts.setdefault(queue, {"ready": 0, "delayed": 0, "in_flight": 0, "failed": 0})[what] += 1

            for queue, heap in self._ready.items():
                counts.setdefault(queue, {"ready": 0, "delayed": 0, "in_flight": 0, "failed": 0})
                counts[queue]["ready"] += len(heap)
            for _, _, job in self._delayed:
                bump(job.queue, "delayed")
            for delivery in self._inflight.values():
                bump(delivery.job.queue, "in_flight")
            for entry in self._failed.values():
                bump(entry.job.queue, "failed")
            return [QueueStats(queue=q, **c) for q, c in sorted(counts.items())]


@hookimpl
def jobchain_register_backends(registry: BackendRegistry) -> None:
    registry.add("memory", MemoryBackend.from_url, summary="in-process, thread-safe; the embedded default")
