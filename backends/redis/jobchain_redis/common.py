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
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Self, TypedDict, TypeVar

import redis
import redis.cluster
import structlog
from attrs import evolve, frozen

from jobchain import workflow
from jobchain.aging import DEFAULT_AGING_INTERVAL
from jobchain.backend import Backend, name_taken
from jobchain.clock import Clock
from jobchain.errors import BackendError, ConfigurationError, InvalidJobError, NotInFailedQueueError
from jobchain.model import (
    UNREADABLE_TASK,
    ChainRecord,
    ChainRef,
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
from jobchain_redis.codec import chain_from_json, chain_to_json, decodable, dumps, keepable, loads
from jobchain_redis.connection import (
    ClusterRoute,
    Pipe,
    Route,
    ServerClock,
    Standalone,
    Transaction,
    boundary,
    connect,
    decode_tolerantly,
    number_option,
    parse_url,
    wrong_type,
)
from jobchain_redis.keys import DEFAULT_PREFIX, Keys
from jobchain_redis.safety import EvictionCheck, refuse_oom

__all__ = ["DEFAULT_RESULT_TTL", "UNREADABLE", "RedisBackend", "Writes", "parse_job", "result_ttl_option"]

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

#: what reading stored data that jobchain did not write may raise (not JSON, not UTF-8, fields missing …)
UNREADABLE = (ValueError, TypeError, KeyError)


def parse_job(raw: str | None) -> Job:
    """The job of a stored payload; raises one of :data:`UNREADABLE` for anything else."""
    if raw is None:
        raise InvalidJobError("the job's hash has no payload")
    return Job.from_wire(loads(raw))


def _chain_or_none(chain_id: str, raw: str | None) -> ChainRecord | None:
    """The chain record as stored; None (logged) if it is gone or cannot be read.

    A transition meeting an unreadable chain record settles its job and leaves
    the chain where it is, as for an expired record: one bad record never
    blocks the jobs' settlement.
    """
    if raw is None:
        return None
    try:
        return chain_from_json(raw)
    except UNREADABLE as exc:
        logger.error("chain_record_unreadable", chain_id=chain_id, error=str(exc))
        return None


R = TypeVar("R")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: seconds a blocked reserver waits for a wake-up before it looks again (delayed jobs, lost leases)
WAKE_WAIT = 0.5
#: seconds it waits on the wake-ups of one queue tag before the next, when its queues span tags (Cluster)
TAG_TURN = 0.05

#: seconds a queue one of whose keys holds the wrong type is left out of reservations, then tried again
BLOCK_WAIT = 5.0
#: error codes a transaction that reports counts tolerates (a key of the wrong type counts as empty)
COUNT_TOLERATE = ("WRONGTYPE",)

#: seconds between two looks of a reserver at its queues' outboxes (spread layout)
OUTBOX_SWEEP = 2.0
#: an outbox entry older than this many seconds is finished by the sweep (its settler died, or Redis
#: went away between the two parts); a younger one is still being finished by its settler
OUTBOX_GRACE = 1.0


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """``items`` grouped by ``key``, in first-seen order, each group in the items' order."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


@frozen
class ChainEvent:
    """A finished chain job whose chain has not yet moved on: an outbox entry (spread layout).

    Settling a chain's job on a Redis Cluster takes two transactions, since the
    chain record and the next step's queue are in other slots than the job:
    the first settles the job and writes this event to the outbox of the job's
    queue; the second applies it to the chain record, then the next step's jobs
    are stored and the entry is deleted. Each part is idempotent, so whoever
    finds the entry later (a reserver's sweep) finishes what a dead settler left.
    """

    queue: str
    job_id: str
    field: str
    ref: ChainRef
    completed: bool
    result: Any = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float = 0.0
    at: float = 0.0
    result_sig: str | None = None

    @classmethod
    def of(cls, outcome: Completed | Failed, ref: ChainRef, now: float) -> ChainEvent:
        """The event of a chain job's accepted completion or failure, named by the job and its delivery."""
        job, token = outcome.delivery.job, outcome.delivery.token
        done = isinstance(outcome, Completed)
        return cls(
            queue=job.queue,
            job_id=job.id,
            field=f"{job.id}:{token}",
            ref=ref,
            completed=done,
            result=outcome.result if isinstance(outcome, Completed) else None,
            error=outcome.error if isinstance(outcome, Failed) else None,
            started_at=outcome.started_at if isinstance(outcome, Completed) else None,
            finished_at=outcome.finished_at if isinstance(outcome, Completed) else now,
            at=now,
            result_sig=outcome.result_sig if isinstance(outcome, Completed) else None,
        )

    def to_json(self) -> str:
        extra = {} if self.result_sig is None else {"rs": self.result_sig}
        return dumps(
            {
                **extra,
                "q": self.queue,
                "j": self.job_id,
                "c": self.ref.chain_id,
                "s": self.ref.step,
                "m": self.ref.member,
                "ok": self.completed,
                "r": self.result,
                "e": None if self.error is None else self.error.to_wire(),
                "sa": self.started_at,
                "fa": self.finished_at,
                "at": self.at,
            }
        )

    @classmethod
    def from_json(cls, field: str, raw: str) -> ChainEvent:
        data = loads(raw)
        return cls(
            queue=data["q"],
            job_id=data["j"],
            field=field,
            ref=ChainRef(chain_id=data["c"], step=data["s"], member=data["m"]),
            completed=bool(data["ok"]),
            result=data.get("r"),
            error=None if data.get("e") is None else ErrorInfo.from_wire(data["e"]),
            started_at=data.get("sa"),
            finished_at=float(data.get("fa") or 0.0),
            at=float(data.get("at") or 0.0),
            result_sig=data.get("rs"),
        )


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
        #: queues that got a job: added to the queue list (one-tag layout; the spread layout notes
        #: them before the transaction, the list being in another slot)
        self.seen: set[str] = set()

    def unlease(self, queue: str, job_id: str) -> None:
        self.unleased.setdefault(queue, []).append(job_id)

    def lease(self, queue: str, job_id: str, until: float) -> None:
        self.leased.setdefault(queue, {})[job_id] = until

    def flush(self, pipe: Pipe) -> None:
        for queue, ids in self.unleased.items():
            pipe.zrem(self.keys.leases(queue), *ids)
        for queue, mapping in self.leased.items():
            pipe.zadd(self.keys.leases(queue), mapping)
        self.seen.update(self.leased)
        if self.seen and not self.keys.spread:
            pipe.sadd(self.keys.queues, *sorted(self.seen))


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


class RedisOptions(TypedDict, total=False):
    """The constructor arguments every Redis backend takes (see :class:`RedisBackend`)."""

    prefix: str
    band_width: float | None
    url: str | None
    clock: Clock | None
    aging_interval: float
    owns_client: bool
    result_ttl: float | None
    eviction: str
    spread: bool | None


class RedisBackend(Backend):
    """The shared part of the Redis backends; subclasses add delivery (lists or streams).

    ``band_width`` is in aging intervals (the subclass's default when None);
    ``url`` is what errors and logs show (the subclass's scheme when None).
    """

    #: the URL scheme, shown when the backend was built from a client rather than a URL
    scheme = "redis"
    #: width of a priority band, in aging intervals, unless ``band_width`` (or ``?band=``) says otherwise
    default_band_width = 0.01
    #: job-hash fields a subclass needs in :meth:`_unlease` and :meth:`_release`, after token, deliveries
    settle_fields: tuple[str, ...] = ()
    #: error codes a command inside this backend's MULTI may answer without failing it
    tolerate: tuple[str, ...] = ()

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        band_width: float | None = None,
        url: str | None = None,
        clock: Clock | None = None,
        aging_interval: float = DEFAULT_AGING_INTERVAL,
        owns_client: bool = False,
        result_ttl: float | None = DEFAULT_RESULT_TTL,
        eviction: str = "warn",
        spread: bool | None = None,
    ) -> None:
        decode_tolerantly(client)  # a byte that is not UTF-8 reads as unreadable data, not an exception
        super().__init__(clock=clock or ServerClock(client), aging_interval=aging_interval)
        band_width = self.default_band_width if band_width is None else band_width
        if band_width <= 0:
            raise ValueError(f"band_width must be > 0 aging intervals, got {band_width!r}")
        #: width of a priority band, in aging intervals
        self.band_width = float(band_width)
        url = url or f"{self.scheme}://"
        if result_ttl is not None and result_ttl <= 0:
            raise ValueError(f"result_ttl must be > 0 seconds or None (keep forever), got {result_ttl!r}")
        #: seconds a succeeded job's record and a completed chain's record are kept (None: forever)
        self.result_ttl = result_ttl
        #: redis-py types its replies as sync/async unions; this client decodes to str, so it is used as Any
        self.client: Any = client
        #: where each transaction runs: the one server, or the master of its slot on a Cluster
        self.route: Route = (
            ClusterRoute(client) if isinstance(client, redis.cluster.RedisCluster) else Standalone(client)
        )
        cluster = isinstance(self.route, ClusterRoute)
        #: the spread layout (a hash tag per queue and per chain) is the Cluster's; on one server it
        #: can be asked for, which runs every Cluster code path on one node (tests)
        self.keys = Keys(prefix, spread=cluster if spread is None else spread)
        if cluster and not self.keys.spread:
            raise ConfigurationError("a Redis Cluster needs the spread key layout (spread=True)")
        self.url = url
        #: ``maxmemory-policy`` checked before the first submit or reservation (see jobchain_redis.safety)
        self.eviction = EvictionCheck(eviction, url, prefix)
        self._owns_client = owns_client
        self._resumed: set[str] = set()
        #: queues this backend has put in the queue list (spread layout: written apart, once)
        self._noted: set[str] = set()
        self._outbox_swept = time.monotonic()
        #: queues with a key of the wrong type (see :meth:`_guarded`): monotonic time to try them again
        self._blocked: dict[str, float] = {}

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def delete_everything(self) -> int:
        """Delete every key under this backend's prefix (tests, resets); return how many."""
        names = sorted(
            {
                name
                for pattern in self.keys.patterns
                for name in self.client.scan_iter(match=pattern, count=1000)
            }
        )
        for start in range(0, len(names), 1000):
            if self.keys.spread:  # keys of many slots: one DEL each, pipelined
                pipe = self.client.pipeline(transaction=False)
                for name in names[start : start + 1000]:
                    pipe.delete(name)
                pipe.execute()
            else:
                self.client.delete(*names[start : start + 1000])
        self._noted.clear()
        return len(names)

    def _transact(self, body: Callable[[Transaction], R], *, on: str) -> tuple[R, list[Any]]:
        """Run a WATCH/MULTI/EXEC ``body`` on the node holding key ``on`` (all keys it touches: its tag)."""
        return self.route.transact(on, body, tolerate=self.tolerate)

    def _multi(self, on: str, queue_writes: Callable[[Pipe], object]) -> list[Any]:
        """One MULTI/EXEC with no WATCH, on the node holding key ``on``; its results."""
        return self._transact(lambda tx: queue_writes(tx.multi()), on=on)[1]

    def _note_queues(self, queues: Iterable[str]) -> None:
        """Spread layout: add queues to the queue list before their first job is stored (another slot)."""
        if not self.keys.spread:
            return
        new = sorted(set(queues) - self._noted)
        if new:
            self.client.sadd(self.keys.queues, *new)
            self._noted.update(new)

    # --- keys of the wrong type ------------------------------------------------------

    def _open_queues(self, queues: Sequence[str]) -> list[str]:
        """``queues`` but those left out for a key of the wrong type (for ``BLOCK_WAIT`` seconds)."""
        if not self._blocked:
            return list(queues)
        now = time.monotonic()
        for queue in [q for q, until in self._blocked.items() if until <= now]:
            del self._blocked[queue]
        return [q for q in queues if q not in self._blocked]

    def _block(self, queue: str, key: str, operation: str) -> None:
        """Leave ``queue`` out of reservations for a while: ``key`` holds a type jobchain did not write."""
        self._blocked[queue] = time.monotonic() + BLOCK_WAIT
        logger.error(
            "redis_key_wrong_type",
            key=key,
            queue=queue,
            operation=operation,
            url=self.url,
            retry_in=BLOCK_WAIT,
            hint="the key holds a value of another type than jobchain's layout; rename or delete it",
        )

    def _guarded(self, queue: str, operation: str, step: Callable[[], R], key: str | None = None) -> R | None:
        """Run one queue's ``step``; on a key of the wrong type, block the queue (logged) and return None.

        The step failed before its EXEC (its reads under WATCH met the key), so
        nothing of it was applied; the other queues go on.
        """
        try:
            return step()
        except redis.ResponseError as exc:
            named = wrong_type(exc, key)
            if named is None:
                raise
            self._block(queue, named, operation)
            return None

    def _per_queue(
        self,
        queues: Sequence[str],
        replies: Sequence[Any],
        keys_of: Callable[[str], Sequence[str]],
        operation: str,
    ) -> tuple[list[str], list[Any]]:
        """Replies of a pipeline of ``len(keys_of(q))`` reads per queue, without the queues that met a
        key of the wrong type (blocked, logged): the queues kept and their replies."""
        kept: list[str] = []
        out: list[Any] = []
        at = 0
        for queue in queues:
            keys = keys_of(queue)
            chunk = list(replies[at : at + len(keys)])
            at += len(keys)
            failed = [(key, r) for key, r in zip(keys, chunk, strict=True) if isinstance(r, Exception)]
            if not failed:
                kept.append(queue)
                out += chunk
                continue
            key = wrong_type(failed[0][1], failed[0][0])
            if key is None:
                raise failed[0][1]
            self._block(queue, key, operation)
        return kept, out

    def _job_rows(self, rows: list[Any], width: int | None = None) -> list[Any]:
        """Job-hash rows read under WATCH (``tolerant``); a hash of the wrong type reads as a job not held.

        The delivery's outcome is then rejected as stale, or its lease not
        extended: the other jobs of the batch settle, and the bad one is filed
        when its lease runs out (see ``_park``). Any other error is raised.
        """
        out: list[Any] = []
        for row in rows:
            if isinstance(row, Exception):
                key = wrong_type(row)
                if key is None:
                    raise row
                logger.error(
                    "redis_key_wrong_type", key=key, url=self.url, hint="a job's hash holds another type"
                )
                row = [None] * (width or 1)
            out.append(row)
        return out

    def _park(self, pipe: Pipe, queue: str, job_id: str, now: float) -> None:
        """File a job whose hash is of the wrong type in the failed queue, without touching the hash."""
        logger.error(
            "redis_key_wrong_type",
            key=self.keys.job(job_id, queue),
            queue=queue,
            job_id=job_id,
            url=self.url,
            hint="the job's hash holds another type: filed in the failed queue; purge it to delete the key",
        )
        pipe.zrem(self.keys.leases(queue), job_id)
        pipe.zadd(self.keys.failed_in(queue), {job_id: now})

    @staticmethod
    def _wait_slice(tags: int, remaining: float) -> float:
        """Seconds a blocked reserver waits on one tag's wake-ups (BLPOP/XREAD keys share a slot)."""
        return max(0.01, min(remaining, WAKE_WAIT if tags == 1 else TAG_TURN))

    def _by_tag(self, items: Iterable[T], queue: Callable[[T], str]) -> list[list[T]]:
        """``items`` split into the groups one transaction can hold: the same queue tag."""
        return list(group_by(items, lambda item: self.keys.queue_tag(queue(item))).values())

    # --- what a subclass provides ------------------------------------------------------

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
        """Constructor arguments of the URL options a subclass reads (``band`` …)."""
        return {
            "band_width": number_option(
                own, "band", cls.default_band_width, "a band width in aging intervals"
            )
        }

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
    def _held_by(self, queues: Sequence[str], worker: str) -> list[tuple[str, str]]:
        """``(queue, job id)`` of the jobs the Redis data says ``worker`` holds in ``queues``.

        The queue is one whose tag the job's keys have (its processing list or
        PEL is there); in the one-tag layout any of ``queues``.
        """

    @staticmethod
    def _charge(pipe: Pipe, key: str, token: str | None, running: str | None) -> None:
        """Queue the writes of a lease that ended unsettled: a crash if the job ran under it."""
        if running is not None:
            pipe.hdel(key, "running")
            if running == token:
                pipe.hincrby(key, "crashes", 1)

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
        resumed: list[str] = []
        for group in self._by_tag(self._held_by(queues, worker), lambda held: held[0]):
            job_keys = [self.keys.job(j, q) for q, j in group]

            def body(
                tx: Transaction, group: list[tuple[str, str]] = group, job_keys: list[str] = job_keys
            ) -> list[str]:
                tx.watch(*job_keys)
                rows = tx.read(lambda r: [r.hmget(k, "worker", "queue") for k in job_keys])
                pipe = tx.multi()
                back = []
                for (_, job_id), (holder, queue) in zip(group, rows, strict=True):
                    if holder == worker and queue and decodable(queue):
                        pipe.zadd(self.keys.leases(queue), {job_id: 0}, xx=True)
                        back.append(job_id)
                return back

            resumed += self._transact(body, on=job_keys[0])[0]
        if resumed:
            logger.info("worker_resumed_its_jobs", worker=worker, jobs=len(resumed))

    # --- jobs ------------------------------------------------------------------------

    @boundary
    @refuse_oom
    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self.eviction.ensure(self.client)
        self._enqueue(jobs, chains, fresh=False)

    @boundary
    @refuse_oom
    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        """One MULTI/EXEC and no WATCH: the ids are fresh, so there is nothing to check (one round trip)."""
        self.eviction.ensure(self.client)
        self._enqueue(jobs, chains, fresh=True)

    def _enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord], *, fresh: bool) -> None:
        """Store ``jobs`` (and ``chains``); unless ``fresh``, leave out the ids that exist (under WATCH).

        In the spread layout the chain records are stored first (their own
        slots, ``SET NX``), then one transaction per queue tag: a batch is
        atomic per queue, and a retried batch stores only what is missing.
        """
        unique = list({job.id: job for job in reversed(jobs)}.values())[::-1]
        inline: Sequence[ChainRecord] = chains
        if self.keys.spread:
            self._note_queues(job.queue for job in unique)
            if chains:
                pipe = self.client.pipeline(transaction=False)
                for chain in chains:
                    pipe.set(self.keys.chain(chain.id), chain_to_json(chain), nx=True)
                pipe.execute()
            inline = ()
        groups = self._by_tag(unique, lambda job: job.queue) or ([[]] if inline else [])
        for group in groups:
            job_keys = [self.keys.job(job.id, job.queue) for job in group]
            on = job_keys[0] if job_keys else self.keys.queues

            def body(tx: Transaction, group: list[Job] = group, job_keys: list[str] = job_keys) -> None:
                if fresh and tx.attempt == 1:  # after a lost EXEC reply, check what was stored
                    self._store(tx.multi(), group, inline)
                    return
                tx.watch(*job_keys)
                exists = tx.read(lambda r: [r.exists(k) for k in job_keys]) if job_keys else []
                new = [job for job, known in zip(group, exists, strict=True) if not known]
                self._store(tx.multi(), new, inline)

            self._transact(body, on=on)

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
        fields = ("token", *self.settle_fields)
        held: dict[int, bool] = {}
        for group in self._by_tag(enumerate(deliveries), lambda item: item[1].job.queue):
            job_keys = [self.keys.job(d.job.id, d.job.queue) for _, d in group]

            def body(
                tx: Transaction, group: list[tuple[int, Delivery]] = group, job_keys: list[str] = job_keys
            ) -> list[bool]:
                tx.watch(*job_keys)
                read = tx.read(lambda r: [r.hmget(k, *fields) for k in job_keys], tolerant=True)
                rows = self._job_rows(read, len(fields))
                lease_until = self.now() + lease
                ok = [
                    row[0] is not None and row[0] == d.token for (_, d), row in zip(group, rows, strict=True)
                ]
                pipe = tx.multi()
                for (_, delivery), key, mine, row in zip(group, job_keys, ok, rows, strict=True):
                    if mine:
                        pipe.zadd(
                            self.keys.leases(delivery.job.queue), {delivery.job.id: lease_until}, xx=True
                        )
                        pipe.hset(key, "lease_until", repr(lease_until))
                        self._refresh(pipe, delivery, dict(zip(fields, row, strict=True)))
                return ok

            for (index, _), mine in zip(group, self._transact(body, on=job_keys[0])[0], strict=True):
                held[index] = mine
        return [held[i] for i in range(len(deliveries))]

    @boundary
    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Mark deliveries running (``running`` = token in the job hash) where their lease is held.

        Held means: the token is the job's current one and its lease (the score
        in the lease set) ends after the backend's now. One WATCH/MULTI/EXEC per
        queue tag. The lease expiry that finds a job still marked by its current
        token counts a crash (``crashes`` in the hash); a settlement ends the mark.
        """
        held: dict[int, bool] = {}
        for group in self._by_tag(enumerate(deliveries), lambda item: item[1].job.queue):
            job_keys = [self.keys.job(d.job.id, d.job.queue) for _, d in group]

            def body(
                tx: Transaction, group: list[tuple[int, Delivery]] = group, job_keys: list[str] = job_keys
            ) -> list[bool]:
                tx.watch(*job_keys)
                rows = tx.read(
                    lambda r: (
                        [r.hget(k, "token") for k in job_keys]
                        + [r.zscore(self.keys.leases(d.job.queue), d.job.id) for _, d in group]
                    )
                )
                tokens, scores = rows[: len(group)], rows[len(group) :]
                now = self.now()
                ok = [
                    token is not None and token == d.token and score is not None and float(score) > now
                    for (_, d), token, score in zip(group, tokens, scores, strict=True)
                ]
                pipe = tx.multi()
                for (_, delivery), key, mine in zip(group, job_keys, ok, strict=True):
                    if mine:
                        pipe.hset(key, "running", delivery.token)
                return ok

            for (index, _), mine in zip(group, self._transact(body, on=job_keys[0])[0], strict=True):
                held[index] = mine
        return [held[i] for i in range(len(deliveries))]

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
        if limit < 1 or not queues or self.keys.spread:
            # spread layout: a next step is stored by the second part of the transition (see ChainEvent)
            return self._settle(outcomes, None)
        return self._settle(outcomes, _Take(worker, frozenset(queues), lease, limit))

    def _settle(
        self, outcomes: Sequence[Outcome], take: _Take | None
    ) -> tuple[list[SettleResult], list[Delivery]]:
        if not outcomes:
            return [], []
        if not self.keys.spread:
            return self._settle_group(outcomes, take, None)
        results: dict[int, SettleResult] = {}
        events: list[tuple[int, ChainEvent]] = []
        for group in self._by_tag(enumerate(outcomes), lambda item: item[1].delivery.job.queue):
            found: list[ChainEvent] = []
            settled, _ = self._settle_group([o for _, o in group], None, found)
            for (index, _), result in zip(group, settled, strict=True):
                results[index] = result
            by_job = {event.job_id: event for event in found}
            events += [(i, by_job[o.delivery.job.id]) for i, o in group if o.delivery.job.id in by_job]
        for index, event in events:
            try:
                finished = self._advance(event)
            except redis.RedisError as exc:  # the outcome is stored; the outbox sweep finishes the chain
                logger.warning(
                    "chain_advance_deferred", job_id=event.job_id, chain_id=event.ref.chain_id, error=str(exc)
                )
                continue
            if finished is not None:
                results[index] = SettleResult(accepted=True, chain=finished)
        return [results[i] for i in range(len(outcomes))], []

    def _settle_group(
        self, outcomes: Sequence[Outcome], take: _Take | None, events: list[ChainEvent] | None
    ) -> tuple[list[SettleResult], list[Delivery]]:
        """Settle outcomes whose jobs share one tag, in one transaction.

        ``events`` is None in the one-tag layout: the chain records are read
        under WATCH and advanced in the same transaction. In the spread layout
        a finished chain job's event goes to its queue's outbox instead, and is
        appended to ``events`` for the caller to apply.
        """
        jobs = list({o.delivery.job.id: o.delivery.job for o in outcomes}.values())
        chain_ids = (
            []
            if events is not None
            else list(dict.fromkeys(j.chain.chain_id for j in jobs if j.chain is not None))
        )
        job_keys = [self.keys.job(j.id, j.queue) for j in jobs]
        watch = job_keys + [self.keys.chain(c) for c in chain_ids]
        fields = _SETTLE_FIELDS + self.settle_fields
        take_queues = sorted(take.queues) if take is not None and chain_ids else []

        def body(tx: Transaction) -> tuple[list[SettleResult], list[Delivery]]:
            tx.watch(*watch)
            now = self.now()
            if events is not None:
                events.clear()

            def reads(r: Pipe) -> None:
                for k in job_keys:
                    r.hmget(k, *fields)
                for c in chain_ids:
                    r.get(self.keys.chain(c))
                for q in take_queues:
                    self._most_urgent(r, q, now)

            rows = tx.read(reads, tolerant=True)
            n = len(jobs) + len(chain_ids)
            rows[: len(jobs)] = self._job_rows(rows[: len(jobs)], len(fields))
            for at, row in enumerate(rows[len(jobs) :], start=len(jobs)):
                if isinstance(row, Exception):
                    if at < n and wrong_type(row) is not None:  # a chain record of another type: as if gone
                        logger.error("redis_key_wrong_type", key=wrong_type(row), url=self.url)
                        rows[at] = None
                    else:
                        raise row
            urgent = rows[n:]
            held = {j.id: dict(zip(fields, row, strict=True)) for j, row in zip(jobs, rows, strict=False)}
            chains = {
                c: record
                for c, raw in zip(chain_ids, rows[len(jobs) : n], strict=True)
                if (record := _chain_or_none(c, raw)) is not None
            }
            before = dict(chains)
            pipe = tx.multi()
            writes = self._writes()
            if take is not None:
                take.start({q: (urgent[2 * i], urgent[2 * i + 1]) for i, q in enumerate(take_queues)})
            results = [
                self._apply(pipe, writes, outcome, held, chains, now, take, events) for outcome in outcomes
            ]
            for chain_id, record in chains.items():
                if record is not before[chain_id]:
                    pipe.set(self.keys.chain(chain_id), chain_to_json(record))
                    if record.state is ChainState.COMPLETED:
                        self._expire(pipe, self.keys.chain(chain_id))
            writes.flush(pipe)
            return results, list(take.taken) if take is not None else []

        return self._transact(body, on=job_keys[0])[0]

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
            self.keys.job(job.id, job.queue),
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
        return Delivery(
            job=job, token=token, lease_until=until, worker=take.worker, delivery_count=1, crashes=0
        )

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
        events: list[ChainEvent] | None = None,
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
        key = self.keys.job(job.id, job.queue)
        drop = self._unlease(pipe, writes, job, delivery.worker, row, done=not isinstance(outcome, Released))
        drop.append("running")  # the mark ends with the delivery
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
            pipe.hdel(key, "error", "deliveries", "crashes", *drop)
            self._expire(pipe, key)
            if job.chain is not None and events is not None:
                return self._to_outbox(pipe, events, ChainEvent.of(outcome, job.chain, now))
            if record is None or job.chain is None:
                return SettleResult(accepted=True)
            updated, following = workflow.apply_completed(
                record,
                job.chain,
                outcome.result,
                started_at=outcome.started_at,
                finished_at=outcome.finished_at,
                now=now,
                result_sig=outcome.result_sig,
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
            pipe.hdel(key, "crashes", *drop)
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
            pipe.hdel(key, "deliveries", "crashes", *drop)
            pipe.zadd(self.keys.failed_in(job.queue), {job.id: now})
            if job.chain is not None and events is not None:
                return self._to_outbox(pipe, events, ChainEvent.of(outcome, job.chain, now))
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

    def _to_outbox(self, pipe: Pipe, events: list[ChainEvent], event: ChainEvent) -> SettleResult:
        pipe.hset(self.keys.outbox(event.queue), event.field, event.to_json())
        events.append(event)
        return SettleResult(accepted=True)

    # --- the chain transition's second part (spread layout) ---------------------------

    def _advance(self, event: ChainEvent) -> ChainRecord | None:
        """Apply a finished job's event to its chain, store the jobs then due, drop the outbox entry.

        Idempotent at every step: the chain record ignores an event it has
        (:mod:`jobchain.workflow`); the due jobs are derived from the record,
        not from the event, so a second pass finds the same ones, and storing
        them leaves out the ids that exist. Returns the record when this event
        finished the chain (completed or halted), for the settle's result.
        """
        key = self.keys.chain(event.ref.chain_id)

        def body(tx: Transaction) -> tuple[ChainRecord | None, list[Job]]:
            tx.watch(key)
            [raw] = tx.read(lambda r: r.get(key))
            stored = _chain_or_none(event.ref.chain_id, raw)
            if stored is None:
                return None, []  # expired, never stored, or unreadable
            now = self.now()
            record = before = stored
            if event.completed:
                record, _ = workflow.apply_completed(
                    record,
                    event.ref,
                    event.result,
                    started_at=event.started_at,
                    finished_at=event.finished_at,
                    now=now,
                    result_sig=event.result_sig,
                )
                due = workflow.due_after(record, event.ref.step, now)
            else:
                assert event.error is not None
                record = workflow.apply_failed(record, event.ref, event.error, now=now)
                due = []
            if record is before:
                return None, due
            pipe = tx.multi()
            pipe.set(key, chain_to_json(record))
            if record.state is ChainState.COMPLETED:
                self._expire(pipe, key)
            return (record if record.finished and not before.finished else None), due

        finished, due = self._transact(body, on=key)[0]
        if due:
            self._enqueue(due, (), fresh=False)
        self.client.hdel(self.keys.outbox(event.queue), event.field)
        return finished

    def _sweep_outboxes(self, queues: Sequence[str]) -> None:
        """Finish the chain transitions a settler left in ``queues``' outboxes (every OUTBOX_SWEEP s)."""
        if not self.keys.spread or time.monotonic() - self._outbox_swept < OUTBOX_SWEEP:
            return
        self._outbox_swept = time.monotonic()
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hgetall(self.keys.outbox(queue))
        now = self.now()
        for entries in pipe.execute():
            for field, raw in entries.items():
                try:
                    event = ChainEvent.from_json(field, raw)
                except (ValueError, KeyError, TypeError) as exc:
                    logger.error("outbox_entry_unreadable", field=field, error=str(exc))
                    continue
                if now - event.at >= OUTBOX_GRACE:
                    logger.info("chain_advance_resumed", job_id=event.job_id, chain_id=event.ref.chain_id)
                    self._advance(event)

    def _expire(self, pipe: Pipe, key: str) -> None:
        """Let a finished record go after ``result_ttl`` (bounded memory; failed jobs stay until purged)."""
        if self.result_ttl is not None:
            pipe.pexpire(key, int(self.result_ttl * 1000))

    # --- records ---------------------------------------------------------------------

    @boundary
    def get_job(self, job_id: str) -> JobRecord | None:
        pipe = self.client.pipeline(transaction=False)
        queues = sorted(self.client.smembers(self.keys.queues)) if self.keys.spread else [None]
        for queue in queues:  # spread layout: the key depends on the queue, so look in each
            pipe.hgetall(self.keys.job(job_id, queue))
        replies = pipe.execute(raise_on_error=False)
        for queue, reply in zip(queues, replies, strict=True):
            key = wrong_type(reply, self.keys.job(job_id, queue))
            if key is not None:
                return JobRecord(
                    job=_placeholder(job_id, queue, 0.0),
                    state=JobState.FAILED,
                    error=ErrorInfo(
                        type="UnreadableJob", message=_wrong_type_message(key), attempt=1, at=0.0
                    ),
                )
            if isinstance(reply, Exception):
                raise reply
        raw: dict[str, str] = next((found for found in replies if found and "job" in found), {})
        if not raw or "job" not in raw:
            return None
        return _record(job_id, raw)

    @boundary
    def get_chain(self, chain_id: str) -> ChainRecord | None:
        raw = self.client.get(self.keys.chain(chain_id))
        if raw is None:
            return None
        try:
            return chain_from_json(raw)
        except UNREADABLE as exc:
            raise BackendError(f"the record of chain {chain_id} cannot be read: {exc}") from None

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
        raw = None if raw is None else keepable(raw)
        placeholder = Job(id=job_id, task=UNREADABLE_TASK, queue=queue, enqueued_at=now)
        error = ErrorInfo(type="UnreadableJob", message=reason, attempt=1, at=now)
        key = self.keys.job(job_id, queue)
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
        pipe.zadd(self.keys.failed_in(queue), {job_id: now})
        if not self.keys.spread:
            pipe.sadd(self.keys.queues, queue)

    # --- failed queue ----------------------------------------------------------------

    def _queues(self) -> list[str]:
        return sorted(self.client.smembers(self.keys.queues))

    def _where_failed(self, job_ids: Sequence[str]) -> list[tuple[str, str, float]]:
        """``(queue, job id, failed_at)`` of those of ``job_ids`` in the failed queue, in their order."""
        queues = self._queues()
        if not job_ids or not queues:
            return []
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            for queue in queues:
                pipe.zscore(self.keys.failed_in(queue), job_id)
        scores = iter(pipe.execute())
        found: list[tuple[str, str, float]] = []
        for job_id in job_ids:
            hits = [(q, score) for q in queues if (score := next(scores)) is not None]
            if hits:
                queue, score = hits[0]
                found.append((queue, job_id, score))
        return found

    def _entries(self, scored: Sequence[tuple[str, str, float]]) -> list[FailedEntry]:
        pipe = self.client.pipeline(transaction=False)
        for queue, job_id, _ in scored:
            pipe.hmget(self.keys.job(job_id, queue), "job", "error", "raw")
        out: list[FailedEntry] = []
        for (queue, job_id, failed_at), reply in zip(scored, pipe.execute(raise_on_error=False), strict=True):
            key = wrong_type(reply, self.keys.job(job_id, queue))
            if key is not None:
                out.append(
                    FailedEntry(
                        job=_placeholder(job_id, queue, failed_at),
                        error=ErrorInfo(
                            type="UnreadableJob", message=_wrong_type_message(key), attempt=1, at=failed_at
                        ),
                        failed_at=failed_at,
                    )
                )
                continue
            if isinstance(reply, Exception):
                raise reply
            payload, error, raw = reply
            if payload is None or error is None:
                continue
            try:
                out.append(
                    FailedEntry(
                        job=parse_job(payload),
                        error=ErrorInfo.from_wire(loads(error)),
                        failed_at=failed_at,
                        raw=raw if raw is None or decodable(raw) else keepable(raw),
                    )
                )
            except UNREADABLE as exc:  # changed since it failed: listed as unreadable, with what is stored
                logger.warning("failed_entry_unreadable", job_id=_printable(job_id), error=str(exc))
                stored = dumps({"job": payload, "error": error, "raw": raw})
                out.append(
                    FailedEntry(
                        job=_placeholder(job_id, queue, failed_at),
                        error=ErrorInfo(type="UnreadableJob", message=str(exc), attempt=1, at=failed_at),
                        failed_at=failed_at,
                        raw=keepable(stored),
                    )
                )
        return out

    @boundary
    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        """The failed queue, oldest failure first: the queues' failed sets merged by time."""
        if limit <= 0:
            return []
        queues = self._queues()
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.zrange(self.keys.failed_in(queue), 0, offset + limit - 1, withscores=True)
        merged = sorted(
            (score, job_id, queue)
            for queue, scored in zip(queues, pipe.execute(), strict=True)
            for job_id, score in scored
        )
        return self._entries([(q, j, score) for score, j, q in merged[offset : offset + limit]])

    @boundary
    def get_failed(self, job_id: str) -> FailedEntry | None:
        entries = self._entries(self._where_failed([job_id]))
        return entries[0] if entries else None

    @boundary
    @refuse_oom
    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        """Put failed jobs back in their queues; a chain's failed step resumes its chain.

        One transaction per queue tag. In the one-tag layout it also advances
        the chain records; in the spread layout the chains are re-opened first,
        each in its own transaction, so a crash in between leaves a chain
        running with its job still failed, which re-driving again completes.
        """
        ids = list(dict.fromkeys(job_ids))
        found = self._where_failed(ids)
        present = {j for _, j, _ in found}
        missing = [j for j in ids if j not in present]
        if missing:  # checked before anything moves
            raise NotInFailedQueueError(missing)
        # Race: an entry purged (or re-driven) by another client between the check above and its
        # group's transaction below is skipped there (the transaction re-reads the failed set under
        # WATCH), so the ids returned lack it while the others move: a partial re-drive that the
        # App reports as NotInFailedQueueError with .moved set.
        moved: list[str] = []
        for group in self._by_tag(found, lambda found: found[0]):
            moved += self._redrive_group([(q, j) for q, j, _ in group])
        return moved

    def _redrive_group(self, group: Sequence[tuple[str, str]]) -> list[str]:
        ids = [j for _, j in group]
        job_keys = [self.keys.job(j, q) for q, j in group]
        failed_sets = sorted({self.keys.failed_in(q) for q, _ in group})
        spread = self.keys.spread
        if spread:
            self._reopen_chains(job_keys)

        def body(tx: Transaction) -> list[str]:
            tx.watch(*failed_sets, *job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(self.keys.failed_in(q), j) for q, j in group]
                    + [r.hmget(k, "job", "raw") for k in job_keys]
                )
            )
            scores, raws = rows[: len(ids)], rows[len(ids) :]
            jobs = {
                j: job
                for j, score, (payload, unreadable) in zip(ids, scores, raws, strict=True)
                if score is not None and unreadable is None and (job := _job_or_none(payload)) is not None
            }
            chain_ids = (
                []
                if spread
                else list(dict.fromkeys(j.chain.chain_id for j in jobs.values() if j.chain is not None))
            )
            tx.watch(*[self.keys.chain(c) for c in chain_ids])
            stored = tx.read(lambda r: [r.get(self.keys.chain(c)) for c in chain_ids]) if chain_ids else []
            chains = {
                c: record
                for c, s in zip(chain_ids, stored, strict=True)
                if (record := _chain_or_none(c, s)) is not None
            }
            now = self.now()
            pipe = tx.multi()
            writes = self._writes()
            moved: list[str] = []
            for job_id, old in jobs.items():
                job = evolve(old, attempt=1, not_before=None, enqueued_at=now)
                if old.expires_at is not None:
                    job = evolve(job, expires_at=now + old.expires_at - old.enqueued_at)
                pipe.delete(self.keys.job(job_id, job.queue))
                self._place(pipe, writes, job, now, front=False)
                pipe.zrem(self.keys.failed_in(job.queue), job_id)
                if job.chain is not None and job.chain.chain_id in chains:
                    record = chains[job.chain.chain_id]
                    chains[record.id] = workflow.apply_redrive(record, job.chain)
                moved.append(job_id)
            for chain_id, record in chains.items():
                pipe.set(self.keys.chain(chain_id), chain_to_json(record))
            writes.flush(pipe)
            return moved

        return self._transact(body, on=job_keys[0])[0]

    def _reopen_chains(self, job_keys: Sequence[str]) -> None:
        """Spread layout: re-open the chains of failed jobs about to be re-driven (each chain's own slot)."""
        reader = self.client.pipeline(transaction=False)
        for key in job_keys:
            reader.hmget(key, "job", "raw")
        refs = [
            job.chain
            for payload, unreadable in reader.execute()
            if unreadable is None and (job := _job_or_none(payload)) is not None and job.chain is not None
        ]
        for ref in refs:
            key = self.keys.chain(ref.chain_id)

            def body(tx: Transaction, key: str = key, ref: ChainRef = ref) -> None:
                tx.watch(key)
                [raw] = tx.read(lambda r: r.get(key))
                record = _chain_or_none(ref.chain_id, raw)
                if record is None:
                    return
                updated = workflow.apply_redrive(record, ref)
                if updated is not record:
                    tx.multi().set(key, chain_to_json(updated))

            self._transact(body, on=key)

    @boundary
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        if job_ids is None:
            pipe = self.client.pipeline(transaction=False)
            queues = self._queues()
            for queue in queues:
                pipe.zrange(self.keys.failed_in(queue), 0, -1)
            found = [(q, j) for q, ids in zip(queues, pipe.execute(), strict=True) for j in ids]
        else:
            found = [(q, j) for q, j, _ in self._where_failed(list(dict.fromkeys(job_ids)))]
        return sum(self._purge_group(group) for group in self._by_tag(found, lambda item: item[0]))

    def _purge_group(self, group: Sequence[tuple[str, str]]) -> int:
        job_keys = [self.keys.job(j, q) for q, j in group]
        failed_sets = sorted({self.keys.failed_in(q) for q, _ in group})

        def body(tx: Transaction) -> int:
            # WATCH: a job re-driven meanwhile has a live hash that must not be deleted
            tx.watch(*failed_sets, *job_keys)
            scores = tx.read(lambda r: [r.zscore(self.keys.failed_in(q), j) for q, j in group])
            gone = [(q, j) for (q, j), score in zip(group, scores, strict=True) if score is not None]
            if not gone:
                return 0
            pipe = tx.multi()
            for queue, job_id in gone:
                pipe.zrem(self.keys.failed_in(queue), job_id)
                pipe.delete(self.keys.job(job_id, queue))
            return len(gone)

        return self._transact(body, on=job_keys[0])[0]

    # --- workers ---------------------------------------------------------------------

    def _holder(self, tx: Transaction, name: str) -> tuple[WorkerInfo | None, float | None]:
        """WATCH the registration of ``name`` and read it: who holds the name, until when."""
        worker_key = self.keys.worker(name)
        tx.watch(self.keys.workers, worker_key)
        until, raw = tx.read(lambda r: (r.zscore(self.keys.workers, name), r.get(worker_key)))
        return (None if raw is None else WorkerInfo.from_wire(loads(raw))), until

    @boundary
    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        # WATCH: two workers claiming a free name at once cannot both succeed
        now = self.now()

        def body(tx: Transaction) -> None:
            holder, until = self._holder(tx, info.name)
            live = until is not None and until > now
            taken = name_taken(holder, live, info)
            if taken is not None:
                raise taken
            pipe = tx.multi()
            if holder is None or not live or holder.instance != info.instance:
                pipe.srem(self.keys.stop, info.name)  # a stop request for the name's last holder
            pipe.set(self.keys.worker(info.name), dumps(info.to_wire()))
            pipe.zadd(self.keys.workers, {info.name: now + ttl})
            pipe.sismember(self.keys.stop, info.name)

        return bool(self._transact(body, on=self.keys.workers)[1][-1])

    @boundary
    def remove_worker(self, name: str, instance: str | None = None) -> None:
        def body(tx: Transaction) -> None:
            if instance is not None:
                holder, _ = self._holder(tx, name)
                if holder is None or holder.instance != instance:
                    return  # another worker holds the name now: its registration stays
            pipe = tx.multi()
            pipe.zrem(self.keys.workers, name)
            pipe.delete(self.keys.worker(name))
            pipe.srem(self.keys.stop, name)

        self._transact(body, on=self.keys.workers)

    @boundary
    def workers(self) -> list[WorkerInfo]:
        names = self.client.zrangebyscore(self.keys.workers, f"({self.now()!r}", "+inf")
        if not names:
            return []
        raws = self.client.mget([self.keys.worker(n) if decodable(n) else "" for n in names])
        infos = [_worker_info(name, raw) for name, raw in zip(names, raws, strict=True)]
        return sorted((i for i in infos if i is not None), key=lambda i: i.name)

    @boundary
    def request_stop(self, name: str) -> bool:
        until = self.client.zscore(self.keys.workers, name)
        if until is None or until <= self.now():
            return False
        self.client.sadd(self.keys.stop, name)
        return True


