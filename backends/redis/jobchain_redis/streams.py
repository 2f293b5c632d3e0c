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
import secrets
import time
from collections.abc import Sequence
from typing import Any, Unpack

import redis
import redis.cluster
import structlog

from jobchain.capabilities import FailedQueue, Stats, WorkerRegistry
from jobchain.ids import new_id
from jobchain.model import Delivery, Job, JobState, QueueStats
from jobchain_redis.codec import decodable, dumps, to_bytes
from jobchain_redis.common import COUNT_TOLERATE, UNREADABLE, RedisBackend, RedisOptions, Writes, parse_job
from jobchain_redis.connection import Pipe, Transaction, boundary, number_option, wrong_type
from jobchain_redis.keys import Keys

__all__ = ["GROUP", "StreamsBackend"]

logger = structlog.get_logger("jobchain.redis.streams")

#: the one consumer group of every band stream
GROUP = "jobchain"
#: how many wake-ups a queue's wake stream keeps
_WAKES = 16
#: how many due delayed jobs one pass promotes per queue
_PROMOTE_BATCH = 200
#: job states in which a new stream entry is the job's to deliver (None: a hash that is gone or
#: unreadable, which the reservation files as failed); any other state makes the entry a duplicate
_WAITING = (JobState.QUEUED.value, None)

#: bands looked at beyond ``limit`` (bands whose entries are all in flight yield nothing)
_EXTRA_BANDS = 8


