"""The ``redis-lists://`` backend: ready jobs in Redis lists, the reliable-queue pattern, MULTI/EXEC.

Ready jobs sit in *bands*: one list per queue and band, where a job's band is
its static aging key ``enqueued_at / aging_interval - priority`` cut into
slices ``band_width`` aging intervals wide (default 0.01). A sorted set per
queue indexes the non-empty bands, so the most urgent band is found with one
ZRANGE and no promotion pass is ever needed: aging is exact to within one band
width, and FIFO (by arrival) within a band. A job going back to the queue
(release, lost lease, retry, delay over) goes to the head of its band, so it
keeps its place.

Reservation reads the heads of the most urgent bands under WATCH, then in
one MULTI/EXEC moves them with ``LMOVE`` into the worker's processing list and
writes their leases (token, lease end, delivery count): a job is always either
ready or leased, never in between. Every
settlement is one WATCH/MULTI/EXEC over the job hashes (and chain records) it
touches: the delivery token read under WATCH must still be the one the worker
holds, or the outcome is rejected. No Lua.

Crash windows: a worker that dies holding jobs leaves them in its processing
list and in the lease set; when the leases run out any reserver moves them
back to the head of their bands (WATCH on the lease set and the job hashes,
so an extension or a settlement that wins the race keeps the job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import redis
import redis.cluster

from jobchain.capabilities import (
    Browse,
    Cancel,
    FailedQueue,
    Pause,
    ScheduleSlots,
    Stats,
    Uniqueness,
    WorkerRegistry,
)
from jobchain.model import Delivery, Job, JobState, QueueStats
from jobchain_redis._guard import COUNT_TOLERATE, QueueGuard
from jobchain_redis._layout import Writes
from jobchain_redis._lists_take import ListTaker
from jobchain_redis._store import Store
from jobchain_redis.codec import decodable, dumps
from jobchain_redis.common import RedisBackend, RedisOptions
from jobchain_redis.connection import Pipe, Transaction
from jobchain_redis.keys import Keys

__all__ = ["ListsBackend", "ListsLayout"]

#: how many wake-up tokens a queue's signal list keeps at most
_SIGNALS = 64


class ListWrites(Writes):
    """Collects what a transaction made ready, to add band index entries and wake-ups once."""

    def __init__(self, keys: Keys) -> None:
        super().__init__(keys)
        self.bands: dict[str, dict[str, float]] = {}
        self.ready: dict[str, int] = {}

    def flush(self, pipe: Pipe) -> None:
        self.seen.update(self.ready)
        super().flush(pipe)
        keys = self.keys
        for queue, bands in self.bands.items():
            pipe.zadd(keys.bands(queue), bands)
        for queue, count in self.ready.items():
            signal = keys.signal(queue)
            pipe.rpush(signal, *(["1"] * min(count, _SIGNALS)))
            pipe.ltrim(signal, -_SIGNALS, -1)


class ListsLayout:
    """Ready jobs in one list per queue and band, leased ones in per-worker processing lists."""

    settle_fields: tuple[str, ...] = ("worker",)
    tolerate: tuple[str, ...] = ()

    def __init__(self, store: Store, guard: QueueGuard) -> None:
        self.store = store
        self.keys = store.keys
        self.guard = guard
        self._taker = ListTaker(store, guard, self)

    # --- the structure ---------------------------------------------------------------

    def writes(self) -> ListWrites:
        return ListWrites(self.keys)

    def push_ready(self, pipe: Pipe, writes: Writes, job: Job, *, front: bool) -> None:
        """Put ``job`` in its band's list (at its head if ``front``); index the band, wake a reserver."""
        assert isinstance(writes, ListWrites)
        band = self.store.band(job)
        key = self.keys.ready(job.queue, band)
        if front:
            pipe.lpush(key, job.id)
        else:
            pipe.rpush(key, job.id)
        writes.bands.setdefault(job.queue, {})[str(band)] = band
        writes.ready[job.queue] = writes.ready.get(job.queue, 0) + 1

    def place(self, pipe: Pipe, writes: Writes, job: Job, now: float, *, front: bool) -> None:
        """Store the job's payload and make it ready, or delayed until ``not_before``."""
        fields: dict[str, str] = {"job": dumps(job.to_wire()), "queue": job.queue}
        if job.not_before is not None and job.not_before > now:
            pipe.zadd(self.keys.delayed(job.queue), {job.id: job.not_before})
            writes.seen.add(job.queue)
            fields["state"] = JobState.DELAYED.value
        else:
            self.push_ready(pipe, writes, job, front=front)
            fields["state"] = JobState.QUEUED.value
        pipe.hset(self.keys.job(job.id, job.queue), mapping=fields)

    def requeue(self, pipe: Pipe, writes: Writes, jobs: Sequence[Job], now: float) -> None:
        # each goes to the head of its band: push the least urgent first so they keep their order
        for job in sorted(jobs, key=lambda j: (self.store.band(j), j.id), reverse=True):
            self.push_ready(pipe, writes, job, front=True)
            pipe.hset(self.keys.job(job.id, job.queue), "state", JobState.QUEUED.value)

    def release(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        self.push_ready(pipe, writes, job, front=True)

    def unlease(
        self, pipe: Pipe, writes: Writes, job: Job, worker: str, row: dict[str, str | None], *, done: bool
    ) -> list[str]:
        writes.unlease(job.queue, job.id)
        pipe.lrem(self.keys.processing(worker, job.queue), 1, job.id)
        return ["token", "worker", "lease_until"]

    def withdraw(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        pipe.lrem(self.keys.ready(job.queue, self.store.band(job)), 1, job.id)

    def waiting(self, queue: str) -> list[str]:
        client = self.store.client
        pipe = client.pipeline(transaction=False)
        for band in client.zrange(self.keys.bands(queue), 0, -1):
            pipe.lrange(self.keys.ready(queue, int(band)), 0, -1)
        return [job_id for ids in pipe.execute() for job_id in ids]

    def hold(self, pipe: Pipe, job: Job, worker: str) -> None:
        pipe.rpush(self.keys.processing(worker, job.queue), job.id)

    def refresh(self, pipe: Pipe, delivery: Delivery, row: dict[str, str | None]) -> None:
        """Nothing: a list entry has no idle time."""

    def ready_index(self, queue: str) -> str:
        return self.keys.bands(queue)

    def ready_ids(self, queue: str) -> list[str]:
        client = self.store.client
        pipe = client.pipeline(transaction=False)
        for band in client.zrange(self.keys.bands(queue), 0, -1):
            pipe.lrange(self.keys.ready(queue, int(band)), 0, -1)
        return [j for ids in pipe.execute(raise_on_error=False) if isinstance(ids, list) for j in ids]

    def held_by(self, queues: Sequence[str], worker: str) -> list[tuple[str, str]]:
        lists = {self.keys.processing(worker, q): q for q in reversed(queues)}  # one per tag
        pipe = self.store.client.pipeline(transaction=False)
        for key in lists:
            pipe.lrange(key, 0, -1)
        held = [
            (q, j) for q, ids in zip(lists.values(), pipe.execute(), strict=True) for j in ids if decodable(j)
        ]
        return list(dict.fromkeys(held))

    # --- reserving -------------------------------------------------------------------

    def take(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> tuple[list[Delivery], dict[str, str]]:
        return self._taker.take(queues, limit, lease, worker), {}

    def wait(self, queues: Sequence[str], seconds: float, seen: dict[str, str]) -> None:
        # wake at the next enqueue, or soon anyway for delayed jobs and lost leases
        self.store.client.blpop([self.keys.signal(q) for q in queues], timeout=seconds)

    # --- inspection ------------------------------------------------------------------

    def stats(self) -> list[QueueStats]:
        queues = sorted(self.store.client.smembers(self.keys.queues))
        if not queues:
            return []
        self._taker.promote(queues, self.store.now())
        counted: dict[str, QueueStats] = {}
        for group in self.store.by_tag(queues, lambda q: q):
            counted.update(self._count(group))
        return [counted[q] for q in queues]

    def _count(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """The counts of queues of one tag, from one snapshot."""
        keys = self.keys
        band_index = [keys.bands(q) for q in queues]

        def body(tx: Transaction) -> list[list[str]]:
            # one snapshot: a band added after the WATCH retries; a job moving from a band to a lease
            # inside the MULTI is counted once, so a busy queue never looks idle
            tx.watch(*band_index)
            bands: list[list[str]] = tx.read(lambda r: [r.zrange(k, 0, -1) for k in band_index])
            pipe = tx.multi()
            for q, names in zip(queues, bands, strict=True):
                for band in names:
                    pipe.llen(keys.ready(q, int(band)))
                pipe.zcard(keys.delayed(q))
                pipe.zcard(keys.leases(q))
                pipe.zcard(keys.failed_in(q))
                pipe.hlen(keys.outbox(q))
            return bands

        bands, rows = self.store.route.transact(band_index[0], body, tolerate=COUNT_TOLERATE)
        counts = iter(n if isinstance(n, int) else 0 for n in rows)  # a key of the wrong type: counted empty
        out: dict[str, QueueStats] = {}
        for q, names in zip(queues, bands, strict=True):
            ready = sum(next(counts) for _ in names)
            delayed, in_flight, failed, moving = next(counts), next(counts), next(counts), next(counts)
            # a chain job settled whose next step is not stored yet (spread layout) is still in flight
            in_flight += moving
            out[q] = QueueStats(queue=q, ready=ready, delayed=delayed, in_flight=in_flight, failed=failed)
        return out


class ListsBackend(
    RedisBackend, FailedQueue, WorkerRegistry, Stats, Cancel, Pause, Browse, Uniqueness, ScheduleSlots
):
    """Jobs in Redis lists and hashes: the shared parts and :class:`ListsLayout` (module docstring)."""

    scheme = "redis-lists"
    default_band_width = 0.01

    def __init__(
        self, client: redis.Redis | redis.cluster.RedisCluster, **options: Unpack[RedisOptions]
    ) -> None:
        super().__init__(client, layout=ListsLayout, **options)
