"""What both Redis backends share: job hashes, chain transitions, the failed queue, workers, records.

:class:`RedisBackend` implements every operation whose data layout is the same
for ``redis-lists`` and ``redis-streams`` (see :mod:`jobchain_redis.keys`):
enqueue, settle and re-drive as WATCH/MULTI/EXEC transactions, the failed
queue, the worker registry and the job and chain records. A subclass says how
a job becomes ready (:meth:`RedisBackend._place`), how a settled delivery lets
go of its lease (:meth:`RedisBackend._unlease`) and how a released job goes
back (:meth:`RedisBackend._release`), and implements reserve, extend and stats.
"""

from __future__ import annotations

import abc
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import redis
import structlog
from attrs import evolve

from jobchain import workflow
from jobchain.aging import DEFAULT_AGING_INTERVAL
from jobchain.backend import Backend
from jobchain.clock import Clock
from jobchain.errors import ConfigurationError
from jobchain.model import (
    UNREADABLE_TASK,
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
    Released,
    Retried,
    SettleResult,
    WorkerInfo,
)
from jobchain_redis.codec import chain_from_json, chain_to_json, dumps, loads
from jobchain_redis.connection import Pipe, ServerClock, Transaction, boundary, connect, parse_url, transact
from jobchain_redis.keys import DEFAULT_PREFIX, Keys
from jobchain_redis.safety import EvictionCheck, refuse_oom

__all__ = ["DEFAULT_RESULT_TTL", "RedisBackend", "Writes", "result_ttl_option"]

#: how long the record of a succeeded job or a completed chain is kept: one day
DEFAULT_RESULT_TTL = 86_400.0


def result_ttl_option(options: dict[str, str]) -> float | None:
    """The URL option ``result_ttl``: seconds, or ``none`` to keep results forever."""
    raw = options.get("result_ttl")
    if raw is None:
        return DEFAULT_RESULT_TTL
    if raw.strip().lower() in ("none", "forever"):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"result_ttl={raw!r}: expected seconds or 'none'") from None

logger = structlog.get_logger("jobchain.redis")

R = TypeVar("R")

#: the job-hash fields settle reads under WATCH before the backend-specific ones
_SETTLE_FIELDS = ("token", "deliveries")


class Writes:
    """Writes of one transaction that many jobs share, queued once at the end of its MULTI.

    The base collects the jobs whose leases end (one ``ZREM`` per queue);
    subclasses add band indexes, wake-ups and acknowledgements. Nothing
    queued before :meth:`flush` in the same MULTI may depend on these.
    """

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.unleased: dict[str, list[str]] = {}
        self.leased: dict[str, dict[str, float]] = {}

    def unlease(self, queue: str, job_id: str) -> None:
        self.unleased.setdefault(queue, []).append(job_id)

    def lease(self, queue: str, job_id: str, until: float) -> None:
        self.leased.setdefault(queue, {})[job_id] = until

    def flush(self, pipe: Pipe) -> None:
        for queue, ids in self.unleased.items():
            pipe.zrem(self.keys.leases(queue), *ids)
        for queue, mapping in self.leased.items():
            pipe.zadd(self.keys.leases(queue), mapping)
            pipe.sadd(self.keys.queues, queue)


class _Take:
    """What a settling worker may take: next steps of its queues, up to ``limit``, none overtaking."""

    def __init__(self, worker: str, queues: frozenset[str], lease: float, limit: int) -> None:
        self.worker = worker
        self.queues = queues
        self.lease = lease
        self.limit = limit
        self.taken: list[Delivery] = []
        self._top: dict[str, float | None] = {}

    def start(self, urgent: dict[str, tuple[list[tuple[str, float]], list[str]]]) -> None:
        """Note each queue's most urgent ready band (None: nothing ready) from the reads under WATCH.

        A queue with a lease run out (a job waiting to be delivered again) takes nothing.
        """
        self.taken = []
        self._top = {
            q: (bands[0][1] if bands else None) for q, (bands, expired) in urgent.items() if not expired
        }

    def wants(self, job: Job, band: int, now: float) -> bool:
        if len(self.taken) >= self.limit or job.queue not in self._top:
            return False
        if job.not_before is not None and job.not_before > now:
            return False
        top = self._top[job.queue]
        return top is None or top > band  # a ready job in this band or a more urgent one goes first