class _Writes(Writes):
    """Bands a transaction added entries to (indexed, group created once) and queues to wake.

    ``grouped`` is the backend's memory of the band streams it created the
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


def _readable(fields: dict[str, str]) -> bool:
    """False for a stream entry holding bytes that are not UTF-8 (in a field's name or value)."""
    return all(decodable(k) and decodable(v) for k, v in fields.items())


def _entry_order(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


class StreamsBackend(RedisBackend, FailedQueue, WorkerRegistry, Stats):
    """Jobs in Redis streams and hashes; see the module docstring for the layout and transitions."""

    scheme = "redis-streams"
    default_band_width = 0.1
    settle_fields = ("stream", "entry")
    tolerate = ("BUSYGROUP",)

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        orphan_idle: float = 30.0,
        **options: Unpack[RedisOptions],
    ) -> None:
        super().__init__(client, **options)
        #: seconds an entry read by a reserver that died before leasing it waits for the orphan sweep
        self.orphan_idle = float(orphan_idle)
        self._swept = time.monotonic()
        self._grouped: set[str] = set()

    @classmethod
    def _url_options(cls, own: dict[str, str]) -> dict[str, Any]:
        idle = number_option(own, "orphan_idle", 30.0, "seconds", zero=True)
        return {**super()._url_options(own), "orphan_idle": idle}

    # --- placing ---------------------------------------------------------------------

    def _writes(self) -> _Writes:
        return _Writes(self.keys, self._grouped)

    def _place(self, pipe: Pipe, writes: Writes, job: Job, now: float, *, front: bool) -> None:
        """Store the payload and append the job to its band's stream, or to the delayed set.

        ``front`` cannot be honoured by a stream: a job going back appends to its
        band, which keeps its place to within one band width.
        """
        assert isinstance(writes, _Writes)
        fields: dict[str, str] = {"job": dumps(job.to_wire()), "queue": job.queue}
        if job.not_before is not None and job.not_before > now:
            pipe.zadd(self.keys.delayed(job.queue), {job.id: job.not_before})
            writes.seen.add(job.queue)
            fields["state"] = JobState.DELAYED.value
        else:
            band = self._band(job)
            entry = {"id": job.id}
            if writes.carry.get(job.id):
                entry["d"] = str(writes.carry[job.id])
            pipe.xadd(self.keys.stream(job.queue, band), entry)
            writes.bands.setdefault(job.queue, {})[str(band)] = band
            fields["state"] = JobState.QUEUED.value
        pipe.hset(self.keys.job(job.id, job.queue), mapping=fields)

    def _unlease(
        self, pipe: Pipe, writes: Writes, job: Job, worker: str, row: dict[str, str | None], *, done: bool
    ) -> list[str]:
        assert isinstance(writes, _Writes)
        if not done:
            return ["token", "worker", "lease_until"]  # the release marks the entry with lease 0
        writes.unlease(job.queue, job.id)
        stream, entry = row.get("stream"), row.get("entry")
        if stream and entry:
            writes.ack(stream, entry)
        else:
            pipe.srem(self.keys.taken(job.queue), job.id)  # a handed-off job: it had no entry
        return ["token", "worker", "lease_until", "stream", "entry", "band"]

    def _hold(self, pipe: Pipe, job: Job, worker: str) -> None:
        # a handed-off job has no entry: counted apart so that stats see it (in flight, or ready once
        # its lease has run out and until it gets an entry)
        pipe.sadd(self.keys.taken(job.queue), job.id)

    def _refresh(self, pipe: Pipe, delivery: Delivery, row: dict[str, str | None]) -> None:
        # XCLAIM to its holder resets the entry's idle time: the orphan sweep (XAUTOCLAIM of entries
        # idle past orphan_idle) never takes the entry of a long job whose lease is kept fresh
        stream, entry = row.get("stream"), row.get("entry")
        if stream and entry and decodable(stream) and decodable(entry):
            pipe.xclaim(stream, GROUP, delivery.worker, 0, [entry], justid=True)

    def _release(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        # the entry stays pending in the group; a lease of 0 marks it for claiming at once
        pipe.zadd(self.keys.leases(job.queue), {job.id: 0})

    def _held_by(self, queues: Sequence[str], worker: str) -> list[tuple[str, str]]:
        """The jobs of the entries pending for consumer ``worker`` in every band of ``queues``."""
        streams = [
            (q, self.keys.stream(q, int(b)))
            for q in queues
            for b in self.client.zrange(self.keys.bands(q), 0, -1)
        ]
        pending = self.client.pipeline(transaction=False)
        for _, stream in streams:
            pending.xpending_range(stream, GROUP, min="-", max="+", count=10_000, consumername=worker)
        replies = pending.execute(raise_on_error=False)
        reader = self.client.pipeline(transaction=False)
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

    # --- reserve ---------------------------------------------------------------------

    @boundary
    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.eviction.ensure(self.client)
        self._resume_once(queues, worker)
        deadline = time.monotonic() + wait
        # XREAD takes keys of one slot: on a Cluster, the queues' wake streams are waited on a tag at a time
        groups = self._by_tag(queues, lambda q: q)
        turn = 0
        while True:
            self._sweep_outboxes(queues)
            taken, wakes = self._reserve_once(queues, limit, lease, worker)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            # wake at the next job made ready, or soon anyway for delayed jobs and lost leases
            group = groups[turn % len(groups)]
            turn += 1
            block = int(self._wait_slice(len(groups), remaining) * 1000)
            self.client.xread(
                {self.keys.wake(q): wakes.get(self.keys.wake(q), "$") for q in group}, count=1, block=block
            )

    def _reserve_once(
        self, queues: Sequence[str], limit: int, lease: float, worker: str, *, again: bool = True
    ) -> tuple[list[Delivery], dict[str, str]]:
        keys = self.keys
        now = self.now()
        if time.monotonic() - self._swept >= self.orphan_idle:
            self._swept = time.monotonic()
            self._sweep_orphans(queues, worker)

        def read_index(queues: Sequence[str]) -> tuple[list[str], list[Any]]:
            pipe = self.client.pipeline(transaction=False)
            for q in queues:
                pipe.zrangebyscore(keys.delayed(q), "-inf", now, start=0, num=1)
                pipe.zrangebyscore(keys.leases(q), "-inf", now, start=0, num=limit)
                pipe.zrange(keys.fresh(q), 0, limit + _EXTRA_BANDS - 1, withscores=True)
                pipe.xrevrange(keys.wake(q), count=1)
            return self._per_queue(  # a queue with a key of the wrong type is left out for a while
                queues,
                pipe.execute(raise_on_error=False),
                lambda q: (keys.delayed(q), keys.leases(q), keys.fresh(q), keys.wake(q)),
                "reserve",
            )

        queues, found = read_index(self._open_queues(queues))
        due = [q for q, hit in zip(queues, found[0::4], strict=True) if hit]
        for q in due:
            self._guarded(q, "promote", functools.partial(self._promote_delayed, q, now))
        if due:
            queues, found = read_index(self._open_queues(queues))
        wakes = {
            keys.wake(q): (last[0][0] if last else "0-0") for q, last in zip(queues, found[3::4], strict=True)
        }
        # (band, 0 = claim again / 1 = new entries, entry order, queue, job id or "", stream, entry)
        plan: list[tuple[int, int, tuple[int, int], str, str, str, str]] = []
        expired = [(q, j) for q, ids in zip(queues, found[1::4], strict=True) for j in ids]
        if expired:
            pipe = self.client.pipeline(transaction=False)
            for q, job_id in expired:
                pipe.hmget(keys.job(job_id, q), "stream", "entry", "band")
            unentried: list[tuple[str, str]] = []
            for (q, job_id), row in zip(expired, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(row, Exception):
                    if wrong_type(row) is None:
                        raise row
                    # its hash is of another type: out of the leases (its entry, once the orphan sweep
                    # finds it, is dropped by _adopt)
                    self._multi(
                        keys.leases(q), functools.partial(self._park, queue=q, job_id=job_id, now=now)
                    )
                    continue
                stream, entry, band = row
                if stream and entry and band is not None and all(map(decodable, (stream, entry, band))):
                    plan.append((int(band), 0, _entry_order(entry), q, job_id, stream, entry))
                else:
                    unentried.append((q, job_id))
            if unentried and again:  # handed-off steps with no entry get one now; read the index again
                for group in self._by_tag(unentried, lambda item: item[0]):
                    self._requeue_unentried(group, now)
                return self._reserve_once(queues, limit, lease, worker, again=False)
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
            taken += self._guarded(q, "reserve", read, key=stream) or []
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
        """``XREADGROUP`` up to ``count`` new entries of one band, then lease them in one MULTI/EXEC."""
        stream = self.keys.stream(queue, band)
        try:
            reply = self.client.xreadgroup(GROUP, worker, {stream: ">"}, count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            reply = self._read_after_nogroup(stream, worker, count)
        entries: list[tuple[str, dict[str, str]]] = reply[0][1] if reply else []
        if len(entries) < count:
            self._retire_band(queue, band)
        if not entries:
            return []
        ids = list(dict.fromkeys(f["id"] for _, f in entries if f.get("id") and _readable(f)))
        job_keys = [self.keys.job(j, queue) for j in ids]

        def body(tx: Transaction) -> list[tuple[str, str, int, int]]:
            # under WATCH: an entry whose job is not waiting to be delivered (already leased through
            # another entry, or finished) is a duplicate, e.g. of a submit re-sent after a lost reply
            tx.watch(*job_keys)
            rows = (
                tx.read(lambda r: [r.hmget(k, "state", "token") for k in job_keys], tolerant=True)
                if ids
                else []
            )
            for row in rows:
                if isinstance(row, Exception) and wrong_type(row) is None:
                    raise row
            # a job hash of another type: its entry is dropped and the job filed as failed, its key untouched
            wrong = {j for j, row in zip(ids, rows, strict=True) if isinstance(row, Exception)}
            rows = [(None, None) if isinstance(row, Exception) else row for row in rows]
            waiting = {
                j for j, (state, token) in zip(ids, rows, strict=True) if token is None and state in _WAITING
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
                if not job_id or not _readable(fields):
                    reason = "stream entry is not valid UTF-8" if job_id else "stream entry has no job id"
                    self._discard_entry(pipe, queue, stream, entry, dumps(fields), reason)
                    continue
                if job_id in wrong:
                    pipe.xack(stream, GROUP, entry)
                    pipe.xdel(stream, entry)
                    self._park(pipe, queue, job_id, self.now())
                    wrong.discard(job_id)
                    continue
                if job_id not in waiting and job_id not in garbled:
                    logger.warning("duplicate_entry_dropped", job_id=job_id, stream=stream, entry=entry)
                    pipe.xack(stream, GROUP, entry)
                    pipe.xdel(stream, entry)
                    continue
                waiting.discard(job_id)  # a second entry of it in this batch is a duplicate too
                garbled.discard(job_id)
                token = secrets.token_hex(8)
                where: dict[str, str | int] = {"stream": stream, "entry": entry, "band": band}
                count = 1 + int(fields.get("d") or 0)
                self._lease_writes(pipe, leases, queue, job_id, token, lease_until, worker, where, count)
                leased.append((job_id, token, count, len(pipe.command_stack) - 2))
            self._zadd_leases(pipe, leases)
            return leased

        leased, results = self._transact(body, on=stream)
        return self._collect(
            [
                (queue, job_id, token, count, results[at], results[at + 1])
                for job_id, token, count, at in leased
            ],
            lease_until,
            worker,
        )

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
            writes = self._writes()
            for (q, job_id), score, (raw, entry, count, token, running) in zip(
                jobs, scores, fields, strict=True
            ):
                if score is None or score > now or entry or raw is None:
                    continue  # settled, extended or requeued since
                try:
                    job = parse_job(raw)
                except UNREADABLE as exc:
                    pipe.srem(self.keys.taken(q), job_id)
                    self._quarantine(pipe, q, job_id, raw, str(exc), now)
                    continue
                self._charge(pipe, self.keys.job(job_id, q), token, running)
                writes.unlease(q, job_id)
                writes.carry[job_id] = int(count) if count and count.isdigit() else 0
                pipe.srem(self.keys.taken(q), job_id)
                pipe.hdel(self.keys.job(job_id, q), "token", "worker", "lease_until")
                self._place(pipe, writes, job, now, front=True)
                logger.info("lease_expired", job_id=job_id)
            writes.flush(pipe)

        self._transact(body, on=job_keys[0])

    def _ready_index(self, queue: str) -> str:
        return self.keys.fresh(queue)

    def _read_after_nogroup(self, stream: str, worker: str, count: int) -> Any:
        """The band stream has no group: it was deleted and recreated by an XADD, or is gone."""
        if not self.client.exists(stream):
            return []
        try:
            self.client.xgroup_create(stream, GROUP, id="0")
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(stream)
        return self.client.xreadgroup(GROUP, worker, {stream: ">"}, count=count)

    def _claim(
        self, claims: Sequence[tuple[str, str, str, str]], now: float, lease_until: float, worker: str
    ) -> list[Delivery]:
        """Take over pending entries whose lease ran out (or was released), under WATCH on their jobs."""
        taken: list[Delivery] = []
        for group in self._by_tag(claims, lambda claim: claim[0]):
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
                self._charge(pipe, self.keys.job(job_id, q), old, running)
                token = secrets.token_hex(8)
                pipe.xclaim(stream, GROUP, worker, 0, [entry], justid=True)
                at = self._lease_writes(pipe, leases, q, job_id, token, lease_until, worker)
                picked.append((q, job_id, entry, token, at))
            self._zadd_leases(pipe, leases)
            return picked

        picked, results = self._transact(body, on=job_keys[0])
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
        rows = self.client.pipeline(transaction=False)
        for queue, job_id, _, _ in bad:
            rows.hmget(self.keys.job(job_id, queue), "stream", "entry")
        now = self.now()
        found = list(zip(bad, rows.execute(), strict=True))
        for group in self._by_tag(found, lambda item: item[0][0]):

            def writes(pipe: Pipe, group: list[Any] = group) -> None:
                for (queue, job_id, raw, reason), (stream, entry) in group:
                    if stream and entry:
                        pipe.xack(stream, GROUP, entry)
                        pipe.xdel(stream, entry)
                    self._quarantine(pipe, queue, job_id, raw, reason, now)

            self._multi(self.keys.failed_in(group[0][0][0]), writes)

    def _discard_entry(self, pipe: Pipe, queue: str, stream: str, entry: str, raw: str, reason: str) -> None:
        """Ack and delete a stream entry that names no job; file it in the failed queue under a new id."""
        pipe.xack(stream, GROUP, entry)
        pipe.xdel(stream, entry)
        self._quarantine(pipe, queue, new_id(), raw, f"{reason} (entry {entry} of {stream})", self.now())

    def _retire_band(self, queue: str, band: int) -> None:
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
            if last and _entry_order(last[0][0]) > _entry_order(delivered):
                return
            pipe = tx.multi()
            pipe.zrem(self.keys.fresh(queue), str(band))
            if length == 0:
                pipe.delete(stream)
                pipe.zrem(self.keys.bands(queue), str(band))

        self._transact(body, on=stream)

    def _drop_empty_bands(self, queue: str) -> None:
        """Delete the band streams of ``queue`` that were retired and have no entries left."""
        bands = self.client.zrange(self.keys.bands(queue), 0, -1)
        fresh = set(self.client.zrange(self.keys.fresh(queue), 0, -1))
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

            self._transact(body, on=stream)

    def _promote_delayed(self, queue: str, now: float) -> None:
        """Move due delayed jobs to their bands: ZREM and XADD in one MULTI/EXEC under WATCH."""
        delayed = self.keys.delayed(queue)

        def body(tx: Transaction) -> None:
            tx.watch(delayed)
            [due] = tx.read(lambda r: r.zrangebyscore(delayed, "-inf", now, start=0, num=_PROMOTE_BATCH))
            if not due:
                return
            junk = [j for j in due if not decodable(j)]
            due = [j for j in due if decodable(j)]
            raws = tx.read(lambda r: [r.hget(self.keys.job(j, queue), "job") for j in due]) if due else []
            pipe = tx.multi()
            writes = self._writes()
            pipe.zrem(delayed, *due, *map(to_bytes, junk))
            for j in junk:
                self._quarantine(pipe, queue, new_id(), j, f"a member of {delayed} is not valid UTF-8", now)
            for job_id, raw in zip(due, raws, strict=True):
                if raw is None:
                    continue  # gone since (purged)
                try:
                    job = parse_job(raw)
                except UNREADABLE as exc:
                    self._quarantine(pipe, queue, job_id, raw, str(exc), now)
                    continue
                self._place(pipe, writes, job, now, front=True)
            writes.flush(pipe)

        self._transact(body, on=delayed)

    def _sweep_orphans(self, queues: Sequence[str], worker: str) -> None:
        """Mark pending entries that no lease covers (their reserver died before leasing) for claiming."""
        for queue in self._open_queues(queues):
            self._guarded(queue, "orphan sweep", functools.partial(self._sweep_queue, queue, worker))

    def _sweep_queue(self, queue: str, worker: str) -> None:
        idle_ms = int(self.orphan_idle * 1000)
        for name in self.client.zrange(self.keys.bands(queue), 0, -1):
            stream = self.keys.stream(queue, int(name))
            try:
                reply = self.client.xautoclaim(stream, GROUP, worker, idle_ms, "0-0", count=100)
            except redis.ResponseError:
                continue
            entries = reply[1] if reply and isinstance(reply[1], list) else []
            for entry, fields in entries:
                self._adopt(queue, int(name), stream, entry, fields or {})
        self._drop_empty_bands(queue)

    def _adopt(self, queue: str, band: int, stream: str, entry: str, fields: dict[str, str]) -> None:
        job_id = fields.get("id")
        if not job_id or not _readable(fields):
            reason = "stream entry is not valid UTF-8" if job_id else "stream entry has no job id"
            self._multi(
                stream, lambda pipe: self._discard_entry(pipe, queue, stream, entry, dumps(fields), reason)
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
                self._park(pipe, queue, job_id, self.now())
                return
            current, state, token = row
            if current == entry:
                return  # leased, or already marked
            pipe = tx.multi()
            if state != JobState.QUEUED.value or token is not None:
                # the job is leased through another entry, finished, delayed or gone: a duplicate entry
                logger.warning("duplicate_entry_dropped", job_id=job_id, stream=stream, entry=entry)
                pipe.xack(stream, GROUP, entry)
                pipe.xdel(stream, entry)
                return
            logger.info("orphan_entry_adopted", job_id=job_id, stream=stream, entry=entry)
            pipe.hset(key, mapping={"stream": stream, "entry": entry, "band": band})
            pipe.zadd(self.keys.leases(queue), {job_id: 0})

        self._transact(body, on=key)

    # --- inspection ------------------------------------------------------------------

    @boundary
    def stats(self) -> list[QueueStats]:
        queues = sorted(self.client.smembers(self.keys.queues))
        if not queues:
            return []
        now = self.now()
        for q in queues:
            self._guarded(q, "promote", functools.partial(self._promote_delayed, q, now))
        reader = self.client.pipeline(transaction=False)
        for q in queues:
            reader.zrange(self.keys.bands(q), 0, -1)
        bands: list[list[str]] = reader.execute()
        counted: dict[str, QueueStats] = {}
        for group in self._by_tag(zip(queues, bands, strict=True), lambda item: item[0]):
            counted.update(self._count(group, now))
        return [counted[q] for q in queues]

    def _count(self, queues: Sequence[tuple[str, list[str]]], now: float) -> dict[str, QueueStats]:
        """The counts of queues of one tag (with their bands), from one MULTI/EXEC."""

        # ready: every entry (undelivered, released, lease run out, or read by a reserver that died)
        # but those under a live lease, plus handed-off jobs (no entry) whose lease ran out
        def writes(pipe: Pipe) -> None:
            for q, names in queues:
                for band in names:
                    pipe.xlen(self.keys.stream(q, int(band)))
                pipe.zcard(self.keys.delayed(q))
                pipe.zcount(self.keys.leases(q), f"({now!r}", "+inf")
                pipe.scard(self.keys.taken(q))
                pipe.zcard(self.keys.failed_in(q))
                pipe.hlen(self.keys.outbox(q))

        tolerate = self.tolerate + COUNT_TOLERATE  # a key of the wrong type is counted empty
        results = self.route.transact(
            self.keys.leases(queues[0][0]), lambda tx: writes(tx.multi()), tolerate=tolerate
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
