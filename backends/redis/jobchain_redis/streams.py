"""The ``redis-streams://`` backend: a stream per queue and priority band, one consumer group, MULTI/EXEC.

Layout (every key in :mod:`jobchain_redis.keys`). A ready job is an entry
``id=<job id>`` in the stream of its queue and *band*: its static aging key
``enqueued_at / aging_interval - priority`` cut into slices ``band_width``
aging intervals wide (default 0.1, ``?band=``). Entries of one band are in
arrival order, so aging is exact to within one band width. Two sorted sets per
queue index the bands: ``bands`` every band stream that exists, ``fresh`` the
ones that may still hold entries not yet delivered to the group. Every band
stream has the consumer group ``jobchain``, created with ``XGROUP CREATE …
MKSTREAM`` in the same MULTI as the first ``XADD`` (a ``BUSYGROUP`` answer is
expected and tolerated).

Reservation walks the most urgent fresh bands of the queues asked for, in
order: entries to claim again in a band (see leases) come before its new
entries; new entries are read with ``XREADGROUP … COUNT n STREAMS <band> >``
and then leased in one MULTI/EXEC (token, lease end, entry id and delivery
count in the job hash, lease end in ``{p}:leases:<queue>``). A read that comes
back short retires the band from ``fresh`` under WATCH on its stream (an
``XADD`` meanwhile keeps it). The wait is an ``XREAD BLOCK`` on the queues'
wake-up streams, which every transaction that makes a job ready appends to
(``MAXLEN 16``).

Leases are a sorted set judged on the backend's clock (the server's ``TIME``),
not the entries' idle time: a lease can be any length per delivery and is
extended by a ZADD, and the same clock that tests inject decides expiry. An
entry whose lease ran out, or which was released (score 0), stays pending in
the group and is taken over with ``XCLAIM … JUSTID`` under WATCH on its job
hash, so it keeps its place in the band. Every settlement is one
WATCH/MULTI/EXEC (see :mod:`jobchain_redis.common`) that also ``XACK``s and
``XDEL``s the entry, next to the next step's ``XADD``: settled entries leave
the stream at once, and band streams left empty are deleted by the periodic
sweep, so memory stays bounded by the jobs not yet settled.

Crash windows: a reserver that dies between ``XREADGROUP`` and the lease write
leaves a pending entry with no lease. Reservers sweep each band with
``XAUTOCLAIM`` at most every ``orphan_idle`` seconds (default 30, ``?orphan_idle=``; entries idle
that long on the server) and mark such entries for claiming again. A worker
that restarts under its old name finds its pending entries with ``XPENDING``
on its first reserve and takes them back at once. An entry or job that cannot
be read is acknowledged, deleted and filed in the failed queue with its stored
text. No Lua.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Unpack

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
from jobchain_redis._layout import Writes, promote_delayed
from jobchain_redis._store import Store
from jobchain_redis._streams_bands import GROUP
from jobchain_redis._streams_take import StreamTaker
from jobchain_redis.codec import decodable, dumps
from jobchain_redis.common import RedisBackend, RedisOptions
from jobchain_redis.connection import Pipe, number_option
from jobchain_redis.keys import Keys

__all__ = ["GROUP", "StreamsBackend", "StreamsLayout"]

#: how many wake-ups a queue's wake stream keeps
_WAKES = 16


class StreamWrites(Writes):
    """Bands a transaction added entries to (indexed, group created once) and queues to wake.

    ``grouped`` is the layout's memory of the band streams it created the
    group of; their ``XGROUP CREATE`` is left out. It is only an optimisation:
    a band stream deleted (emptied) and recreated by a later ``XADD`` has no
    group, and the reserver that meets ``NOGROUP`` creates it (from id 0, so
    no entry is missed).
    """

    def __init__(self, keys: Keys, grouped: set[str]) -> None:
        super().__init__(keys)
        self.grouped = grouped
        self.bands: dict[str, dict[str, int]] = {}
        self.acks: dict[str, list[str]] = {}
        #: deliveries already made of a job that gets a new entry (a lapsed hand-off), kept in the entry
        self.carry: dict[str, int] = {}

    def ack(self, stream: str, entry: str) -> None:
        self.acks.setdefault(stream, []).append(entry)

    def flush(self, pipe: Pipe) -> None:
        self.seen.update(self.bands)
        super().flush(pipe)
        keys = self.keys
        for stream, entries in self.acks.items():
            pipe.xack(stream, GROUP, *entries)
            pipe.xdel(stream, *entries)
        for queue, bands in self.bands.items():
            pipe.zadd(keys.bands(queue), bands, nx=True)
            pipe.zadd(keys.fresh(queue), bands, nx=True)
            for band in bands.values():
                stream = keys.stream(queue, band)
                if stream not in self.grouped:
                    pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
                    if len(self.grouped) > 10_000:
                        self.grouped.clear()
                    self.grouped.add(stream)
        for queue in self.bands:
            pipe.xadd(keys.wake(queue), {"n": "1"}, maxlen=_WAKES, approximate=False)


class StreamsLayout:
    """Ready jobs as entries of one stream per queue and band, leased through one consumer group."""

    settle_fields: tuple[str, ...] = ("stream", "entry")
    tolerate: tuple[str, ...] = ("BUSYGROUP",)

    def __init__(self, store: Store, guard: QueueGuard, *, orphan_idle: float = 30.0) -> None:
        self.store = store
        self.keys = store.keys
        self.guard = guard
        #: band streams whose group this layout created (see :class:`StreamWrites`)
        self.grouped: set[str] = set()
        self._taker = StreamTaker(store, guard, self, orphan_idle=orphan_idle)

    # --- the structure ---------------------------------------------------------------

    def writes(self) -> StreamWrites:
        return StreamWrites(self.keys, self.grouped)

    def place(self, pipe: Pipe, writes: Writes, job: Job, now: float, *, front: bool) -> None:
        """Store the payload and append the job to its band's stream, or to the delayed set.

        ``front`` cannot be honoured by a stream: a job going back appends to its
        band, which keeps its place to within one band width.
        """
        assert isinstance(writes, StreamWrites)
        fields: dict[str, str] = {"job": dumps(job.to_wire()), "queue": job.queue}
        if job.not_before is not None and job.not_before > now:
            pipe.zadd(self.keys.delayed(job.queue), {job.id: job.not_before})
            writes.seen.add(job.queue)
            fields["state"] = JobState.DELAYED.value
        else:
            band = self.store.band(job)
            entry = {"id": job.id}
            if writes.carry.get(job.id):
                entry["d"] = str(writes.carry[job.id])
            pipe.xadd(self.keys.stream(job.queue, band), entry)
            writes.bands.setdefault(job.queue, {})[str(band)] = band
            fields["state"] = JobState.QUEUED.value
        pipe.hset(self.keys.job(job.id, job.queue), mapping=fields)

    def requeue(self, pipe: Pipe, writes: Writes, jobs: Sequence[Job], now: float) -> None:
        for job in jobs:
            self.place(pipe, writes, job, now, front=True)

    def unlease(
        self, pipe: Pipe, writes: Writes, job: Job, worker: str, row: dict[str, str | None], *, done: bool
    ) -> list[str]:
        assert isinstance(writes, StreamWrites)
        if not done:
            return ["token", "worker", "lease_until"]  # the release marks the entry with lease 0
        writes.unlease(job.queue, job.id)
        stream, entry = row.get("stream"), row.get("entry")
        if stream and entry:
            writes.ack(stream, entry)
        else:
            pipe.srem(self.keys.taken(job.queue), job.id)  # a handed-off job: it had no entry
        return ["token", "worker", "lease_until", "stream", "entry", "band"]

    def withdraw(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        # its entry is acknowledged and deleted, new or released (pending, with a lease of 0)
        assert isinstance(writes, StreamWrites)
        writes.unlease(job.queue, job.id)
        stream, entry = row.get("stream"), row.get("entry")
        if stream and entry:
            writes.ack(stream, entry)
        pipe.srem(self.keys.taken(job.queue), job.id)

    def waiting(self, queue: str) -> list[str]:
        client = self.store.client
        pipe = client.pipeline(transaction=False)
        for band in client.zrange(self.keys.bands(queue), 0, -1):
            pipe.xrange(self.keys.stream(queue, int(band)))
        pipe.zrangebyscore(self.keys.leases(queue), "-inf", 0)  # released entries
        *streams, released = pipe.execute()
        return [fields.get("id", "") for entries in streams for _, fields in entries] + list(released)

    def hold(self, pipe: Pipe, job: Job, worker: str) -> None:
        # a handed-off job has no entry: counted apart so that stats see it (in flight, or ready once
        # its lease has run out and until it gets an entry)
        pipe.sadd(self.keys.taken(job.queue), job.id)

    def refresh(self, pipe: Pipe, delivery: Delivery, row: dict[str, str | None]) -> None:
        # XCLAIM to its holder resets the entry's idle time: the orphan sweep (XAUTOCLAIM of entries
        # idle past orphan_idle) never takes the entry of a long job whose lease is kept fresh
        stream, entry = row.get("stream"), row.get("entry")
        if stream and entry and decodable(stream) and decodable(entry):
            pipe.xclaim(stream, GROUP, delivery.worker, 0, [entry], justid=True)

    def release(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        # the entry stays pending in the group; a lease of 0 marks it for claiming at once
        pipe.zadd(self.keys.leases(job.queue), {job.id: 0})

    def ready_index(self, queue: str) -> str:
        return self.keys.fresh(queue)

    def ready_ids(self, queue: str) -> list[str]:
        client = self.store.client
        pipe = client.pipeline(transaction=False)
        for band in client.zrange(self.keys.bands(queue), 0, -1):
            pipe.xrange(self.keys.stream(queue, int(band)))
        entries = [e for got in pipe.execute(raise_on_error=False) if isinstance(got, list) for e in got]
        return [fields["id"] for _, fields in entries if "id" in fields]

    def held_by(self, queues: Sequence[str], worker: str) -> list[tuple[str, str]]:
        """The jobs of the entries pending for consumer ``worker`` in every band of ``queues``."""
        client = self.store.client
        streams = [
            (q, self.keys.stream(q, int(b))) for q in queues for b in client.zrange(self.keys.bands(q), 0, -1)
        ]
        pending = client.pipeline(transaction=False)
        for _, stream in streams:
            pending.xpending_range(stream, GROUP, min="-", max="+", count=10_000, consumername=worker)
        replies = pending.execute(raise_on_error=False)
        reader = client.pipeline(transaction=False)
        read: list[str] = []
        for (queue, stream), reply in zip(streams, replies, strict=True):
            if isinstance(reply, Exception):
                continue  # the band went away meanwhile
            for item in reply:
                reader.xrange(stream, min=item["message_id"], max=item["message_id"])
                read.append(queue)
        held = [
            (queue, fields["id"])
            for queue, found in zip(read, reader.execute(), strict=True)
            for _, fields in found
            if fields.get("id") and decodable(fields["id"])
        ]
        return list(dict.fromkeys(held))

    # --- reserving -------------------------------------------------------------------

    def take(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> tuple[list[Delivery], dict[str, str]]:
        return self._taker.take(queues, limit, lease, worker)

    def wait(self, queues: Sequence[str], seconds: float, seen: dict[str, str]) -> None:
        # XREAD from the last wake-up the look saw: one written since wakes at once
        wakes = {self.keys.wake(q): seen.get(self.keys.wake(q), "$") for q in queues}
        self.store.client.xread(wakes, count=1, block=int(seconds * 1000))

    # --- inspection ------------------------------------------------------------------

    def stats(self) -> list[QueueStats]:
        store = self.store
        queues = sorted(store.client.smembers(self.keys.queues))
        if not queues:
            return []
        now = store.now()
        for q in queues:
            self.guard.guarded(q, "promote", functools.partial(promote_delayed, store, self, q, now))
        reader = store.client.pipeline(transaction=False)
        for q in queues:
            reader.zrange(self.keys.bands(q), 0, -1)
        bands: list[list[str]] = reader.execute()
        counted: dict[str, QueueStats] = {}
        for group in store.by_tag(zip(queues, bands, strict=True), lambda item: item[0]):
            counted.update(self._count(group, now))
        return [counted[q] for q in queues]

    def _count(self, queues: Sequence[tuple[str, list[str]]], now: float) -> dict[str, QueueStats]:
        """The counts of queues of one tag (with their bands), from one MULTI/EXEC."""
        keys = self.keys

        # ready: every entry (undelivered, released, lease run out, or read by a reserver that died)
        # but those under a live lease, plus handed-off jobs (no entry) whose lease ran out
        def writes(pipe: Pipe) -> None:
            for q, names in queues:
                for band in names:
                    pipe.xlen(keys.stream(q, int(band)))
                pipe.zcard(keys.delayed(q))
                pipe.zcount(keys.leases(q), f"({now!r}", "+inf")
                pipe.scard(keys.taken(q))
                pipe.zcard(keys.failed_in(q))
                pipe.hlen(keys.outbox(q))

        tolerate = self.tolerate + COUNT_TOLERATE  # a key of the wrong type is counted empty
        results = self.store.route.transact(
            keys.leases(queues[0][0]), lambda tx: writes(tx.multi()), tolerate=tolerate
        )
        counts = iter(n if isinstance(n, int) else 0 for n in results[1])
        out: dict[str, QueueStats] = {}
        for q, names in queues:
            entries = sum(next(counts) for _ in names)
            delayed, in_flight, taken, failed, moving = (next(counts) for _ in range(5))
            ready = max(0, entries - in_flight + taken)
            # a chain job settled whose next step is not stored yet (spread layout) is still in flight
            in_flight += moving
            out[q] = QueueStats(queue=q, ready=ready, delayed=delayed, in_flight=in_flight, failed=failed)
        return out


class StreamsBackend(
    RedisBackend, FailedQueue, WorkerRegistry, Stats, Cancel, Pause, Browse, Uniqueness, ScheduleSlots
):
    """Jobs in Redis streams and hashes: the shared parts and :class:`StreamsLayout` (module docstring)."""

    scheme = "redis-streams"
    default_band_width = 0.1

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        orphan_idle: float = 30.0,
        **options: Unpack[RedisOptions],
    ) -> None:
        #: seconds an entry read by a reserver that died before leasing it waits for the orphan sweep
        self.orphan_idle = float(orphan_idle)
        super().__init__(
            client, layout=functools.partial(StreamsLayout, orphan_idle=self.orphan_idle), **options
        )

    @classmethod
    def _url_options(cls, own: dict[str, str]) -> dict[str, Any]:
        idle = number_option(own, "orphan_idle", 30.0, "seconds", zero=True)
        return {**super()._url_options(own), "orphan_idle": idle}
