"""The band streams of ``redis-streams`` over time: retiring drained bands, and the orphan sweep.

A band stream leaves the ``fresh`` index once every entry in it was delivered
(:meth:`BandKeeper.retire_band`), and is deleted once it is empty. Entries a
reserver read but never leased (it died in between) are found by the orphan
sweep (:meth:`BandKeeper.sweep_orphans`, ``XAUTOCLAIM``) and marked for
claiming; an entry that names no job, or a job leased through another entry,
is acknowledged and deleted. See :mod:`jobchain_redis.streams` for the layout.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import redis
import structlog

from jobchain.ids import new_id
from jobchain.model import JobState
from jobchain_redis._failed import park, quarantine
from jobchain_redis.codec import decodable, dumps
from jobchain_redis.connection import Pipe, Transaction, wrong_type

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobchain_redis._guard import QueueGuard
    from jobchain_redis._store import Store

__all__ = ["GROUP", "BandKeeper", "discard_entry", "entry_order", "readable"]

logger = structlog.get_logger("jobchain.redis.streams")

#: the one consumer group of every band stream
GROUP = "jobchain"


def readable(fields: dict[str, str]) -> bool:
    """False for a stream entry holding bytes that are not UTF-8 (in a field's name or value)."""
    return all(decodable(k) and decodable(v) for k, v in fields.items())


def entry_order(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def discard_entry(
    store: Store, pipe: Pipe, queue: str, stream: str, entry: str, raw: str, reason: str
) -> None:
    """Ack and delete a stream entry that names no job; file it in the failed queue under a new id."""
    pipe.xack(stream, GROUP, entry)
    pipe.xdel(stream, entry)
    quarantine(store, pipe, queue, new_id(), raw, f"{reason} (entry {entry} of {stream})", store.now())


class BandKeeper:
    """Retiring and deleting band streams, and adopting orphaned entries."""

    def __init__(self, store: Store, guard: QueueGuard, grouped: set[str], *, orphan_idle: float) -> None:
        self.store = store
        self.keys = store.keys
        self.guard = guard
        #: band streams whose group the layout created (see :class:`~jobchain_redis.streams.StreamWrites`)
        self.grouped = grouped
        #: seconds an entry read by a reserver that died before leasing it waits for the orphan sweep
        self.orphan_idle = orphan_idle

    def retire_band(self, queue: str, band: int) -> None:
        """Take a band whose entries were all delivered out of the fresh index; delete it if empty.

        Under WATCH on the stream: an ``XADD`` meanwhile aborts the EXEC, and an
        entry added before the WATCH shows as a last entry newer than the
        group's last delivered one, so a band with new entries is never retired.
        """
        stream = self.keys.stream(queue, band)

        def body(tx: Transaction) -> None:
            tx.watch(stream)
            try:
                last, groups, length = tx.read(
                    lambda r: [r.xrevrange(stream, count=1), r.xinfo_groups(stream), r.xlen(stream)]
                )
            except redis.ResponseError:  # no such key: the band is gone altogether
                last, groups, length = [], [], 0
            delivered = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), "0-0")
            if last and entry_order(last[0][0]) > entry_order(delivered):
                return
            pipe = tx.multi()
            pipe.zrem(self.keys.fresh(queue), str(band))
            if length == 0:
                pipe.delete(stream)
                pipe.zrem(self.keys.bands(queue), str(band))

        self.store.transact(body, on=stream)

    def _drop_empty_bands(self, queue: str) -> None:
        """Delete the band streams of ``queue`` that were retired and have no entries left."""
        bands = self.store.client.zrange(self.keys.bands(queue), 0, -1)
        fresh = set(self.store.client.zrange(self.keys.fresh(queue), 0, -1))
        for name in bands:
            if name in fresh:
                continue
            stream = self.keys.stream(queue, int(name))

            def body(tx: Transaction, stream: str = stream, name: str = name) -> None:
                tx.watch(stream, self.keys.fresh(queue))
                length, score = tx.read(lambda r: [r.xlen(stream), r.zscore(self.keys.fresh(queue), name)])
                if length == 0 and score is None:
                    pipe = tx.multi()
                    pipe.delete(stream)
                    pipe.zrem(self.keys.bands(queue), name)

            self.store.transact(body, on=stream)

    def sweep_orphans(self, queues: Sequence[str], worker: str) -> None:
        """Mark pending entries that no lease covers (their reserver died before leasing) for claiming."""
        for queue in self.guard.open_queues(queues):
            self.guard.guarded(queue, "orphan sweep", functools.partial(self._sweep_queue, queue, worker))

    def _sweep_queue(self, queue: str, worker: str) -> None:
        idle_ms = int(self.orphan_idle * 1000)
        for name in self.store.client.zrange(self.keys.bands(queue), 0, -1):
            stream = self.keys.stream(queue, int(name))
            try:
                reply = self.store.client.xautoclaim(stream, GROUP, worker, idle_ms, "0-0", count=100)
            except redis.ResponseError:
                continue
            entries = reply[1] if reply and isinstance(reply[1], list) else []
            for entry, fields in entries:
                self._adopt(queue, int(name), stream, entry, fields or {})
        self._drop_empty_bands(queue)

    def _adopt(self, queue: str, band: int, stream: str, entry: str, fields: dict[str, str]) -> None:
        job_id = fields.get("id")
        if not job_id or not readable(fields):
            reason = "stream entry is not valid UTF-8" if job_id else "stream entry has no job id"
            self.store.multi(
                stream,
                lambda pipe: discard_entry(self.store, pipe, queue, stream, entry, dumps(fields), reason),
            )
            return
        key = self.keys.job(job_id, queue)

        def body(tx: Transaction) -> None:
            tx.watch(key)
            [row] = tx.read(lambda r: r.hmget(key, "entry", "state", "token"), tolerant=True)
            if isinstance(row, Exception):
                if wrong_type(row) is None:
                    raise row
                pipe = tx.multi()  # its hash is of another type: the entry goes, the job is filed as failed
                pipe.xack(stream, GROUP, entry)
                pipe.xdel(stream, entry)
                park(self.store, pipe, queue, job_id, self.store.now())
                return
            current, state, token = row
            if current == entry:
                return  # leased, or already marked
            pipe = tx.multi()
            if state == JobState.CANCELLED.value:  # cancelled while its entry was unread: nothing to warn of
                logger.debug("cancelled_entry_dropped", job_id=job_id, stream=stream, entry=entry)
                pipe.xack(stream, GROUP, entry)
                pipe.xdel(stream, entry)
                return
            if state != JobState.QUEUED.value or token is not None:
                # the job is leased through another entry, finished, delayed or gone: a duplicate entry
                logger.warning("duplicate_entry_dropped", job_id=job_id, stream=stream, entry=entry)
                pipe.xack(stream, GROUP, entry)
                pipe.xdel(stream, entry)
                return
            logger.info("orphan_entry_adopted", job_id=job_id, stream=stream, entry=entry)
            pipe.hset(key, mapping={"stream": stream, "entry": entry, "band": band})
            pipe.zadd(self.keys.leases(queue), {job_id: 0})

        self.store.transact(body, on=key)

    def read_after_nogroup(self, stream: str, worker: str, count: int) -> Any:
        """The band stream has no group: it was deleted and recreated by an XADD, or is gone."""
        if not self.store.client.exists(stream):
            return []
        try:
            self.store.client.xgroup_create(stream, GROUP, id="0")
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.grouped.add(stream)
        return self.store.client.xreadgroup(GROUP, worker, {stream: ">"}, count=count)
