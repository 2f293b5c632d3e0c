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

import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis
import structlog
from attrs import evolve

from jobchain import workflow
from jobchain.aging import DEFAULT_AGING_INTERVAL
from jobchain.backend import Backend
from jobchain.clock import Clock
from jobchain.errors import InvalidJobError
from jobchain.model import (
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    ErrorInfo,
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
)
from jobchain_redis.codec import chain_from_json, chain_to_json, dumps, loads
from jobchain_redis.connection import Pipe, ServerClock, Transaction, boundary, parse_url, transact
from jobchain_redis.keys import DEFAULT_PREFIX, Keys

__all__ = ["ListsBackend"]

logger = structlog.get_logger("jobchain.redis.lists")

#: how many wake-up tokens a queue's signal list keeps at most
_SIGNALS = 64
#: how many due delayed jobs or expired leases one pass moves per queue
_PROMOTE_BATCH = 200


class _Writes:
    """Collects what a transaction made ready, to add band index entries and wake-ups once."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.bands: dict[str, dict[str, float]] = {}
        self.ready: dict[str, int] = {}

    def flush(self, pipe: Pipe) -> None:
        keys = self.keys
        for queue, bands in self.bands.items():
            pipe.zadd(keys.bands(queue), bands)
        if self.ready:
            pipe.sadd(keys.queues, *self.ready)
        for queue, count in self.ready.items():
            signal = keys.signal(queue)
            pipe.rpush(signal, *(["1"] * min(count, _SIGNALS)))
            pipe.ltrim(signal, -_SIGNALS, -1)


class ListsBackend(Backend):
    """Jobs in Redis lists and hashes; see the module docstring for the layout and transitions."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        band_width: float = 0.01,
        url: str = "redis-lists://",
        clock: Clock | None = None,
        aging_interval: float = DEFAULT_AGING_INTERVAL,
        owns_client: bool = False,
    ) -> None:
        super().__init__(clock=clock or ServerClock(client), aging_interval=aging_interval)
        if band_width <= 0:
            raise ValueError(f"band_width must be > 0 aging intervals, got {band_width!r}")
        #: redis-py types its replies as sync/async unions; this client decodes to str, so it is used as Any
        self.client: Any = client
        self.keys = Keys(prefix)
        self.band_width = float(band_width)
        self.url = url
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ListsBackend:
        parsed = parse_url(url)
        client = redis.Redis.from_url(parsed.redis_url, decode_responses=True)
        own = parsed.options
        return cls(
            client,
            prefix=own.get("prefix", DEFAULT_PREFIX),
            band_width=float(own.get("band", 0.01)),
            url=parsed.public,
            owns_client=True,
            **options,
        )

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def delete_everything(self) -> int:
        """Delete every key under this backend's prefix (tests, resets); return how many."""
        names = list(self.client.scan_iter(match=self.keys.pattern, count=1000))
        for start in range(0, len(names), 1000):
            self.client.delete(*names[start : start + 1000])
        return len(names)

    # --- helpers ---------------------------------------------------------------------

    def _band(self, job: Job) -> int:
        return math.floor((job.enqueued_at / self.aging_interval - job.priority) / self.band_width)

    def _push_ready(self, pipe: Pipe, writes: _Writes, job: Job, *, front: bool) -> None:
        band = self._band(job)
        key = self.keys.ready(job.queue, band)
        if front:
            pipe.lpush(key, job.id)
        else:
            pipe.rpush(key, job.id)
        writes.bands.setdefault(job.queue, {})[str(band)] = band
        writes.ready[job.queue] = writes.ready.get(job.queue, 0) + 1

    def _place(self, pipe: Pipe, writes: _Writes, job: Job, now: float, *, front: bool) -> None:
        """Store the job's payload and make it ready, or delayed until ``not_before``."""
        fields: dict[str, str] = {"job": dumps(job.to_wire()), "queue": job.queue}
        if job.not_before is not None and job.not_before > now:
            pipe.zadd(self.keys.delayed(job.queue), {job.id: job.not_before})
            pipe.sadd(self.keys.queues, job.queue)
            fields["state"] = JobState.DELAYED.value
        else:
            self._push_ready(pipe, writes, job, front=front)
            fields["state"] = JobState.QUEUED.value
        pipe.hset(self.keys.job(job.id), mapping=fields)

    def _unlease(self, pipe: Pipe, job: Job, worker: str) -> None:
        pipe.zrem(self.keys.leases(job.queue), job.id)
        pipe.lrem(self.keys.processing(worker), 1, job.id)
        pipe.hdel(self.keys.job(job.id), "token", "worker", "lease_until")

    # --- jobs ------------------------------------------------------------------------

    @boundary
    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        unique = list({job.id: job for job in reversed(jobs)}.values())[::-1]
        job_keys = [self.keys.job(job.id) for job in unique]

        def body(tx: Transaction) -> None:
            tx.watch(*job_keys)
            exists = tx.read(lambda r: [r.exists(k) for k in job_keys]) if job_keys else []
            now = self.now()
            pipe = tx.multi()
            for chain in chains:
                pipe.set(self.keys.chain(chain.id), chain_to_json(chain), nx=True)
            writes = _Writes(self.keys)
            for job, known in zip(unique, exists, strict=True):
                if not known:
                    self._place(pipe, writes, job, now, front=False)
            writes.flush(pipe)

        transact(self.client, body)

    @boundary
    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        deadline = time.monotonic() + wait
        signals = [self.keys.signal(q) for q in queues]
        while True:
            taken = self._reserve_once(queues, limit, lease, worker)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            # wake at the next enqueue, or soon anyway for delayed jobs and lost leases
            self.client.blpop(signals, timeout=max(0.01, min(remaining, 0.5)))

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
        """Promote due jobs and lost leases, then list the most urgent bands, most urgent first."""
        keys = self.keys

        def read_index(r: Pipe) -> None:
            for q in queues:
                r.zrangebyscore(keys.delayed(q), "-inf", now, start=0, num=1)
                r.zrangebyscore(keys.leases(q), "-inf", now, start=0, num=1)
                r.zrange(keys.bands(q), 0, limit - 1, withscores=True)

        pipe = self.client.pipeline(transaction=False)
        read_index(pipe)
        found = pipe.execute()
        if any(found[i] or found[i + 1] for i in range(0, len(found), 3)):
            self._promote(queues, now)
            pipe = self.client.pipeline(transaction=False)
            read_index(pipe)
            found = pipe.execute()
        ranked = sorted(
            (score, q, band) for q, index in zip(queues, found[2::3], strict=True) for band, score in index
        )
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
        processing = keys.processing(worker)
        ready_keys = [keys.ready(q, int(band)) for _, q, band in candidates]

        def body(tx: Transaction) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
            tx.watch(*ready_keys)
            heads = tx.read(lambda r: [r.lrange(k, 0, limit - 1) for k in ready_keys])
            picked: list[tuple[str, str, str]] = []
            empty: list[tuple[str, str]] = []
            for (_, queue, band), key, ids in zip(candidates, ready_keys, heads, strict=True):
                if not ids:
                    empty.append((queue, band))
                    continue
                picked.extend((queue, key, job_id) for job_id in ids[: limit - len(picked)])
                if len(picked) >= limit:
                    break
            if not picked:
                return picked, empty
            pipe = tx.multi()
            for (queue, key, job_id), token in zip(picked, tokens(len(picked)), strict=True):
                job_key = keys.job(job_id)
                pipe.lmove(key, processing, "LEFT", "RIGHT")
                pipe.hset(
                    job_key,
                    mapping={
                        "state": JobState.RUNNING.value,
                        "token": token,
                        "worker": worker,
                        "lease_until": repr(lease_until),
                    },
                )
                pipe.hincrby(job_key, "deliveries", 1)
                pipe.zadd(keys.leases(queue), {job_id: lease_until})
                pipe.hget(job_key, "job")
            return picked, empty

        issued: list[str] = []

        def tokens(count: int) -> list[str]:
            issued[:] = [secrets.token_hex(8) for _ in range(count)]
            return issued

        (picked, empty), results = transact(self.client, body)
        if empty:
            self._drop_empty_bands(empty)
        if not picked:
            return None if empty else []
        out: list[Delivery] = []
        bad: list[tuple[str, str, str | None, str]] = []
        for index, ((queue, _, job_id), token) in enumerate(zip(picked, issued, strict=True)):
            count, raw = results[5 * index + 2], results[5 * index + 4]
            try:
                if raw is None:
                    raise InvalidJobError("the job's hash has no payload")
                job = Job.from_wire(loads(raw))
            except (InvalidJobError, ValueError) as exc:
                bad.append((queue, job_id, raw, str(exc)))
                continue
            out.append(
                Delivery(job=job, token=token, lease_until=lease_until, worker=worker, delivery_count=count)
            )
        if bad:
            self._quarantine(bad, worker)
        return out

    def _drop_empty_bands(self, bands: Sequence[tuple[str, str]]) -> None:
        """Remove bands from the index whose lists are empty (WATCH: a push meanwhile keeps them)."""
        for queue, band in bands:
            ready = self.keys.ready(queue, int(band))

            def body(tx: Transaction, ready: str = ready, queue: str = queue, band: str = band) -> None:
                tx.watch(ready)
                if tx.read(lambda r: r.llen(ready))[0] == 0:
                    tx.multi().zrem(self.keys.bands(queue), band)

            transact(self.client, body)

    def _quarantine(self, bad: Sequence[tuple[str, str, str | None, str]], worker: str) -> None:
        """Take unreadable jobs out of circulation, keeping their raw bytes under ``{p}:bad``."""
        pipe = self.client.pipeline(transaction=True)
        for queue, job_id, raw, reason in bad:
            logger.warning("bad_job_quarantined", job_id=job_id, queue=queue, reason=reason)
            pipe.zrem(self.keys.leases(queue), job_id)
            pipe.lrem(self.keys.processing(worker), 1, job_id)
            pipe.hset(self.keys.bad, job_id, dumps({"raw": raw, "reason": reason, "queue": queue}))
            pipe.delete(self.keys.job(job_id))
        pipe.execute()

    def _promote(self, queues: Sequence[str], now: float) -> None:
        """Move due delayed jobs and jobs whose lease ran out back to the head of their bands."""
        for queue in queues:
            self._promote_delayed(queue, now)
            self._expire_leases(queue, now)

    def _promote_delayed(self, queue: str, now: float) -> None:
        delayed = self.keys.delayed(queue)

        def body(tx: Transaction) -> None:
            tx.watch(delayed)
            [due] = tx.read(lambda r: r.zrangebyscore(delayed, "-inf", now, start=0, num=_PROMOTE_BATCH))
            if not due:
                return
            raws = tx.read(lambda r: [r.hget(self.keys.job(j), "job") for j in due])
            pipe = tx.multi()
            writes = _Writes(self.keys)
            pipe.zrem(delayed, *due)
            for job_id, raw in zip(due, raws, strict=True):
                if raw is None:
                    continue
                job = Job.from_wire(loads(raw))
                self._push_ready(pipe, writes, job, front=True)
                pipe.hset(self.keys.job(job_id), "state", JobState.QUEUED.value)
            writes.flush(pipe)

        transact(self.client, body)

    def _expire_leases(self, queue: str, now: float) -> None:
        leases = self.keys.leases(queue)
        [expired] = (
            self.client.pipeline(transaction=False)
            .zrangebyscore(leases, "-inf", now, start=0, num=_PROMOTE_BATCH)
            .execute()
        )
        if not expired:
            return
        job_keys = [self.keys.job(j) for j in expired]

        def body(tx: Transaction) -> None:
            tx.watch(leases, *job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(leases, j) for j in expired] + [r.hmget(k, "job", "worker") for k in job_keys]
                )
            )
            scores, fields = rows[: len(expired)], rows[len(expired) :]
            pipe = tx.multi()
            writes = _Writes(self.keys)
            for job_id, score, (raw, worker) in zip(expired, scores, fields, strict=True):
                if score is None or score > now or raw is None:
                    continue  # settled or extended since
                job = Job.from_wire(loads(raw))
                self._unlease(pipe, job, worker or "")
                self._push_ready(pipe, writes, job, front=True)
                pipe.hset(self.keys.job(job_id), "state", JobState.QUEUED.value)
                logger.info("lease_expired", job_id=job_id, worker=worker)
            writes.flush(pipe)

        transact(self.client, body)

    @boundary
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        job_keys = [self.keys.job(d.job.id) for d in deliveries]

        def body(tx: Transaction) -> list[bool]:
            tx.watch(*job_keys)
            tokens = tx.read(lambda r: [r.hget(k, "token") for k in job_keys])
            lease_until = self.now() + lease
            held = [t is not None and t == d.token for d, t in zip(deliveries, tokens, strict=True)]
            pipe = tx.multi()
            for delivery, key, ok in zip(deliveries, job_keys, held, strict=True):
                if ok:
                    pipe.zadd(self.keys.leases(delivery.job.queue), {delivery.job.id: lease_until}, xx=True)
                    pipe.hset(key, "lease_until", repr(lease_until))
            return held

        return transact(self.client, body)[0] if deliveries else []

    # --- settle ----------------------------------------------------------------------

    @boundary
    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        if not outcomes:
            return []
        job_ids = list(dict.fromkeys(o.delivery.job.id for o in outcomes))
        chain_ids = list(
            dict.fromkeys(o.delivery.job.chain.chain_id for o in outcomes if o.delivery.job.chain is not None)
        )
        watch = [self.keys.job(j) for j in job_ids] + [self.keys.chain(c) for c in chain_ids]

        def body(tx: Transaction) -> list[SettleResult]:
            tx.watch(*watch)
            rows = tx.read(
                lambda r: (
                    [r.hmget(self.keys.job(j), "token", "deliveries", "started_at") for j in job_ids]
                    + [r.get(self.keys.chain(c)) for c in chain_ids]
                )
            )
            held = dict(zip(job_ids, rows[: len(job_ids)], strict=True))
            chains = {
                c: chain_from_json(raw)
                for c, raw in zip(chain_ids, rows[len(job_ids) :], strict=True)
                if raw is not None
            }
            before = dict(chains)
            now = self.now()
            pipe = tx.multi()
            writes = _Writes(self.keys)
            results: list[SettleResult] = []
            for outcome in outcomes:
                results.append(self._apply(pipe, writes, outcome, held, chains, now))
            for chain_id, record in chains.items():
                if record is not before[chain_id]:
                    pipe.set(self.keys.chain(chain_id), chain_to_json(record))
            writes.flush(pipe)
            return results

        return transact(self.client, body)[0]

    def _apply(
        self,
        pipe: Pipe,
        writes: _Writes,
        outcome: Outcome,
        held: dict[str, list[str | None]],
        chains: dict[str, ChainRecord],
        now: float,
    ) -> SettleResult:
        delivery = outcome.delivery
        job = delivery.job
        token, deliveries, _started = held[job.id]
        if token is None or token != delivery.token:
            logger.warning(
                "stale_settle_rejected", job_id=job.id, worker=delivery.worker, outcome=type(outcome).__name__
            )
            return SettleResult(accepted=False)
        held[job.id] = [None, deliveries, _started]  # a second outcome for this delivery is stale
        key = self.keys.job(job.id)
        self._unlease(pipe, job, delivery.worker)
        record = chains.get(job.chain.chain_id) if job.chain is not None else None
        if isinstance(outcome, Completed):
            pipe.hset(
                key,
                mapping={
                    "state": JobState.SUCCEEDED.value,
                    "result": dumps(outcome.result),
                    "started_at": repr(outcome.started_at),
                    "finished_at": repr(outcome.finished_at),
                },
            )
            pipe.hdel(key, "error", "deliveries")
            if record is None or job.chain is None:
                return SettleResult(accepted=True)
            updated, following = workflow.apply_completed(
                record,
                job.chain,
                outcome.result,
                started_at=outcome.started_at,
                finished_at=outcome.finished_at,
                now=now,
            )
            chains[record.id] = updated
            for next_job in following:
                self._place(pipe, writes, next_job, now, front=False)
            done = updated.state is ChainState.COMPLETED and record.state is not ChainState.COMPLETED
            return SettleResult(accepted=True, chain=updated if done else None)
        if isinstance(outcome, Retried):
            retry = job.retried(not_before=now + outcome.delay)
            self._place(pipe, writes, retry, now, front=True)
            pipe.hset(key, mapping={"error": dumps(outcome.error.to_wire()), "deliveries": 0})
            return SettleResult(accepted=True)
        if isinstance(outcome, Failed):
            pipe.hset(
                key,
                mapping={
                    "state": JobState.FAILED.value,
                    "error": dumps(outcome.error.to_wire()),
                    "finished_at": repr(now),
                },
            )
            pipe.hdel(key, "deliveries")
            pipe.zadd(self.keys.failed, {job.id: now})
            pipe.zadd(self.keys.failed_in(job.queue), {job.id: now})
            if record is None or job.chain is None:
                return SettleResult(accepted=True)
            updated_record = workflow.apply_failed(record, job.chain, outcome.error, now=now)
            chains[record.id] = updated_record
            halted = updated_record.state is ChainState.HALTED and record.state is not ChainState.HALTED
            return SettleResult(accepted=True, chain=updated_record if halted else None)
        assert isinstance(outcome, Released)
        self._push_ready(pipe, writes, job, front=True)
        pipe.hset(
            key, mapping={"state": JobState.QUEUED.value, "deliveries": max(0, int(deliveries or 1) - 1)}
        )
        return SettleResult(accepted=True)

    # --- records ---------------------------------------------------------------------

    @boundary
    def get_job(self, job_id: str) -> JobRecord | None:
        raw = self.client.hgetall(self.keys.job(job_id))
        if not raw or "job" not in raw:
            return None
        return _record(raw)

    @boundary
    def get_chain(self, chain_id: str) -> ChainRecord | None:
        raw = self.client.get(self.keys.chain(chain_id))
        return None if raw is None else chain_from_json(raw)

    # --- failed queue ----------------------------------------------------------------

    def _entries(self, scored: Sequence[tuple[str, float]]) -> list[FailedEntry]:
        pipe = self.client.pipeline(transaction=False)
        for job_id, _ in scored:
            pipe.hmget(self.keys.job(job_id), "job", "error")
        out: list[FailedEntry] = []
        for (_, failed_at), (raw, error) in zip(scored, pipe.execute(), strict=True):
            if raw is None or error is None:
                continue
            job = Job.from_wire(loads(raw))
            out.append(FailedEntry(job=job, error=ErrorInfo.from_wire(loads(error)), failed_at=failed_at))
        return out

    @boundary
    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        if limit <= 0:
            return []
        scored = self.client.zrange(self.keys.failed, offset, offset + limit - 1, withscores=True)
        return self._entries(scored)

    @boundary
    def get_failed(self, job_id: str) -> FailedEntry | None:
        score = self.client.zscore(self.keys.failed, job_id)
        if score is None:
            return None
        entries = self._entries([(job_id, score)])
        return entries[0] if entries else None

    @boundary
    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return []
        job_keys = [self.keys.job(j) for j in ids]

        def body(tx: Transaction) -> list[str]:
            tx.watch(self.keys.failed, *job_keys)
            rows = tx.read(
                lambda r: [r.zscore(self.keys.failed, j) for j in ids] + [r.hget(k, "job") for k in job_keys]
            )
            scores, raws = rows[: len(ids)], rows[len(ids) :]
            jobs = {
                j: Job.from_wire(loads(raw))
                for j, score, raw in zip(ids, scores, raws, strict=True)
                if score is not None and raw is not None
            }
            chain_ids = list(dict.fromkeys(j.chain.chain_id for j in jobs.values() if j.chain is not None))
            tx.watch(*[self.keys.chain(c) for c in chain_ids])
            stored = tx.read(lambda r: [r.get(self.keys.chain(c)) for c in chain_ids]) if chain_ids else []
            chains = {c: chain_from_json(s) for c, s in zip(chain_ids, stored, strict=True) if s is not None}
            now = self.now()
            pipe = tx.multi()
            writes = _Writes(self.keys)
            moved: list[str] = []
            for job_id, old in jobs.items():
                job = evolve(old, attempt=1, not_before=None, enqueued_at=now)
                if old.expires_at is not None:
                    job = evolve(job, expires_at=now + old.expires_at - old.enqueued_at)
                key = self.keys.job(job_id)
                pipe.delete(key)
                self._place(pipe, writes, job, now, front=False)
                pipe.zrem(self.keys.failed, job_id)
                pipe.zrem(self.keys.failed_in(job.queue), job_id)
                if job.chain is not None and job.chain.chain_id in chains:
                    record = chains[job.chain.chain_id]
                    chains[record.id] = workflow.apply_redrive(record, job.chain)
                moved.append(job_id)
            for chain_id, record in chains.items():
                pipe.set(self.keys.chain(chain_id), chain_to_json(record))
            writes.flush(pipe)
            return moved

        return transact(self.client, body)[0]

    @boundary
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        ids = self.client.zrange(self.keys.failed, 0, -1) if job_ids is None else list(dict.fromkeys(job_ids))
        if not ids:
            return 0
        queues = self.client.pipeline(transaction=False)
        for job_id in ids:
            queues.hget(self.keys.job(job_id), "queue")
        pipe = self.client.pipeline(transaction=True)
        positions: list[int] = []
        for job_id, queue in zip(ids, queues.execute(), strict=True):
            positions.append(len(pipe.command_stack))
            pipe.zrem(self.keys.failed, job_id)
            if queue is not None:
                pipe.zrem(self.keys.failed_in(queue), job_id)
        results = pipe.execute()
        return sum(int(results[i]) for i in positions)

    # --- workers ---------------------------------------------------------------------

    @boundary
    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.worker(info.name), dumps(info.to_wire()))
        pipe.zadd(self.keys.workers, {info.name: self.now() + ttl})
        pipe.sismember(self.keys.stop, info.name)
        return bool(pipe.execute()[2])

    @boundary
    def remove_worker(self, name: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.keys.workers, name)
        pipe.delete(self.keys.worker(name))
        pipe.srem(self.keys.stop, name)
        pipe.execute()

    @boundary
    def workers(self) -> list[WorkerInfo]:
        names = self.client.zrangebyscore(self.keys.workers, f"({self.now()!r}", "+inf")
        if not names:
            return []
        raws = self.client.mget([self.keys.worker(n) for n in names])
        infos = [WorkerInfo.from_wire(loads(raw)) for raw in raws if raw is not None]
        return sorted(infos, key=lambda i: i.name)

    @boundary
    def request_stop(self, name: str) -> bool:
        until = self.client.zscore(self.keys.workers, name)
        if until is None or until <= self.now():
            return False
        self.client.sadd(self.keys.stop, name)
        return True

    # --- inspection ------------------------------------------------------------------

    @boundary
    def stats(self) -> list[QueueStats]:
        queues = sorted(self.client.smembers(self.keys.queues))
        if not queues:
            return []
        self._promote(queues, self.now())
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
            return bands

        bands, rows = transact(self.client, body)
        counts = iter(rows)
        out: list[QueueStats] = []
        for q, names in zip(queues, bands, strict=True):
            ready = sum(next(counts) for _ in names)
            delayed, in_flight, failed = next(counts), next(counts), next(counts)
            out.append(QueueStats(queue=q, ready=ready, delayed=delayed, in_flight=in_flight, failed=failed))
        return out


def _float(raw: str | None) -> float | None:
    return None if raw is None else float(raw)


def _record(raw: dict[str, str]) -> JobRecord:
    error = raw.get("error")
    result = raw.get("result")
    return JobRecord(
        job=Job.from_wire(loads(raw["job"])),
        state=JobState(raw.get("state", JobState.QUEUED.value)),
        result=None if result is None else loads(result),
        error=None if error is None else ErrorInfo.from_wire(loads(error)),
        started_at=_float(raw.get("started_at")),
        finished_at=_float(raw.get("finished_at")),
    )
