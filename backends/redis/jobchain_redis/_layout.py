"""What a Redis layout plugs into the shared parts: how ready jobs are stored, taken, leased and let go.

A Redis backend is assembled from shared parts (enqueue, settlement, the
Cluster outbox, the failed queue, records and workers, the reserve loop; see
:mod:`jobchain_redis.common`) and one :class:`Layout`: ``redis-lists`` keeps
ready jobs in lists (:mod:`jobchain_redis.lists`), ``redis-streams`` in
streams with a consumer group (:mod:`jobchain_redis.streams`). The job hashes,
chain records, lease sets, delayed sets and failed sets are the same in both
(:mod:`jobchain_redis.keys`); the parts call the layout for the rest.

Writes that many jobs of one transaction share (lease-set entries, band
indexes, wake-ups, acknowledgements) are collected in the layout's
:class:`Writes` and queued once at the end of the MULTI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from jobchain.ids import new_id
from jobchain.model import Delivery, Job, JobState, QueueStats
from jobchain_redis._failed import quarantine
from jobchain_redis._reading import UNREADABLE, parse_job
from jobchain_redis.codec import decodable, to_bytes
from jobchain_redis.connection import Pipe, Transaction
from jobchain_redis.keys import Keys

if TYPE_CHECKING:
    from jobchain_redis._store import Store

__all__ = ["Layout", "Writes", "charge", "promote_delayed"]

#: how many due delayed jobs one pass promotes per queue
PROMOTE_BATCH = 200


class Writes:
    """Writes of one transaction that many jobs share, queued once at the end of its MULTI.

    This part collects the jobs whose leases end or start (one ``ZREM`` and one
    ``ZADD`` per queue) and the queues that got a job; a layout's subclass adds
    band indexes, wake-ups and acknowledgements. Nothing queued before
    :meth:`flush` in the same MULTI may depend on these.
    """

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.unleased: dict[str, list[str]] = {}
        self.leased: dict[str, dict[str, float]] = {}
        #: queues that got a job: added to the queue list (one-tag layout; the spread layout notes
        #: them before the transaction, the list being in another slot)
        self.seen: set[str] = set()
        #: jobs that succeeded or were cancelled, per (queue, state) (job id -> finished_at), for the
        #: browse index
        self.finished: dict[tuple[str, str], dict[str, float]] = {}
        #: drop browse-index entries that finished before this (the result TTL), when set
        self.keep_after: float | None = None

    def succeed(self, queue: str, job_id: str, finished_at: float) -> None:
        self.finished.setdefault((queue, JobState.SUCCEEDED.value), {})[job_id] = finished_at

    def cancel(self, queue: str, job_id: str, finished_at: float) -> None:
        self.finished.setdefault((queue, JobState.CANCELLED.value), {})[job_id] = finished_at

    def unlease(self, queue: str, job_id: str) -> None:
        self.unleased.setdefault(queue, []).append(job_id)

    def lease(self, queue: str, job_id: str, until: float) -> None:
        self.leased.setdefault(queue, {})[job_id] = until

    def flush(self, pipe: Pipe) -> None:
        for queue, ids in self.unleased.items():
            pipe.zrem(self.keys.leases(queue), *ids)
        for queue, mapping in self.leased.items():
            pipe.zadd(self.keys.leases(queue), mapping)
        for (queue, state), finished in self.finished.items():  # one ZADD (and one trim) per index
            index = self.keys.finished(queue, state)
            pipe.zadd(index, finished)
            if self.keep_after is not None:
                pipe.zremrangebyscore(index, "-inf", f"({self.keep_after!r}")
        self.seen.update(self.leased)
        if self.seen and not self.keys.spread:
            pipe.sadd(self.keys.queues, *sorted(self.seen))


class Layout(Protocol):
    """The structure of ready and leased jobs: what differs between ``redis-lists`` and ``redis-streams``.

    Every method that takes ``pipe`` only queues writes inside a MULTI the
    caller opened (and its ``writes`` collector, from :meth:`writes`); the
    others (``held_by``, ``take``, ``wait``, ``stats``) talk to Redis themselves.
    """

    #: job-hash fields :meth:`unlease` and :meth:`release` need, read by settle after token, deliveries
    settle_fields: tuple[str, ...]
    #: error codes a command inside this layout's MULTI may answer without failing it
    tolerate: tuple[str, ...]

    def writes(self) -> Writes:
        """A fresh collector for one transaction."""
        ...

    def place(self, pipe: Pipe, writes: Writes, job: Job, now: float, *, front: bool) -> None:
        """Store the job's payload and make it ready (at the head of its band if ``front``) or delayed."""
        ...

    def requeue(self, pipe: Pipe, writes: Writes, jobs: Sequence[Job], now: float) -> None:
        """Make stored jobs ready again that waited (delayed ones now due), keeping their places."""
        ...

    def unlease(
        self, pipe: Pipe, writes: Writes, job: Job, worker: str, row: dict[str, str | None], *, done: bool
    ) -> list[str]:
        """Drop the delivery's lease; ``done`` when the job leaves its ready structure for good.

        Returns the job-hash fields to delete (the caller deletes them with its own in one HDEL).
        """
        ...

    def release(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        """Make a released job ready again at once, in its old place."""
        ...

    def withdraw(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        """Take a ready (never leased, or released) job out of the ready structure for good (a cancel).

        ``row`` holds the job-hash fields of :attr:`settle_fields`.
        """
        ...

    def waiting(self, queue: str) -> list[str]:
        """The ids of ``queue``'s ready jobs (a purge checks each under WATCH)."""
        ...

    def hold(self, pipe: Pipe, job: Job, worker: str) -> None:
        """Writes for a job leased without a reservation (a hand-off): lists' processing list …"""
        ...

    def refresh(self, pipe: Pipe, delivery: Delivery, row: dict[str, str | None]) -> None:
        """Extra writes when a lease is extended (redis-streams: keep the entry's idle time fresh)."""
        ...

    def ready_index(self, queue: str) -> str:
        """The sorted set of ``queue``'s bands that may hold ready jobs, scored by band number."""
        ...

    def ready_ids(self, queue: str) -> list[str]:
        """The ids in ``queue``'s ready structure (for browsing; some may be leased or gone by now)."""
        ...

    def held_by(self, queues: Sequence[str], worker: str) -> list[tuple[str, str]]:
        """``(queue, job id)`` of the jobs the Redis data says ``worker`` holds in ``queues``.

        The queue is one whose tag the job's keys have (its processing list or
        PEL is there); in the one-tag layout any of ``queues``.
        """
        ...

    def take(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> tuple[list[Delivery], dict[str, str]]:
        """One look: promote what is due, recover lost leases, lease up to ``limit`` ready jobs.

        Also returns what :meth:`wait` needs to wait from here (the wake-ups seen).
        """
        ...

    def wait(self, queues: Sequence[str], seconds: float, seen: dict[str, str]) -> None:
        """Block up to ``seconds`` for a wake-up of ``queues`` (one queue tag)."""
        ...

    def stats(self) -> list[QueueStats]:
        """The counts of every queue (promoting due delayed jobs first)."""
        ...


def charge(pipe: Pipe, key: str, token: str | None, running: str | None) -> None:
    """Queue the writes of a lease that ended unsettled: a crash if the job ran under it."""
    if running is not None:
        pipe.hdel(key, "running")
        if running == token:
            pipe.hincrby(key, "crashes", 1)


def promote_delayed(store: Store, layout: Layout, queue: str, now: float) -> None:
    """Move due delayed jobs of ``queue`` to the ready structure, in one MULTI/EXEC under WATCH.

    A member that is not valid UTF-8, or a job that cannot be read, is filed
    in the failed queue with what is stored.
    """
    keys = store.keys
    delayed = keys.delayed(queue)

    def body(tx: Transaction) -> None:
        tx.watch(delayed)
        [due] = tx.read(lambda r: r.zrangebyscore(delayed, "-inf", now, start=0, num=PROMOTE_BATCH))
        if not due:
            return
        junk = [j for j in due if not decodable(j)]
        due = [j for j in due if decodable(j)]
        raws = tx.read(lambda r: [r.hget(keys.job(j, queue), "job") for j in due]) if due else []
        pipe = tx.multi()
        writes = layout.writes()
        pipe.zrem(delayed, *due, *map(to_bytes, junk))
        for j in junk:
            quarantine(store, pipe, queue, new_id(), j, f"a member of {delayed} is not valid UTF-8", now)
        jobs: list[Job] = []
        for job_id, raw in zip(due, raws, strict=True):
            if raw is None:
                continue  # gone since (purged)
            try:
                jobs.append(parse_job(raw))
            except UNREADABLE as exc:
                quarantine(store, pipe, queue, job_id, raw, str(exc), now)
        layout.requeue(pipe, writes, jobs, now)
        writes.flush(pipe)

    store.transact(body, on=delayed)
