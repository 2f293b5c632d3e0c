"""The Redis backend, assembled from shared parts and one layout (lists or streams).

:class:`RedisBackend` is an assembly: every operation is one of its parts,
each holding the same :class:`~jobchain_redis._store.Store` (client, route,
keys, clock) and the backend's :class:`~jobchain_redis._layout.Layout`, which
says how ready jobs are stored, taken, leased and let go:

==============================  ==============================================================
part                            operations
==============================  ==============================================================
:mod:`._enqueue`                ``enqueue``, ``enqueue_new``
:mod:`._reserve`                ``reserve``: the loop (wait, wake-ups, tag turns, resuming)
:mod:`._leases`                 ``extend``, ``mark_running``
:mod:`._settlement`             ``settle``, ``settle_and_take`` (chain steps, hand-off)
:mod:`._outbox`                 the Cluster outbox: a chain's second transaction
:mod:`._failed`                 ``failed``, ``get_failed``, ``redrive``, ``purge_failed``
:mod:`._records`                ``get_job``, ``get_chain``, the worker registry
:mod:`._paused`                 ``pause``, ``resume``, ``paused`` (the reserve loop's filter)
:mod:`._schedules`              ``mark_slot``, ``schedule_states``, ``pause_schedule``, ``resume_schedule``
:mod:`._unique`                 ``enqueue_unique`` (a settlement frees a finished job's key)
:mod:`._cancel`                 ``cancel``, ``cancel_requested``, ``purge``
layout (``lists``/``streams``)  ``stats``, and the structure the parts call
==============================  ==============================================================

:class:`~jobchain_redis.lists.ListsBackend` and
:class:`~jobchain_redis.streams.StreamsBackend` are this class with their layout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Self, TypedDict

import redis
import redis.cluster

from jobchain.aging import DEFAULT_AGING_INTERVAL
from jobchain.backend import Backend
from jobchain.capabilities import AsyncClient, CancelReport, JobPage, ScheduleState
from jobchain.clock import Clock
from jobchain.errors import ConfigurationError
from jobchain.model import (
    ChainRecord,
    Delivery,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    Outcome,
    QueueStats,
    SettleResult,
    WorkerInfo,
)
from jobchain_redis._aio import AsyncRedis, async_boundary
from jobchain_redis._browse import Browser
from jobchain_redis._cancel import Canceller
from jobchain_redis._enqueue import Enqueuer
from jobchain_redis._failed import FailedQueue
from jobchain_redis._guard import COUNT_TOLERATE, QueueGuard
from jobchain_redis._layout import Layout, Writes
from jobchain_redis._leases import Leases
from jobchain_redis._limits import RedisLimits
from jobchain_redis._outbox import OUTBOX_GRACE, OUTBOX_SWEEP, ChainEvent, Outbox
from jobchain_redis._paused import PausedQueues
from jobchain_redis._reading import UNREADABLE, parse_job
from jobchain_redis._records import Records
from jobchain_redis._reserve import Reserver
from jobchain_redis._schedules import Schedules
from jobchain_redis._settlement import Settlement, Take
from jobchain_redis._store import Store
from jobchain_redis._unique import Uniques
from jobchain_redis.connection import (
    ClusterRoute,
    Route,
    ServerClock,
    Standalone,
    boundary,
    connect,
    decode_tolerantly,
    number_option,
    parse_url,
)
from jobchain_redis.keys import DEFAULT_PREFIX, Keys
from jobchain_redis.safety import EvictionCheck, refuse_oom

__all__ = [
    "COUNT_TOLERATE",
    "DEFAULT_RESULT_TTL",
    "OUTBOX_GRACE",
    "OUTBOX_SWEEP",
    "UNREADABLE",
    "ChainEvent",
    "LayoutFactory",
    "RedisBackend",
    "RedisOptions",
    "Writes",
    "parse_job",
    "result_ttl_option",
]

#: how long the record of a succeeded job or a completed chain is kept: one day
DEFAULT_RESULT_TTL = 86_400.0

#: what builds a backend's layout from the store and the queue guard it shares with the other parts
LayoutFactory = Callable[[Store, QueueGuard], Layout]


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


class RedisBackend(Backend, RedisLimits, AsyncClient):
    """A Redis backend: the shared parts around ``layout`` (see the module docstring).

    ``band_width`` is in aging intervals (the class's default when None);
    ``url`` is what errors and logs show (the class's scheme when None).
    """

    #: the URL scheme, shown when the backend was built from a client rather than a URL
    scheme = "redis"
    #: width of a priority band, in aging intervals, unless ``band_width`` (or ``?band=``) says otherwise
    default_band_width = 0.01

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        layout: LayoutFactory,
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
        store = Store(
            client,
            route=self.route,
            keys=self.keys,
            url=url,
            now=self.now,
            aging_interval=self.aging_interval,
            band_width=self.band_width,
            result_ttl=result_ttl,
        )
        self._store = store
        self._guard = QueueGuard(self.keys, url)
        self._layout = layout(store, self._guard)
        store.tolerate = self._layout.tolerate
        self._enqueuer = Enqueuer(store, self._layout)
        self._outbox = Outbox(store, self._enqueuer)
        self._paused = PausedQueues(store)
        self._reserver = Reserver(store, self._layout, self._outbox, self.eviction, self._paused)
        self._leases = Leases(store, self._layout, self._guard)
        self._settlement = Settlement(store, self._layout, self._guard, self._outbox)
        self._failed = FailedQueue(store, self._layout)
        self._records = Records(store)
        self._browser = Browser(store, self._layout)
        self._uniques = Uniques(store, self._layout)
        self._canceller = Canceller(store, self._layout, self._outbox)
        self._schedules = Schedules(store)
        #: the asyncio clients (one per event loop) of the AsyncClient capability
        self._aio = AsyncRedis(client)

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
        """Constructor arguments of the URL options a backend class reads (``band`` …)."""
        return {
            "band_width": number_option(
                own, "band", cls.default_band_width, "a band width in aging intervals"
            )
        }

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # --- the asyncio client (see jobchain_redis._aio) ------------------------------------

    def serves_async(self) -> bool:
        """True on one server (or fakeredis); a Sentinel or Cluster client is served by the App's threads."""
        return self._aio.serves()

    async def _now_async(self, client: Any) -> float:
        clock = self.clock
        if isinstance(clock, ServerClock):
            return await clock.now_async(client)
        return self.now()  # an injected clock (tests): no I/O

    async def _enqueue_async(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], *, fresh: bool
    ) -> None:
        client = await self._aio.client()
        if not self.eviction.checked:  # once per backend: CONFIG GET, off the loop
            await asyncio.to_thread(self.eviction.ensure, self.client)
        self.eviction.ensure(self.client)  # checked: raises the refusal under eviction=refuse, no I/O
        now = await self._now_async(client)
        await self._enqueuer.enqueue_async(client, jobs, chains, fresh=fresh, now=now)

    @async_boundary
    async def enqueue_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        await self._enqueue_async(jobs, chains, fresh=False)

    @async_boundary
    async def enqueue_new_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        await self._enqueue_async(jobs, chains, fresh=True)

    @async_boundary
    async def get_job_async(self, job_id: str) -> JobRecord | None:
        return await self._records.get_job_async(await self._aio.client(), job_id)

    @async_boundary
    async def get_chain_async(self, chain_id: str) -> ChainRecord | None:
        return await self._records.get_chain_async(await self._aio.client(), chain_id)

    async def close_async(self) -> None:
        await self._aio.close()

    def delete_everything(self) -> int:
        """Delete every key under this backend's prefix (tests, resets); return how many."""
        return self._store.delete_everything()

    def _band(self, job: Job) -> int:
        """The band a ready job belongs in: its static aging key cut into ``band_width`` slices."""
        return self._store.band(job)

    # --- jobs ------------------------------------------------------------------------

    @boundary
    @refuse_oom
    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self.eviction.ensure(self.client)
        self._enqueuer.enqueue(jobs, chains, fresh=False)

    @boundary
    @refuse_oom
    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        """One MULTI/EXEC and no WATCH: the ids are fresh, so there is nothing to check (one round trip)."""
        self.eviction.ensure(self.client)
        self._enqueuer.enqueue(jobs, chains, fresh=True)

    @boundary
    @refuse_oom
    def enqueue_unique(
        self, jobs: Sequence[Job], keys: Sequence[str], *, hold: float | None = None
    ) -> list[str]:
        """One WATCH/MULTI/EXEC per queue tag (a second read when a key's holder must be checked)."""
        self.eviction.ensure(self.client)
        return self._uniques.enqueue_unique(jobs, keys, hold)

    @boundary
    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        return self._reserver.reserve(queues, limit=limit, lease=lease, worker=worker, wait=wait)

    @boundary
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        return self._leases.extend(deliveries, lease)

    @boundary
    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Mark deliveries running where their lease is held (see :meth:`Leases.mark_running`)."""
        return self._leases.mark_running(deliveries)

    @boundary
    @refuse_oom
    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        return self._settlement.settle(outcomes, None)[0]

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
            return self._settlement.settle(outcomes, None)
        serving = self._paused.handing_off(queues)  # never hand off a step of a paused queue
        if not serving:
            return self._settlement.settle(outcomes, None)
        return self._settlement.settle(outcomes, Take(worker, frozenset(serving), lease, limit))

    # --- records ---------------------------------------------------------------------

    @boundary
    def get_job(self, job_id: str) -> JobRecord | None:
        return self._records.get_job(job_id)

    @boundary
    def get_chain(self, chain_id: str) -> ChainRecord | None:
        return self._records.get_chain(chain_id)

    @boundary
    def stats(self) -> list[QueueStats]:
        return self._layout.stats()

    # --- browsing --------------------------------------------------------------------

    @boundary
    def browse(
        self,
        *,
        queue: str,
        state: JobState,
        task: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> JobPage:
        """A page of ``queue``'s jobs in ``state`` (see :mod:`jobchain_redis._browse` for the cost)."""
        return self._browser.browse(
            queue=queue, state=state, task=task, limit=limit, cursor=cursor, oldest_first=oldest_first
        )

    @boundary
    def counts(self, queue: str) -> dict[JobState, int]:
        return self._browser.counts(queue)

    # --- failed queue ----------------------------------------------------------------

    @boundary
    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        """The failed queue, oldest failure first: the queues' failed sets merged by time."""
        return self._failed.failed(limit=limit, offset=offset)

    @boundary
    def get_failed(self, job_id: str) -> FailedEntry | None:
        return self._failed.get_failed(job_id)

    @boundary
    @refuse_oom
    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        """Put failed jobs back in their queues; a chain's failed step resumes its chain."""
        return self._failed.redrive(job_ids)

    @boundary
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        return self._failed.purge(job_ids)

    # --- cancelling ------------------------------------------------------------------

    @boundary
    def cancel(self, job_ids: Sequence[str]) -> CancelReport:
        """Withdraw waiting jobs (one transaction per tag and batch), ask running ones to stop."""
        return self._canceller.cancel(job_ids)

    @boundary
    def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        return self._canceller.cancel_requested(job_ids)

    @boundary
    def purge(self, queue: str) -> int:
        return self._canceller.purge(queue)

    # --- schedule slots --------------------------------------------------------------

    @boundary
    def mark_slot(self, schedule: str, slot: float, job_id: str) -> None:
        self._schedules.mark_slot(schedule, slot, job_id)

    @boundary
    def schedule_states(self, names: Sequence[str]) -> list[ScheduleState]:
        return self._schedules.schedule_states(names)

    @boundary
    def pause_schedule(self, name: str) -> None:
        self._schedules.pause_schedule(name)

    @boundary
    def resume_schedule(self, name: str) -> None:
        self._schedules.resume_schedule(name)

    # --- paused queues ---------------------------------------------------------------

    @boundary
    def pause(self, queues: Sequence[str]) -> None:
        """Add the queues to the paused set (reservers everywhere see it within half a second)."""
        self._paused.pause(queues)

    @boundary
    def resume(self, queues: Sequence[str]) -> None:
        self._paused.resume(queues)

    @boundary
    def paused(self) -> list[str]:
        return self._paused.paused()

    # --- workers ---------------------------------------------------------------------

    @boundary
    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        return self._records.heartbeat(info, ttl)

    @boundary
    def remove_worker(self, name: str, instance: str | None = None) -> None:
        self._records.remove_worker(name, instance)

    @boundary
    def workers(self) -> list[WorkerInfo]:
        return self._records.workers()

    @boundary
    def request_stop(self, name: str) -> bool:
        return self._records.request_stop(name)
