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

import functools
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis
import structlog

from jobchain.capabilities import FailedQueue, Stats, WorkerRegistry
from jobchain.ids import new_id
from jobchain.model import (
    Delivery,
    Job,
    JobState,
    QueueStats,
)
from jobchain_redis.codec import decodable, dumps, to_bytes
from jobchain_redis.common import COUNT_TOLERATE, UNREADABLE, RedisBackend, Writes, parse_job
from jobchain_redis.connection import Pipe, Transaction, boundary, wrong_type
from jobchain_redis.keys import Keys

__all__ = ["ListsBackend"]

logger = structlog.get_logger("jobchain.redis.lists")

#: how many wake-up tokens a queue's signal list keeps at most
_SIGNALS = 64
#: how many due delayed jobs or expired leases one pass moves per queue
_PROMOTE_BATCH = 200


class _Writes(Writes):
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


class ListsBackend(RedisBackend, FailedQueue, WorkerRegistry, Stats):
    """Jobs in Redis lists and hashes; see the module docstring for the layout and transitions."""

    scheme = "redis-lists"
    default_band_width = 0.01
    settle_fields = ("worker",)

    # --- helpers ---------------------------------------------------------------------

    def _push_ready(self, pipe: Pipe, writes: _Writes, job: Job, *, front: bool) -> None:
        band = self._band(job)
        key = self.keys.ready(job.queue, band)
        if front:
            pipe.lpush(key, job.id)
        else:
            pipe.rpush(key, job.id)
        writes.bands.setdefault(job.queue, {})[str(band)] = band
        writes.ready[job.queue] = writes.ready.get(job.queue, 0) + 1

    def _place(self, pipe: Pipe, writes: Writes, job: Job, now: float, *, front: bool) -> None:
        """Store the job's payload and make it ready, or delayed until ``not_before``."""
        fields: dict[str, str] = {"job": dumps(job.to_wire()), "queue": job.queue}
        if job.not_before is not None and job.not_before > now:
            pipe.zadd(self.keys.delayed(job.queue), {job.id: job.not_before})
            writes.seen.add(job.queue)
            fields["state"] = JobState.DELAYED.value
        else:
            assert isinstance(writes, _Writes)
            self._push_ready(pipe, writes, job, front=front)
            fields["state"] = JobState.QUEUED.value
        pipe.hset(self.keys.job(job.id, job.queue), mapping=fields)

    def _writes(self) -> _Writes:
        return _Writes(self.keys)

    def _release(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        assert isinstance(writes, _Writes)
        self._push_ready(pipe, writes, job, front=True)

    def _unlease(
        self, pipe: Pipe, writes: Writes, job: Job, worker: str, row: dict[str, str | None], *, done: bool
    ) -> list[str]:
        writes.unlease(job.queue, job.id)
        pipe.lrem(self.keys.processing(worker, job.queue), 1, job.id)
        return ["token", "worker", "lease_until"]

    def _hold(self, pipe: Pipe, job: Job, worker: str) -> None:
        pipe.rpush(self.keys.processing(worker, job.queue), job.id)

    def _held_by(self, queues: Sequence[str], worker: str) -> list[tuple[str, str]]:
        lists = {self.keys.processing(worker, q): q for q in reversed(queues)}  # one per tag
        pipe = self.client.pipeline(transaction=False)
        for key in lists:
            pipe.lrange(key, 0, -1)
        held = [
            (q, j) for q, ids in zip(lists.values(), pipe.execute(), strict=True) for j in ids if decodable(j)
        ]
        return list(dict.fromkeys(held))

    # --- jobs ------------------------------------------------------------------------

    @boundary
    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.eviction.ensure(self.client)
        self._resume_once(queues, worker)
        deadline = time.monotonic() + wait
        # BLPOP takes keys of one slot: on a Cluster, the queues' signals are waited on a tag at a time
        signals = [[self.keys.signal(q) for q in group] for group in self._by_tag(queues, lambda q: q)]
        turn = 0
        while True:
            self._sweep_outboxes(queues)
            taken = self._reserve_once(queues, limit, lease, worker)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            # wake at the next enqueue, or soon anyway for delayed jobs and lost leases
            self.client.blpop(signals[turn % len(signals)], timeout=self._wait_slice(len(signals), remaining))
            turn += 1

    def _reserve_once(self, queues: Sequence[str], limit: int, lease: float, worker: str) -> list[Delivery]:
        for _ in range(50):
            now = self.now()
            candidates = self._scan(queues, limit, now)
            if not candidates:
                return []
            taken = self._take(candidates, limit, now + lease, worker)
            if taken is not None:
                return taken
        return []

    def _scan(self, queues: Sequence[str], limit: int, now: float) -> list[tuple[float, str, str]]:
        """Promote due jobs and lost leases, then list the most urgent bands, most urgent first.

        A queue one of whose keys holds the wrong type is left out for a while (see ``_guarded``).
        """
        keys = self.keys

        def read_index(queues: Sequence[str]) -> tuple[list[str], list[Any]]:
            pipe = self.client.pipeline(transaction=False)
            for q in queues:
                pipe.zrangebyscore(keys.delayed(q), "-inf", now, start=0, num=1)
                pipe.zrangebyscore(keys.leases(q), "-inf", now, start=0, num=1)
                pipe.zrange(keys.bands(q), 0, limit - 1, withscores=True)
            return self._per_queue(
                queues,
                pipe.execute(raise_on_error=False),
                lambda q: (keys.delayed(q), keys.leases(q), keys.bands(q)),
                "reserve",
            )

        queues, found = read_index(self._open_queues(queues))
        if any(found[i] or found[i + 1] for i in range(0, len(found), 3)):
            self._promote(queues, now)
            queues, found = read_index(self._open_queues(queues))
        ranked = sorted(
            (score, q, band) for q, index in zip(queues, found[2::3], strict=True) for band, score in index
        )
        if self.keys.spread and ranked:  # one transaction takes them: the most urgent band's tag only
            tag = self.keys.queue_tag(ranked[0][1])
            ranked = [c for c in ranked if self.keys.queue_tag(c[1]) == tag]
        return ranked[:limit]

    def _take(
        self, candidates: Sequence[tuple[float, str, str]], limit: int, lease_until: float, worker: str
    ) -> list[Delivery] | None:
        """Move the heads of the bands into the worker's processing list and lease them, in one MULTI/EXEC.

        The band lists are WATCHed while their heads are read, so the ids moved are
        the ids read; a reserver racing for the same band makes EXEC fail and this
        one reads again. Returns None when every candidate band was empty.
        """
        keys = self.keys
        processing = keys.processing(worker, candidates[0][1])
        ready_keys = [keys.ready(q, int(band)) for _, q, band in candidates]
        filed: list[str] = []  # ready entries that were not valid UTF-8, filed as failed

        def body(tx: Transaction) -> tuple[list[tuple[str, str, str, str, int]], list[tuple[str, str]]]:
            tx.watch(*ready_keys)
            heads = tx.read(lambda r: [r.lrange(k, 0, limit - 1) for k in ready_keys])
            # (queue, band, its list, the ids taken, whether they are the whole list)
            taking: list[tuple[str, str, str, list[str], bool]] = []
            empty: list[tuple[str, str]] = []
            count = 0
            for (_, queue, band), key, ids in zip(candidates, ready_keys, heads, strict=True):
                if not ids:
                    empty.append((queue, band))
                    continue
                took = ids[: limit - count]
                taking.append((queue, band, key, took, len(took) == len(ids) < limit))
                count += len(took)
                if count >= limit:
                    break
            if not taking:
                return [], empty
            pipe = tx.multi()
            picked: list[tuple[str, str, str, str, int]] = []
            leases: dict[str, dict[str, float]] = {}
            seen: set[str] = set()
            filed.clear()
            for queue, band, key, heads, whole in taking:
                # the heads read under WATCH are the heads now: cut them off and append them to processing;
                # an id twice among them (a duplicate push) is leased once
                ids = [j for j in dict.fromkeys(heads) if j not in seen]
                seen.update(ids)
                pipe.ltrim(key, len(heads), -1)
                for junk in [j for j in ids if not decodable(j)]:  # cut off with the others, filed apart
                    ids.remove(junk)
                    filed.append(junk)
                    reason = f"a ready entry of {key} is not valid UTF-8"
                    self._quarantine(pipe, queue, new_id(), junk, reason, self.now())
                if ids:
                    pipe.rpush(processing, *ids)
                if whole:  # the band is empty now
                    pipe.zrem(keys.bands(queue), band)
                for job_id in ids:
                    token = secrets.token_hex(8)
                    job_key = keys.job(job_id, queue)
                    pipe.hset(
                        job_key,
                        mapping={
                            "state": JobState.RUNNING.value,
                            "token": token,
                            "worker": worker,
                            "lease_until": repr(lease_until),
                        },
                    )
                    picked.append((queue, key, job_id, token, len(pipe.command_stack)))
                    pipe.hincrby(job_key, "deliveries", 1)
                    pipe.hget(job_key, "job")
                    pipe.hget(job_key, "crashes")
                    leases.setdefault(queue, {})[job_id] = lease_until
            for queue, mapping in leases.items():
                pipe.zadd(keys.leases(queue), mapping)
            return picked, empty

        try:
            # WRONGTYPE tolerated in the EXEC's results: a job hash of another type is found there
            (picked, empty), results = self.route.transact(ready_keys[0], body, tolerate=COUNT_TOLERATE)
        except redis.ResponseError as exc:  # a band list of another type, met by the reads under WATCH
            key = wrong_type(exc)
            if key is None:
                raise
            by_key = {k: q for (_, q, _), k in zip(candidates, ready_keys, strict=True)}
            self._block(by_key.get(key, candidates[0][1]), key, "reserve")
            return None
        stray = [r for r in results if isinstance(r, redis.ResponseError)]
        bad_hashes = {
            (queue, job_id)
            for queue, _, job_id, _, at in picked
            if isinstance(results[at], redis.ResponseError) and wrong_type(results[at]) is not None
        }
        if len(stray) > 3 * len(bad_hashes):  # an error on another key than a job hash: as before, raised
            raise stray[0]
        if bad_hashes:
            self._park_all(sorted(bad_hashes), worker)
            picked = [row for row in picked if (row[0], row[2]) not in bad_hashes]
        if empty:
            self._drop_empty_bands(empty)
        if not picked:
            return None if empty or filed else []
        out: list[Delivery] = []
        bad: list[tuple[str, str, str | None, str]] = []
        for queue, _, job_id, token, at in picked:
            count, raw, crashes = results[at], results[at + 1], results[at + 2]
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
                    delivery_count=count,
                    crashes=int(crashes or 0),
                )
            )
        if bad:
            self._quarantine_all(bad, worker)
        return out

    def _drop_empty_bands(self, bands: Sequence[tuple[str, str]]) -> None:
        """Remove bands from the index whose lists are empty (WATCH: a push meanwhile keeps them)."""
        for queue, band in bands:
            ready = self.keys.ready(queue, int(band))

            def body(tx: Transaction, ready: str = ready, queue: str = queue, band: str = band) -> None:
                tx.watch(ready)
                if tx.read(lambda r: r.llen(ready))[0] == 0:
                    tx.multi().zrem(self.keys.bands(queue), band)

            self._transact(body, on=ready)

    def _park_all(self, jobs: Sequence[tuple[str, str]], worker: str) -> None:
        """Take jobs whose hash is of the wrong type out of the worker's hands, into the failed queue.

        The reservation moved them with the others (MULTI has no rollback); this
        undoes it for them in one MULTI per tag, leaving their keys untouched.
        """
        now = self.now()
        for group in self._by_tag(jobs, lambda item: item[0]):

            def writes(pipe: Pipe, group: list[tuple[str, str]] = group) -> None:
                for queue, job_id in group:
                    pipe.lrem(self.keys.processing(worker, queue), 1, job_id)
                    self._park(pipe, queue, job_id, now)

            self._multi(self.keys.failed_in(group[0][0]), writes)

    def _quarantine_all(self, bad: Sequence[tuple[str, str, str | None, str]], worker: str) -> None:
        """File unreadable jobs in the failed queue with their stored text (see ``_quarantine``)."""
        now = self.now()
        for group in self._by_tag(bad, lambda item: item[0]):

            def writes(pipe: Pipe, group: list[tuple[str, str, str | None, str]] = group) -> None:
                for queue, job_id, raw, reason in group:
                    pipe.lrem(self.keys.processing(worker, queue), 1, job_id)
                    self._quarantine(pipe, queue, job_id, raw, reason, now)

            self._multi(self.keys.failed_in(group[0][0]), writes)

    def _promote(self, queues: Sequence[str], now: float) -> None:
        """Move due delayed jobs and jobs whose lease ran out back to the head of their bands."""
        for queue in queues:
            self._guarded(queue, "promote", functools.partial(self._promote_delayed, queue, now))
            self._guarded(queue, "promote", functools.partial(self._expire_leases, queue, now))

    def _promote_delayed(self, queue: str, now: float) -> None:
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
            writes = _Writes(self.keys)
            pipe.zrem(delayed, *due, *map(to_bytes, junk))
            for j in junk:
                self._quarantine(pipe, queue, new_id(), j, f"a member of {delayed} is not valid UTF-8", now)
            jobs: list[Job] = []
            for job_id, raw in zip(due, raws, strict=True):
                if raw is None:
                    continue  # gone since (purged)
                try:
                    jobs.append(parse_job(raw))
                except UNREADABLE as exc:
                    self._quarantine(pipe, queue, job_id, raw, str(exc), now)
            for job in sorted(jobs, key=lambda j: (self._band(j), j.id), reverse=True):
                self._push_ready(pipe, writes, job, front=True)
                pipe.hset(self.keys.job(job.id, queue), "state", JobState.QUEUED.value)
            writes.flush(pipe)

        self._transact(body, on=delayed)

    def _expire_leases(self, queue: str, now: float) -> None:
        leases = self.keys.leases(queue)
        [expired] = (
            self.client.pipeline(transaction=False)
            .zrangebyscore(leases, "-inf", now, start=0, num=_PROMOTE_BATCH)
            .execute()
        )
        junk = [j for j in expired if not decodable(j)]
        if junk:
            self._multi(leases, lambda pipe: pipe.zrem(leases, *map(to_bytes, junk)))
            logger.error("lease_entries_unreadable", key=leases, count=len(junk))
            expired = [j for j in expired if decodable(j)]
        if not expired:
            return
        job_keys = [self.keys.job(j, queue) for j in expired]

        def body(tx: Transaction) -> None:
            tx.watch(leases, *job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(leases, j) for j in expired]
                    + [r.hmget(k, "job", "worker", "token", "running") for k in job_keys]
                ),
                tolerant=True,
            )
            scores, fields = rows[: len(expired)], rows[len(expired) :]
            for row in scores:
                if isinstance(row, Exception):
                    raise row
            pipe = tx.multi()
            writes = _Writes(self.keys)
            back: list[tuple[Job, str]] = []
            for job_id, score, row in zip(expired, scores, fields, strict=True):
                if isinstance(row, Exception):
                    if wrong_type(row) is None:
                        raise row
                    self._park(pipe, queue, job_id, now)  # its hash is of another type: out of the leases
                    continue
                raw, worker, token, running = row
                if score is None or score > now or raw is None:
                    continue  # settled or extended since
                worker = worker if worker and decodable(worker) else ""
                try:
                    job = parse_job(raw)
                except UNREADABLE as exc:
                    if worker:
                        pipe.lrem(self.keys.processing(worker, queue), 1, job_id)
                    self._quarantine(pipe, queue, job_id, raw, str(exc), now)
                    continue
                self._charge(pipe, self.keys.job(job.id, queue), token, running)
                back.append((job, worker))
            # each goes to the head of its band: push the least urgent first so they keep their order
            for job, worker in sorted(back, key=lambda jw: (self._band(jw[0]), jw[0].id), reverse=True):
                key = self.keys.job(job.id, queue)
                pipe.hdel(key, *self._unlease(pipe, writes, job, worker, {}, done=False))
                self._push_ready(pipe, writes, job, front=True)
                pipe.hset(key, "state", JobState.QUEUED.value)
                logger.info("lease_expired", job_id=job.id, worker=worker)
            writes.flush(pipe)

        self._transact(body, on=leases)

    # --- inspection ------------------------------------------------------------------

    @boundary
    def stats(self) -> list[QueueStats]:
        queues = sorted(self.client.smembers(self.keys.queues))
        if not queues:
            return []
        self._promote(queues, self.now())
        counted: dict[str, QueueStats] = {}
        for group in self._by_tag(queues, lambda q: q):
            counted.update(self._count(group))
        return [counted[q] for q in queues]

    def _count(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """The counts of queues of one tag, from one snapshot."""
        band_index = [self.keys.bands(q) for q in queues]

        def body(tx: Transaction) -> list[list[str]]:
            # one snapshot: a band added after the WATCH retries; a job moving from a band to a lease
            # inside the MULTI is counted once, so a busy queue never looks idle
            tx.watch(*band_index)
            bands: list[list[str]] = tx.read(lambda r: [r.zrange(k, 0, -1) for k in band_index])
            pipe = tx.multi()
            for q, names in zip(queues, bands, strict=True):
                for band in names:
                    pipe.llen(self.keys.ready(q, int(band)))
                pipe.zcard(self.keys.delayed(q))
                pipe.zcard(self.keys.leases(q))
                pipe.zcard(self.keys.failed_in(q))
                pipe.hlen(self.keys.outbox(q))
            return bands

        bands, rows = self.route.transact(band_index[0], body, tolerate=COUNT_TOLERATE)
        counts = iter(n if isinstance(n, int) else 0 for n in rows)  # a key of the wrong type: counted empty
        out: dict[str, QueueStats] = {}
        for q, names in zip(queues, bands, strict=True):
            ready = sum(next(counts) for _ in names)
            delayed, in_flight, failed, moving = next(counts), next(counts), next(counts), next(counts)
            # a chain job settled whose next step is not stored yet (spread layout) is still in flight
            in_flight += moving
            out[q] = QueueStats(queue=q, ready=ready, delayed=delayed, in_flight=in_flight, failed=failed)
        return out