def _float(raw: str | None) -> float | None:
    return None if raw is None else float(raw)


def _record(job_id: str, raw: dict[str, str]) -> JobRecord:
    """A job's record from its hash; a hash that cannot be read is shown as a failed unreadable job."""
    try:
        error = raw.get("error")
        result = raw.get("result")
        return JobRecord(
            job=parse_job(raw["job"]),
            state=JobState(raw.get("state", JobState.QUEUED.value)),
            result=None if result is None else loads(result),
            error=None if error is None else ErrorInfo.from_wire(loads(error)),
            started_at=_float(raw.get("started_at")),
            finished_at=_float(raw.get("finished_at")),
        )
    except UNREADABLE as exc:
        bad = sorted(_printable(k) for k, v in raw.items() if not decodable(k) or not decodable(v))
        reason = f"field {', '.join(bad)} is not valid UTF-8" if bad else str(exc)
        return JobRecord(
            job=_placeholder(job_id, raw.get("queue"), 0.0),
            state=JobState.FAILED,
            error=ErrorInfo(type="UnreadableJob", message=reason, attempt=1, at=0.0),
        )


def _wrong_type_message(key: str) -> str:
    return f"Redis key {key!r} holds a value of the wrong type (not a hash): it was not written by jobchain"


def _job_or_none(raw: str | None) -> Job | None:
    try:
        return parse_job(raw)
    except UNREADABLE:
        return None


def _printable(text: str) -> str:
    """``text`` with the bytes that were not UTF-8 shown as U+FFFD (for messages and listings)."""
    return text if decodable(text) else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _placeholder(job_id: str, queue: str | None, at: float) -> Job:
    """The stand-in job of an unreadable one (task :data:`UNREADABLE_TASK`), as the failed queue shows it."""
    queue = queue if queue and decodable(queue) else "default"
    return Job(id=_printable(job_id), task=UNREADABLE_TASK, queue=queue, enqueued_at=at)


def _worker_info(name: str, raw: str | None) -> WorkerInfo | None:
    """A worker's registration; one that cannot be read is listed with its name and state ``unreadable``."""
    if raw is None:
        return None
    try:
        return WorkerInfo.from_wire(loads(raw))
    except UNREADABLE as exc:
        logger.warning("worker_registration_unreadable", worker=_printable(name), error=str(exc))
        return WorkerInfo(
            name=_printable(name),
            host="?",
            pid=0,
            queues=(),
            started_at=0.0,
            heartbeat_at=0.0,
            state="unreadable",
        )
