"""How ``redis-streams`` takes ready jobs: claims of lapsed leases, then new entries, band by band.

One look (:meth:`StreamTaker.take`) reads the queues' indexes in one pipeline
and promotes due delayed jobs; then, most urgent band first, pending entries
whose lease ran out (or was released) are taken over with ``XCLAIM`` under
WATCH on their jobs, and new entries are read with ``XREADGROUP`` and leased
in one MULTI/EXEC. A handed-off job (no entry) whose lease ran out gets one
first. See :mod:`jobchain_redis.streams` for the layout.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
import structlog

from jobchain.model import Delivery, JobState
from jobchain_redis._failed import park, quarantine
from jobchain_redis._layout import charge, promote_delayed
from jobchain_redis._reading import UNREADABLE, parse_job
from jobchain_redis._streams_bands import GROUP, BandKeeper, discard_entry, entry_order, readable
from jobchain_redis.codec import decodable, dumps
from jobchain_redis.connection import Pipe, Transaction, wrong_type

if TYPE_CHECKING:
    from jobchain_redis._guard import QueueGuard
    from jobchain_redis._store import Store
    from jobchain_redis.streams import StreamsLayout

__all__ = ["StreamTaker"]

logger = structlog.get_logger("jobchain.redis.streams")

#: job states in which a new stream entry is the job's to deliver (None: a hash that is gone or
#: unreadable, which the reservation files as failed); any other state makes the entry a duplicate
_WAITING = (JobState.QUEUED.value, None)
#: bands looked at beyond ``limit`` (bands whose entries are all in flight yield nothing)
_EXTRA_BANDS = 8
#: reads of one band in one reservation while its entries lease nothing (duplicates, cancelled jobs)
_READ_ROUNDS = 4


class StreamTaker:
    """Reserving from the band streams of a :class:`~jobchain_redis.streams.StreamsLayout`."""

    def __init__(self, store: Store, guard: QueueGuard, layout: StreamsLayout, *, orphan_idle: float) -> None:
        self.store = store
        self.keys = store.keys
        self.guard = guard
        self.layout = layout
        self.orphan_idle = orphan_idle
        self.bands = BandKeeper(store, guard, layout.grouped, orphan_idle=orphan_idle)
        #: monotonic time of the last orphan sweep
        self.swept_at = time.monotonic()

    def take(
        self, queues: Sequence[str], limit: int, lease: float, worker: str, *, again: bool = True
    ) -> tuple[list[Delivery], dict[str, str]]:
        keys = self.keys
        now = self.store.now()
        if time.monotonic() - self.swept_at >= self.orphan_idle:
            self.swept_at = time.monotonic()
            self.bands.sweep_orphans(queues, worker)

        def read_index(queues: Sequence[str]) -> tuple[list[str], list[Any]]:
            pipe = self.store.pipeline()
            for q in queues:
                pipe.zrangebyscore(keys.delayed(q), "-inf", now, start=0, num=1)
                pipe.zrangebyscore(keys.leases(q), "-inf", now, start=0, num=limit)
                pipe.zrange(keys.fresh(q), 0, limit + _EXTRA_BANDS - 1, withscores=True)
                pipe.xrevrange(keys.wake(q), count=1)
            return self.guard.per_queue(  # a queue with a key of the wrong type is left out for a while
                queues,
                pipe.execute(raise_on_error=False),
                lambda q: (keys.delayed(q), keys.leases(q), keys.fresh(q), keys.wake(q)),
                "reserve",
            )

        queues, found = read_index(self.guard.open_queues(queues))
        due = [q for q, hit in zip(queues, found[0::4], strict=True) if hit]
        for q in due:
            self.guard.guarded(
                q, "promote", functools.partial(promote_delayed, self.store, self.layout, q, now)
            )
        if due:
            queues, found = read_index(self.guard.open_queues(queues))
        wakes = {
            keys.wake(q): (last[0][0] if last else "0-0") for q, last in zip(queues, found[3::4], strict=True)
        }
        # (band, 0 = claim again / 1 = new entries, entry order, queue, job id or "", stream, entry)
        plan: list[tuple[int, int, tuple[int, int], str, str, str, str]] = []
        expired = [(q, j) for q, ids in zip(queues, found[1::4], strict=True) for j in ids]
        if expired:
            pipe = self.store.pipeline()
            for q, job_id in expired:
                pipe.hmget(keys.job(job_id, q), "stream", "entry", "band")
            unentried: list[tuple[str, str]] = []
            for (q, job_id), row in zip(expired, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(row, Exception):
                    if wrong_type(row) is None:
                        raise row
                    # its hash is of another type: out of the leases (its entry, once the orphan sweep
                    # finds it, is dropped by _adopt)
                    self.store.multi(
                        keys.leases(q), functools.partial(park, self.store, queue=q, job_id=job_id, now=now)
                    )
                    continue
                stream, entry, band = row
                if stream and entry and band is not None and all(map(decodable, (stream, entry, band))):
                    plan.append((int(band), 0, entry_order(entry), q, job_id, stream, entry))
                else:
                    unentried.append((q, job_id))
            if unentried and again:  # handed-off steps with no entry get one now; read the index again
                for group in self.store.by_tag(unentried, lambda item: item[0]):
                    self._requeue_unentried(group, now)
                return self.take(queues, limit, lease, worker, again=False)
        for q, index in zip(queues, found[2::4], strict=True):
            for name, _score in index:
                band = int(name)
                plan.append((band, 1, (0, 0), q, "", keys.stream(q, band), ""))
        plan.sort()
        taken: list[Delivery] = []
        claims: list[tuple[str, str, str, str]] = []
        for band, kind, _, q, job_id, stream, entry in plan:
            if len(taken) + len(claims) >= limit:
                break
            if kind == 0:
                claims.append((q, job_id, stream, entry))
                continue
            if claims:
                taken += self._claim(claims, now, now + lease, worker)
                claims = []
            read = functools.partial(self._read_new, q, band, limit - len(taken), now + lease, worker)
            taken += self.guard.guarded(q, "reserve", read, key=stream) or []
        if claims:
            taken += self._claim(claims, now, now + lease, worker)
        return taken, wakes

    def _lease_writes(
        self,
        pipe: Pipe,
        leases: dict[str, dict[str, float]],
        queue: str,
        job_id: str,
        token: str,
        lease_until: float,
        worker: str,
        where: dict[str, str | int] | None = None,
        count: int = 1,
    ) -> int:
        """Queue the lease of one job (HSET, HINCRBY, HGET job, crashes); return where HINCRBY's reply is.

        ``where`` (the entry just read with ``>``) marks a first delivery of
        this entry: its count is 1 (a retry's new entry starts a new count), so
        it is set in the HSET and the HINCRBY is left out; -1 is returned and
        the caller knows the count. The lease-set entries are collected in
        ``leases`` for one ZADD per queue.
        """
        key = self.keys.job(job_id, queue)
        fields: dict[str, str | int] = {
            "state": JobState.RUNNING.value,
            "token": token,
            "worker": worker,
            "lease_until": repr(lease_until),
        }
        if where:
            fields.update(where)
            fields["deliveries"] = count
        pipe.hset(key, mapping=fields)
        at = -1 if where else len(pipe.command_stack)
        if not where:
            pipe.hincrby(key, "deliveries", 1)
        pipe.hget(key, "job")
        pipe.hget(key, "crashes")
        leases.setdefault(queue, {})[job_id] = lease_until
        return at

    def _zadd_leases(self, pipe: Pipe, leases: dict[str, dict[str, float]]) -> None:
        for queue, mapping in leases.items():
            pipe.zadd(self.keys.leases(queue), mapping)

    def _read_new(self, queue: str, band: int, count: int, lease_until: float, worker: str) -> list[Delivery]:
        """Up to ``count`` new entries of one band, leased; entries that lease nothing are read past.

        An entry may lease nothing: a duplicate (a submit re-sent after a lost
        reply), the entry of a job cancelled while it waited, an unreadable one.
        A full read that leased less than ``count`` reads on, a few times at most,
        so such entries never make a reservation come back empty while jobs wait.
        """
        out: list[Delivery] = []
        for _ in range(_READ_ROUNDS):
            got, full = self._read_batch(queue, band, count - len(out), lease_until, worker)
            out += got
            if not full or len(out) >= count:
                break
        return out

    def _read_batch(
        self, queue: str, band: int, count: int, lease_until: float, worker: str
    ) -> tuple[list[Delivery], bool]:
        """``XREADGROUP`` up to ``count`` new entries of one band, then lease them in one MULTI/EXEC.

        Returns the deliveries, and whether ``count`` entries were read (more may follow).
        """
        stream = self.keys.stream(queue, band)
        try:
            reply = self.store.client.xreadgroup(GROUP, worker, {stream: ">"}, count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            reply = self.bands.read_after_nogroup(stream, worker, count)
        entries: list[tuple[str, dict[str, str]]] = reply[0][1] if reply else []
        if len(entries) < count:
            self.bands.retire_band(queue, band)
        if not entries:
            return [], False
        first_entry: dict[str, str] = {}  # each job's first readable entry, in the stream's order
        for entry_id, fields in entries:
            job_id = fields.get("id")
            if job_id and job_id not in first_entry and readable(fields):
                first_entry[job_id] = entry_id
        ids = list(first_entry)
        job_keys = [self.keys.job(j, queue) for j in ids]

        def body(tx: Transaction) -> list[tuple[str, str, int, int]]:
            # under WATCH: an entry whose job is not waiting to be delivered (already leased through
            # another entry, or finished) is a duplicate, e.g. of a submit re-sent after a lost reply
            tx.watch(*job_keys)
            rows = (
                tx.read(
                    lambda r: [r.hmget(k, "state", "token", "entry", "worker") for k in job_keys],
                    tolerant=True,
                )
                if ids
                else []
            )
            for row in rows:
                if isinstance(row, Exception) and wrong_type(row) is None:
                    raise row
            # a job hash of another type: its entry is dropped and the job filed as failed, its key untouched
            wrong = {j for j, row in zip(ids, rows, strict=True) if isinstance(row, Exception)}
            rows = [(None, None, None, None) if isinstance(row, Exception) else row for row in rows]
            waiting = {
                j
                for j, (state, token, _, _) in zip(ids, rows, strict=True)
                if token is None and state in _WAITING
            }
            # a run after an EXEC whose reply was lost: the leases that EXEC applied (through these very
            # entries, to this worker) are this reservation's own, not duplicates; they keep their tokens
            own: dict[str, str] = {}
            if tx.attempt > 1:
                own = {
                    j: token
                    for j, (state, token, entry, holder) in zip(ids, rows, strict=True)
                    if token is not None
                    and state == JobState.RUNNING.value
                    and entry == first_entry[j]
                    and holder == worker
                }
                waiting |= own.keys()
            # a job cancelled while it waited: its entry (never read, so not in its hash) goes quietly
            cancelled = {
                j for j, (state, _, _, _) in zip(ids, rows, strict=True) if state == JobState.CANCELLED.value
            }
            # a state or token that is not UTF-8: the job is leased, and filed as unreadable by _collect
            garbled = {
                j
                for j, row in zip(ids, rows, strict=True)
                if any(value is not None and not decodable(value) for value in row)
            }
            pipe = tx.multi()
            leased: list[tuple[str, str, int, int]] = []
            leases: dict[str, dict[str, float]] = {}
            for entry, fields in entries:
                job_id = fields.get("id")
                if not job_id or not readable(fields):
                    reason = "stream entry is not valid UTF-8" if job_id else "stream entry has no job id"
                    discard_entry(self.store, pipe, queue, stream, entry, dumps(fields), reason)
                    continue
                if job_id in wrong:
                    pipe.xack(stream, GROUP, entry)
                    pipe.xdel(stream, entry)
                    park(self.store, pipe, queue, job_id, self.store.now())
                    wrong.discard(job_id)
                    continue
                if job_id in cancelled:
                    logger.debug("cancelled_entry_dropped", job_id=job_id, stream=stream, entry=entry)
                    pipe.xack(stream, GROUP, entry)
                    pipe.xdel(stream, entry)
                    continue
                if job_id not in waiting and job_id not in garbled:
                    logger.warning("duplicate_entry_dropped", job_id=job_id, stream=stream, entry=entry)
                    pipe.xack(stream, GROUP, entry)
                    pipe.xdel(stream, entry)
                    continue
                waiting.discard(job_id)  # a second entry of it in this batch is a duplicate too
                garbled.discard(job_id)
                token = own.get(job_id) or secrets.token_hex(8)
                where: dict[str, str | int] = {"stream": stream, "entry": entry, "band": band}
                count = 1 + int(fields.get("d") or 0)
                self._lease_writes(pipe, leases, queue, job_id, token, lease_until, worker, where, count)
                leased.append((job_id, token, count, len(pipe.command_stack) - 2))
            self._zadd_leases(pipe, leases)
            return leased

        leased, results = self.store.transact(body, on=stream)
        delivered = self._collect(
            [
                (queue, job_id, token, count, results[at], results[at + 1])
                for job_id, token, count, at in leased
            ],
            lease_until,
            worker,
        )
        return delivered, len(entries) == count

    def _requeue_unentried(self, jobs: Sequence[tuple[str, str]], now: float) -> None:
        """Give a stream entry to jobs leased by a hand-off (no entry) whose lease ran out or was released.

        The jobs share a queue tag (one transaction).
        """
        job_keys = [self.keys.job(job_id, q) for q, job_id in jobs]

        def body(tx: Transaction) -> None:
            tx.watch(*job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(self.keys.leases(q), job_id) for q, job_id in jobs]
                    + [r.hmget(k, "job", "entry", "deliveries", "token", "running") for k in job_keys]
                )
            )
            scores, fields = rows[: len(jobs)], rows[len(jobs) :]
            pipe = tx.multi()
            writes = self.layout.writes()
            for (q, job_id), score, (raw, entry, count, token, running) in zip(
                jobs, scores, fields, strict=True
            ):
                if score is None or score > now or entry or raw is None:
                    continue  # settled, extended or requeued since
                try:
                    job = parse_job(raw)
                except UNREADABLE as exc:
                    pipe.srem(self.keys.taken(q), job_id)
                    quarantine(self.store, pipe, q, job_id, raw, str(exc), now)
                    continue
                charge(pipe, self.keys.job(job_id, q), token, running)
                writes.unlease(q, job_id)
                writes.carry[job_id] = int(count) if count and count.isdigit() else 0
                pipe.srem(self.keys.taken(q), job_id)
                pipe.hdel(self.keys.job(job_id, q), "token", "worker", "lease_until")
                self.layout.place(pipe, writes, job, now, front=True)
                logger.info("lease_expired", job_id=job_id)
            writes.flush(pipe)

        self.store.transact(body, on=job_keys[0])

    def _claim(
        self, claims: Sequence[tuple[str, str, str, str]], now: float, lease_until: float, worker: str
    ) -> list[Delivery]:
        """Take over pending entries whose lease ran out (or was released), under WATCH on their jobs."""
        taken: list[Delivery] = []
        for group in self.store.by_tag(claims, lambda claim: claim[0]):
            taken += self._claim_group(group, now, lease_until, worker)
        return taken

    def _claim_group(
        self, claims: Sequence[tuple[str, str, str, str]], now: float, lease_until: float, worker: str
    ) -> list[Delivery]:
        job_keys = [self.keys.job(job_id, q) for q, job_id, _, _ in claims]

        def body(tx: Transaction) -> list[tuple[str, str, str, str, int]]:
            tx.watch(*job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(self.keys.leases(q), job_id) for q, job_id, _, _ in claims]
                    + [r.hmget(k, "entry", "token", "running") for k in job_keys]
                )
            )
            scores, entries = rows[: len(claims)], rows[len(claims) :]
            pipe = tx.multi()
            picked: list[tuple[str, str, str, str, int]] = []
            leases: dict[str, dict[str, float]] = {}
            for (q, job_id, stream, entry), score, (current, old, running) in zip(
                claims, scores, entries, strict=True
            ):
                if score is None or score > now or current != entry:
                    continue  # settled, extended or claimed since
                charge(pipe, self.keys.job(job_id, q), old, running)
                token = secrets.token_hex(8)
                pipe.xclaim(stream, GROUP, worker, 0, [entry], justid=True)
                at = self._lease_writes(pipe, leases, q, job_id, token, lease_until, worker)
                picked.append((q, job_id, entry, token, at))
            self._zadd_leases(pipe, leases)
            return picked

        # an entry whose band stream is gone (acknowledged and deleted, the band retired): XCLAIM answers
        # NOGROUP, and the lease is taken all the same; the job's record holds all it needs to run
        picked, results = self.store.transact(body, on=job_keys[0], tolerate=("NOGROUP",))
        return self._collect(
            [
                (q, job_id, token, results[at], results[at + 1], results[at + 2])
                for q, job_id, _, token, at in picked
            ],
            lease_until,
            worker,
        )

    def _collect(
        self,
        rows: Sequence[tuple[str, str, str, Any, str | None, str | None]],
        lease_until: float,
        worker: str,
    ) -> list[Delivery]:
        """Deliveries from (queue, job id, token, delivery count, payload, crashes); bad ones quarantined."""
        out: list[Delivery] = []
        bad: list[tuple[str, str, str | None, str]] = []
        for queue, job_id, token, count, raw, crashes in rows:
            try:
                job = parse_job(raw)
            except UNREADABLE as exc:
                bad.append((queue, job_id, raw, str(exc)))
                continue
            out.append(
                Delivery(
                    job=job,
                    token=token,
                    lease_until=lease_until,
                    worker=worker,
                    delivery_count=int(count),
                    crashes=int(crashes or 0),
                )
            )
        if bad:
            self._quarantine_jobs(bad)
        return out

    def _quarantine_jobs(self, bad: Sequence[tuple[str, str, str | None, str]]) -> None:
        """Ack and delete the entries of unreadable jobs; file them in the failed queue, text kept."""
        rows = self.store.pipeline()
        for queue, job_id, _, _ in bad:
            rows.hmget(self.keys.job(job_id, queue), "stream", "entry")
        now = self.store.now()
        found = list(zip(bad, rows.execute(), strict=True))
        for group in self.store.by_tag(found, lambda item: item[0][0]):

            def writes(pipe: Pipe, group: list[Any] = group) -> None:
                for (queue, job_id, raw, reason), (stream, entry) in group:
                    if stream and entry:
                        pipe.xack(stream, GROUP, entry)
                        pipe.xdel(stream, entry)
                    quarantine(self.store, pipe, queue, job_id, raw, reason, now)

            self.store.multi(self.keys.failed_in(group[0][0][0]), writes)