class RedisBackend(Backend):
    """The shared part of the Redis backends; subclasses add delivery (lists or streams)."""

    #: job-hash fields a subclass needs in :meth:`_unlease` and :meth:`_release`, after token, deliveries
    settle_fields: tuple[str, ...] = ()
    #: error codes a command inside this backend's MULTI may answer without failing it
    tolerate: tuple[str, ...] = ()

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str = "redis://",
        clock: Clock | None = None,
        aging_interval: float = DEFAULT_AGING_INTERVAL,
        owns_client: bool = False,
        result_ttl: float | None = DEFAULT_RESULT_TTL,
        eviction: str = "warn",
    ) -> None:
        super().__init__(clock=clock or ServerClock(client), aging_interval=aging_interval)
        if result_ttl is not None and result_ttl <= 0:
            raise ValueError(f"result_ttl must be > 0 seconds or None (keep forever), got {result_ttl!r}")
        #: seconds a succeeded job's record and a completed chain's record are kept (None: forever)
        self.result_ttl = result_ttl
        #: redis-py types its replies as sync/async unions; this client decodes to str, so it is used as Any
        self.client: Any = client
        self.keys = Keys(prefix)
        self.url = url
        #: ``maxmemory-policy`` checked before the first submit or reservation (see jobchain_redis.safety)
        self.eviction = EvictionCheck(eviction, url, prefix)
        self._owns_client = owns_client
        self._resumed: set[str] = set()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def delete_everything(self) -> int:
        """Delete every key under this backend's prefix (tests, resets); return how many."""
        names = list(self.client.scan_iter(match=self.keys.pattern, count=1000))
        for start in range(0, len(names), 1000):
            self.client.delete(*names[start : start + 1000])
        return len(names)

    def _transact(self, body: Callable[[Transaction], R]) -> tuple[R, list[Any]]:
        return transact(self.client, body, tolerate=self.tolerate)

    # --- what a subclass provides ------------------------------------------------------

    #: width of a priority band, in aging intervals (set by the subclass)
    band_width: float

    def _band(self, job: Job) -> int:
        """The band a ready job belongs in: its static aging key cut into ``band_width`` slices."""
        return math.floor((job.enqueued_at / self.aging_interval - job.priority) / self.band_width)

    # --- opening by URL ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Open the backend that a ``redis-lists://`` or ``redis-streams://`` URL (or ``+sentinel``) names."""
        parsed = parse_url(url)
        own = parsed.options
        return cls(
            connect(parsed),
            prefix=own.get("prefix", DEFAULT_PREFIX),
            url=parsed.public,
            owns_client=True,
            eviction=own.get("eviction", "warn"),
            result_ttl=result_ttl_option(own),
            **{**cls._url_options(own), **options},  # arguments given in code win over the URL's
        )

    @classmethod
    def _url_options(cls, own: dict[str, str]) -> dict[str, Any]:
        """Constructor arguments of the subclass's own URL options (``band`` …)."""
        return {}

    @abc.abstractmethod
    def _writes(self) -> Writes:
        """A fresh collector for one transaction."""

    @abc.abstractmethod
    def _place(self, pipe: Pipe, writes: Writes, job: Job, now: float, *, front: bool) -> None:
        """Store the job's payload and make it ready (at the head of its band if ``front``) or delayed."""

    @abc.abstractmethod
    def _unlease(
        self, pipe: Pipe, writes: Writes, job: Job, worker: str, row: dict[str, str | None], *, done: bool
    ) -> list[str]:
        """Drop the delivery's lease; ``done`` when the job leaves its ready structure for good.

        Returns the job-hash fields to delete (the caller deletes them with its own in one HDEL).
        """

    @abc.abstractmethod
    def _release(self, pipe: Pipe, writes: Writes, job: Job, row: dict[str, str | None]) -> None:
        """Make a released job ready again at once, in its old place."""

    @abc.abstractmethod
    def _held_by(self, queues: Sequence[str], worker: str) -> list[str]:
        """Ids of the jobs the Redis data says ``worker`` holds in ``queues`` (its processing list/PEL)."""

    def _refresh(self, pipe: Pipe, delivery: Delivery, row: dict[str, str | None]) -> None:
        """Extra writes when a lease is extended (redis-streams: keep the entry's idle time fresh)."""

    # --- resuming a restarted worker ---------------------------------------------------

    def _resume_once(self, queues: Sequence[str], worker: str) -> None:
        """On this backend's first reserve for ``worker``, take back what an earlier life of it held."""
        if worker in self._resumed:
            return
        self._resumed.add(worker)
        self._resume_own(queues, worker)

    def _resume_own(self, queues: Sequence[str], worker: str) -> None:
        """End at once the leases a worker of the same name held when it died, so they run again now.

        A worker that restarts under its old name (a supervisor restarting a
        process) would otherwise wait for those leases to run out. Only jobs
        whose hash still names this worker are touched, under WATCH; their
        delivery counts show the lost delivery.
        """
        ids = self._held_by(queues, worker)
        if not ids:
            return
        job_keys = [self.keys.job(j) for j in ids]

        def body(tx: Transaction) -> list[str]:
            tx.watch(*job_keys)
            rows = tx.read(lambda r: [r.hmget(k, "worker", "queue") for k in job_keys])
            pipe = tx.multi()
            resumed = []
            for job_id, (holder, queue) in zip(ids, rows, strict=True):
                if holder == worker and queue:
                    pipe.zadd(self.keys.leases(queue), {job_id: 0}, xx=True)
                    resumed.append(job_id)
            return resumed

        resumed = self._transact(body)[0]
        if resumed:
            logger.info("worker_resumed_its_jobs", worker=worker, jobs=len(resumed))

    # --- jobs ------------------------------------------------------------------------

    @boundary
    @refuse_oom
    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self.eviction.ensure(self.client)
        unique = list({job.id: job for job in reversed(jobs)}.values())[::-1]
        job_keys = [self.keys.job(job.id) for job in unique]

        def body(tx: Transaction) -> None:
            tx.watch(*job_keys)
            exists = tx.read(lambda r: [r.exists(k) for k in job_keys]) if job_keys else []
            new = [job for job, known in zip(unique, exists, strict=True) if not known]
            self._store(tx.multi(), new, chains)

        self._transact(body)

    @boundary
    @refuse_oom
    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        """One MULTI/EXEC and no WATCH: the ids are fresh, so there is nothing to check (one round trip)."""
        self.eviction.ensure(self.client)
        unique = list({job.id: job for job in reversed(jobs)}.values())[::-1]
        pipe = self.client.pipeline(transaction=True)
        self._store(pipe, unique, chains)
        results = pipe.execute(raise_on_error=not self.tolerate)
        for result in results:
            if isinstance(result, redis.ResponseError) and not str(result).startswith(self.tolerate):
                raise result

    def _store(self, pipe: Pipe, jobs: Sequence[Job], chains: Sequence[ChainRecord]) -> None:
        now = self.now()
        for chain in chains:
            pipe.set(self.keys.chain(chain.id), chain_to_json(chain), nx=True)
        writes = self._writes()
        for job in jobs:
            self._place(pipe, writes, job, now, front=False)
        writes.flush(pipe)

    @boundary
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        job_keys = [self.keys.job(d.job.id) for d in deliveries]

        fields = ("token", *self.settle_fields)

        def body(tx: Transaction) -> list[bool]:
            tx.watch(*job_keys)
            rows = tx.read(lambda r: [r.hmget(k, *fields) for k in job_keys])
            lease_until = self.now() + lease
            held = [row[0] is not None and row[0] == d.token for d, row in zip(deliveries, rows, strict=True)]
            pipe = tx.multi()
            for delivery, key, ok, row in zip(deliveries, job_keys, held, rows, strict=True):
                if ok:
                    pipe.zadd(self.keys.leases(delivery.job.queue), {delivery.job.id: lease_until}, xx=True)
                    pipe.hset(key, "lease_until", repr(lease_until))
                    self._refresh(pipe, delivery, dict(zip(fields, row, strict=True)))
            return held

        return self._transact(body)[0] if deliveries else []

    # --- settle ----------------------------------------------------------------------

    @boundary
    @refuse_oom
    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        return self._settle(outcomes, None)[0]

    @boundary
    @refuse_oom
    def settle_and_take(
        self, outcomes: Sequence[Outcome], *, worker: str, queues: Sequence[str], lease: float, limit: int
    ) -> tuple[list[SettleResult], list[Delivery]]:
        """Settle, and lease to ``worker`` the next steps these outcomes make ready, in one transaction.

        A next step is taken only when nothing in its queue is as urgent (no
        ready job in its band or a more urgent one, no lease run out), so the
        order of service is the one :meth:`reserve` would give. The worker runs
        it at once: no wake-up, no reserve (see :meth:`Backend.settle_and_take`).
        """
        if limit < 1 or not queues:
            return self._settle(outcomes, None)
        return self._settle(outcomes, _Take(worker, frozenset(queues), lease, limit))

    def _settle(
        self, outcomes: Sequence[Outcome], take: _Take | None
    ) -> tuple[list[SettleResult], list[Delivery]]:
        if not outcomes:
            return [], []
        job_ids = list(dict.fromkeys(o.delivery.job.id for o in outcomes))
        chain_ids = list(
            dict.fromkeys(o.delivery.job.chain.chain_id for o in outcomes if o.delivery.job.chain is not None)
        )
        watch = [self.keys.job(j) for j in job_ids] + [self.keys.chain(c) for c in chain_ids]
        fields = _SETTLE_FIELDS + self.settle_fields
        take_queues = sorted(take.queues) if take is not None and chain_ids else []

        def body(tx: Transaction) -> tuple[list[SettleResult], list[Delivery]]:
            tx.watch(*watch)
            now = self.now()

            def reads(r: Pipe) -> None:
                for j in job_ids:
                    r.hmget(self.keys.job(j), *fields)
                for c in chain_ids:
                    r.get(self.keys.chain(c))
                for q in take_queues:
                    self._most_urgent(r, q, now)

            rows = tx.read(reads)
            urgent = rows[len(job_ids) + len(chain_ids) :]
            held = {j: dict(zip(fields, row, strict=True)) for j, row in zip(job_ids, rows, strict=False)}
            n = len(job_ids) + len(chain_ids)
            chains = {
                c: chain_from_json(raw)
                for c, raw in zip(chain_ids, rows[len(job_ids) : n], strict=True)
                if raw is not None
            }
            before = dict(chains)
            pipe = tx.multi()
            writes = self._writes()
            if take is not None:
                take.start({q: (urgent[2 * i], urgent[2 * i + 1]) for i, q in enumerate(take_queues)})
            results = [self._apply(pipe, writes, outcome, held, chains, now, take) for outcome in outcomes]
            for chain_id, record in chains.items():
                if record is not before[chain_id]:
                    pipe.set(self.keys.chain(chain_id), chain_to_json(record))
                    if record.state is ChainState.COMPLETED:
                        self._expire(pipe, self.keys.chain(chain_id))
            writes.flush(pipe)
            return results, list(take.taken) if take is not None else []

        return self._transact(body)[0]

    def _most_urgent(self, r: Pipe, queue: str, now: float) -> None:
        """Queue the reads that say what is ready in ``queue``: its most urgent band, a lease run out."""
        r.zrange(self._ready_index(queue), 0, 0, withscores=True)
        r.zrangebyscore(self.keys.leases(queue), "-inf", now, start=0, num=1)

    def _ready_index(self, queue: str) -> str:
        """The sorted set of ``queue``'s bands that may hold ready jobs, scored by band number."""
        return self.keys.bands(queue)

    def _place_leased(self, pipe: Pipe, writes: Writes, job: Job, take: _Take, now: float) -> Delivery:
        """Store a next step already leased to the taking worker (it never enters the ready structure)."""
        token = secrets.token_hex(8)
        until = now + take.lease
        pipe.hset(
            self.keys.job(job.id),
            mapping={
                "job": dumps(job.to_wire()),
                "queue": job.queue,
                "state": JobState.RUNNING.value,
                "token": token,
                "worker": take.worker,
                "lease_until": repr(until),
                "deliveries": 1,
            },
        )
        writes.lease(job.queue, job.id, until)
        self._hold(pipe, job, take.worker)
        return Delivery(job=job, token=token, lease_until=until, worker=take.worker, delivery_count=1)

    def _hold(self, pipe: Pipe, job: Job, worker: str) -> None:
        """Backend-specific writes for a job leased without a reservation (lists: the processing list)."""

    def _apply(
        self,
        pipe: Pipe,
        writes: Writes,
        outcome: Outcome,
        held: dict[str, dict[str, str | None]],
        chains: dict[str, ChainRecord],
        now: float,
        take: _Take | None = None,
    ) -> SettleResult:
        delivery = outcome.delivery
        job = delivery.job
        row = held[job.id]
        token = row["token"]
        if token is None or token != delivery.token:
            logger.warning(
                "stale_settle_rejected", job_id=job.id, worker=delivery.worker, outcome=type(outcome).__name__
            )
            return SettleResult(accepted=False)
        held[job.id] = {**row, "token": None}  # a second outcome for this delivery is stale
        key = self.keys.job(job.id)
        drop = self._unlease(pipe, writes, job, delivery.worker, row, done=not isinstance(outcome, Released))
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
            pipe.hdel(key, "error", "deliveries", *drop)
            self._expire(pipe, key)
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
                if take is not None and take.wants(next_job, self._band(next_job), now):
                    take.taken.append(self._place_leased(pipe, writes, next_job, take, now))
                else:
                    self._place(pipe, writes, next_job, now, front=False)
            done = updated.state is ChainState.COMPLETED and record.state is not ChainState.COMPLETED
            return SettleResult(accepted=True, chain=updated if done else None)
        if isinstance(outcome, Retried):
            retry = job.retried(not_before=now + outcome.delay)
            pipe.hdel(key, *drop)
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
            pipe.hdel(key, "deliveries", *drop)
            pipe.zadd(self.keys.failed, {job.id: now})
            pipe.zadd(self.keys.failed_in(job.queue), {job.id: now})
            if record is None or job.chain is None:
                return SettleResult(accepted=True)
            updated_record = workflow.apply_failed(record, job.chain, outcome.error, now=now)
            chains[record.id] = updated_record
            halted = updated_record.state is ChainState.HALTED and record.state is not ChainState.HALTED
            return SettleResult(accepted=True, chain=updated_record if halted else None)
        assert isinstance(outcome, Released)
        pipe.hdel(key, *drop)
        self._release(pipe, writes, job, row)
        pipe.hset(
            key,
            mapping={"state": JobState.QUEUED.value, "deliveries": max(0, int(row["deliveries"] or 1) - 1)},
        )
        return SettleResult(accepted=True)

    def _expire(self, pipe: Pipe, key: str) -> None:
        """Let a finished record go after ``result_ttl`` (bounded memory; failed jobs stay until purged)."""
        if self.result_ttl is not None:
            pipe.pexpire(key, int(self.result_ttl * 1000))

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

    def _quarantine(
        self, pipe: Pipe, queue: str, job_id: str, raw: str | None, reason: str, now: float
    ) -> None:
        """Queue the writes that file an unreadable job in the failed queue, its stored text kept.

        The job's hash keeps ``raw`` (what was found, or a note that nothing
        was) and gets a placeholder ``job`` (task :data:`UNREADABLE_TASK`) and
        an ``error`` saying why, so ``jobchain failed`` lists it like any other
        failure; it is never delivered again.
        """
        logger.warning("unreadable_job_failed", job_id=job_id, queue=queue, reason=reason)
        placeholder = Job(id=job_id, task=UNREADABLE_TASK, queue=queue, enqueued_at=now)
        error = ErrorInfo(type="UnreadableJob", message=reason, attempt=1, at=now)
        key = self.keys.job(job_id)
        pipe.zrem(self.keys.leases(queue), job_id)
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={
                "job": dumps(placeholder.to_wire()),
                "raw": "(nothing stored)" if raw is None else raw,
                "queue": queue,
                "state": JobState.FAILED.value,
                "error": dumps(error.to_wire()),
                "finished_at": repr(now),
            },
        )
        pipe.zadd(self.keys.failed, {job_id: now})
        pipe.zadd(self.keys.failed_in(queue), {job_id: now})
        pipe.sadd(self.keys.queues, queue)

    # --- failed queue ----------------------------------------------------------------

    def _entries(self, scored: Sequence[tuple[str, float]]) -> list[FailedEntry]:
        pipe = self.client.pipeline(transaction=False)
        for job_id, _ in scored:
            pipe.hmget(self.keys.job(job_id), "job", "error", "raw")
        out: list[FailedEntry] = []
        for (_, failed_at), (payload, error, raw) in zip(scored, pipe.execute(), strict=True):
            if payload is None or error is None:
                continue
            job = Job.from_wire(loads(payload))
            out.append(
                FailedEntry(job=job, error=ErrorInfo.from_wire(loads(error)), failed_at=failed_at, raw=raw)
            )
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
    @refuse_oom
    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return []
        job_keys = [self.keys.job(j) for j in ids]

        def body(tx: Transaction) -> list[str]:
            tx.watch(self.keys.failed, *job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(self.keys.failed, j) for j in ids]
                    + [r.hmget(k, "job", "raw") for k in job_keys]
                )
            )
            scores, raws = rows[: len(ids)], rows[len(ids) :]
            jobs = {
                j: Job.from_wire(loads(payload))
                for j, score, (payload, unreadable) in zip(ids, scores, raws, strict=True)
                if score is not None and payload is not None and unreadable is None
            }
            chain_ids = list(dict.fromkeys(j.chain.chain_id for j in jobs.values() if j.chain is not None))
            tx.watch(*[self.keys.chain(c) for c in chain_ids])
            stored = tx.read(lambda r: [r.get(self.keys.chain(c)) for c in chain_ids]) if chain_ids else []
            chains = {c: chain_from_json(s) for c, s in zip(chain_ids, stored, strict=True) if s is not None}
            now = self.now()
            pipe = tx.multi()
            writes = self._writes()
            moved: list[str] = []
            for job_id, old in jobs.items():
                job = evolve(old, attempt=1, not_before=None, enqueued_at=now)
                if old.expires_at is not None:
                    job = evolve(job, expires_at=now + old.expires_at - old.enqueued_at)
                pipe.delete(self.keys.job(job_id))
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

        return self._transact(body)[0]

    @boundary
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        ids = self.client.zrange(self.keys.failed, 0, -1) if job_ids is None else list(dict.fromkeys(job_ids))
        if not ids:
            return 0
        job_keys = [self.keys.job(j) for j in ids]

        def body(tx: Transaction) -> int:
            # WATCH: a job re-driven meanwhile has a live hash that must not be deleted
            tx.watch(self.keys.failed, *job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(self.keys.failed, j) for j in ids] + [r.hget(k, "queue") for k in job_keys]
                )
            )
            scores, queues = rows[: len(ids)], rows[len(ids) :]
            gone = [(j, q) for j, score, q in zip(ids, scores, queues, strict=True) if score is not None]
            if not gone:
                return 0
            pipe = tx.multi()
            pipe.zrem(self.keys.failed, *[j for j, _ in gone])
            for job_id, queue in gone:
                if queue is not None:
                    pipe.zrem(self.keys.failed_in(queue), job_id)
                pipe.delete(self.keys.job(job_id))
            return len(gone)

        return self._transact(body)[0]

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
