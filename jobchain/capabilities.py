"""The optional parts of the backend contract, and how the core asks for them.

A backend implements the required core (:class:`jobchain.backend.Backend`)
and declares each optional capability it has by inheriting its class::

    class MemoryBackend(Backend, FailedQueue, WorkerRegistry, Stats): ...

Every method of a capability is abstract: a backend that declares one
implements all of it, and its test class runs that capability's part of the
conformance suite (:mod:`jobchain.testing.suite`). The core never calls a
capability method on a backend without asking first, with :func:`supports`
(to do without it) or :func:`require` (which raises
:class:`~jobchain.errors.NotSupportedError`, never ``AttributeError``).

Implemented today: :class:`FailedQueue`, :class:`WorkerRegistry`,
:class:`Stats`, :class:`Pause`, :class:`Browse`, :class:`Uniqueness`,
:class:`Cancel`, :class:`ScheduleSlots`, :class:`RateLimits`,
:class:`ConcurrencyLimits`, :class:`AsyncClient`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

from attrs import frozen

from jobchain.errors import NotSupportedError
from jobchain.model import ChainRecord, FailedEntry, Job, JobRecord, JobState, QueueStats, WorkerInfo

if TYPE_CHECKING:
    from jobchain.backend import Backend

__all__ = [
    "ALL",
    "AsyncClient",
    "Browse",
    "Cancel",
    "CancelReport",
    "Capability",
    "ConcurrencyLimits",
    "FailedQueue",
    "JobPage",
    "Pause",
    "RateLimits",
    "ScheduleSlots",
    "ScheduleState",
    "Stats",
    "Uniqueness",
    "WorkerRegistry",
    "capabilities",
    "require",
    "supports",
]

C = TypeVar("C", bound="Capability")


class Capability(abc.ABC):  # noqa: B024 - a marker base: its subclasses hold the abstract methods
    """Base of every optional capability; ``what`` names it in error messages."""

    #: the capability in words: "<backend> does not support {what}"
    what: ClassVar[str] = "this capability"


# --- implemented by the built-in backends ------------------------------------------------


class FailedQueue(Capability):
    """Permanently failed jobs kept with their error: list, show, re-drive, purge.

    A backend with a failed queue appends a job to it in the same atomic step
    as a ``Failed`` settlement (see :func:`jobchain.workflow.on_failure`).
    """

    what = "the failed queue"

    @abc.abstractmethod
    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        """Entries of the failed queue, oldest first."""

    @abc.abstractmethod
    def get_failed(self, job_id: str) -> FailedEntry | None:
        """One entry of the failed queue, or None."""

    @abc.abstractmethod
    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        """Move failed jobs back to ready (attempt 1, chains resumed); return the ids moved.

        Check every id first: when some are not in the failed queue, raise
        :class:`~jobchain.errors.NotInFailedQueueError` naming them and move
        none. An entry that is in the failed queue but cannot be re-driven (an
        unreadable job) is left where it is and missing from the ids returned.
        """

    @abc.abstractmethod
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        """Delete the given entries (all when None) from the failed queue; return how many."""


class WorkerRegistry(Capability):
    """Workers register under a name with a heartbeat, can be listed and asked to stop."""

    what = "the worker registry"

    @abc.abstractmethod
    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        """Register or refresh a worker for ``ttl`` seconds; True if it was asked to stop.

        A name is held by one worker at a time. In one atomic step: if a live
        registration (heartbeat within its ttl) of ``info.name`` has another
        ``info.instance``, raise :class:`~jobchain.errors.WorkerNameTakenError`
        with the holder's host and pid and change nothing (see
        :func:`jobchain.backend.name_taken`); otherwise store ``info``. A
        worker that takes a name whose holder is gone or expired starts with
        no stop request.
        """

    @abc.abstractmethod
    def remove_worker(self, name: str, instance: str | None = None) -> None:
        """Forget a worker (it stopped); with ``instance``, only if that instance holds the name."""

    @abc.abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """Workers whose last heartbeat is still within its ttl."""

    @abc.abstractmethod
    def request_stop(self, name: str) -> bool:
        """Ask the live worker ``name`` to stop gracefully; False if there is no such worker."""


class Stats(Capability):
    """Counts per queue (the value class is :class:`jobchain.model.QueueStats`)."""

    what = "queue statistics"

    @abc.abstractmethod
    def stats(self) -> list[QueueStats]:
        """Counts of ready, delayed, in-flight and failed jobs for every queue seen.

        ``failed`` is 0 on a backend without a :class:`FailedQueue`.
        """


@frozen(kw_only=True)
class JobPage:
    """One page of :meth:`Browse.browse`: the records, and the cursor of the next page (None: the last)."""

    records: tuple[JobRecord, ...]
    cursor: str | None = None


class Browse(Capability):
    """List the jobs of a queue in one state, page by page, and count them per state.

    Each state has a stable order (:func:`jobchain.browsing.order_key`):
    ready and running jobs by enqueue time, delayed jobs by the time they are
    due, finished ones (succeeded, failed, cancelled) by the time they
    finished; the job id breaks ties. A cursor names the last job of a page
    by that order, never a position, so paging stays correct while the queue
    moves (see :meth:`browse`). Finished jobs are listed while the backend
    keeps their records (the Redis backends: ``result_ttl``).
    """

    what = "browsing jobs"

    @abc.abstractmethod
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
        """Up to ``limit`` records of ``queue``'s jobs in ``state`` (of ``task`` only, when given).

        Newest first unless ``oldest_first``; from ``cursor`` (the ``cursor``
        of the page before) on. A running job's record names its ``worker``.
        A job in ``state`` during the whole scan is listed exactly once; one
        that enters or leaves it meanwhile may or may not be. ``state`` is
        one of :data:`jobchain.browsing.BROWSABLE`; a bad ``state``, ``limit``
        or ``cursor`` raises ValueError.
        """

    @abc.abstractmethod
    def counts(self, queue: str) -> dict[JobState, int]:
        """How many of ``queue``'s jobs are in each state of :data:`jobchain.browsing.BROWSABLE`.

        Every state is a key (0 when none is in it).
        """


# --- declared for the coming features (provisional) ---------------------------------------


@frozen(kw_only=True)
class CancelReport:
    """What :meth:`Cancel.cancel` did with each id it was given (each id in exactly one field)."""

    #: removed before they ran (ready, delayed) and recorded cancelled
    cancelled: tuple[str, ...] = ()
    #: running (leased to a worker): asked to stop; recorded cancelled when the worker reports it
    requested: tuple[str, ...] = ()
    #: finished already (succeeded, failed or cancelled): left as they are
    finished: tuple[str, ...] = ()
    #: not known to the backend
    unknown: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, list[str]]:
        return {
            "cancelled": list(self.cancelled),
            "requested": list(self.requested),
            "finished": list(self.finished),
            "unknown": list(self.unknown),
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Sequence[str]]) -> CancelReport:
        return cls(
            **{name: tuple(raw.get(name, ())) for name in ("cancelled", "requested", "finished", "unknown")}
        )


class Cancel(Capability):
    """Cancel jobs: ready or delayed ones are removed, recorded cancelled; running ones are asked to stop.

    The rules (:class:`jobchain.testing.suite.CancelConformance` checks them):

    * a ready or delayed job is removed and recorded ``cancelled`` in one
      atomic step: it is never run, never retried, never in the failed queue;
      a reservation racing with the cancel either takes the job (then it is
      running, and asked to stop) or never sees it;
    * a cancelled chain step ends its chain (:func:`jobchain.workflow.apply_cancelled`):
      the later steps ``not_executed``, the chain ``cancelled``; a cancelled
      member of a group ends the chain too, without waiting for the others;
    * a running job is asked to stop: :meth:`cancel_requested` tells its
      worker, which reports an :class:`~jobchain.model.Aborted` outcome (the
      job recorded cancelled, its chain ended) when the task stops; a task
      that finishes anyway is settled as usual;
    * an unknown or finished id is reported, never an error.
    """

    what = "cancelling jobs"

    @abc.abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> CancelReport:
        """Cancel the given jobs; say what was done with each (see :class:`CancelReport`)."""

    @abc.abstractmethod
    def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        """Of these jobs (held by the calling worker), those asked to stop. One call for all of them."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Cancel every ready and delayed job of ``queue`` (recorded cancelled, chains ended); how many.

        Running jobs are left alone. Each job's cancellation is atomic; a
        backend may purge a long queue in several steps, so a job submitted
        meanwhile may or may not be purged.
        """


class Pause(Capability):
    """A paused queue accepts submits; no worker reserves from it (implemented by the built-in backends).

    Its jobs stay where they are (ready, delayed, or leased and running to
    their end); on resume they are served in their usual order.
    """

    what = "pausing queues"

    @abc.abstractmethod
    def pause(self, queues: Sequence[str]) -> None:
        """Stop :meth:`~jobchain.backend.Backend.reserve` and the hand-off of
        :meth:`~jobchain.backend.Backend.settle_and_take` serving these queues.

        Idempotent. Every reserver of the backend honours it within a second
        (a backend may cache the paused set that long); a reserver of this
        same instance honours it at once.
        """

    @abc.abstractmethod
    def resume(self, queues: Sequence[str]) -> None:
        """Serve these queues again (idempotent; a queue that is not paused is left as it is)."""

    @abc.abstractmethod
    def paused(self) -> list[str]:
        """The queues paused now, sorted."""


class Uniqueness(Capability):
    """A uniqueness key held by a job makes a duplicate submit store nothing (the built-in backends have it).

    A key is scoped to a queue: it is held by at most one job of that queue
    (the same key on two queues is two keys, on every backend, since on a
    Redis Cluster a queue's keys live in one slot). How keys are derived and
    the rules shared by the backends are in :mod:`jobchain.uniqueness`.
    """

    what = "unique jobs"

    @abc.abstractmethod
    def enqueue_unique(
        self, jobs: Sequence[Job], keys: Sequence[str], *, hold: float | None = None
    ) -> list[str]:
        """Store each job unless its id exists or its key is held; return, per job, the id it stands for.

        Per job, in order, atomically with the store (a batch: atomic per
        queue at least): a job whose id exists is not stored and its own id is
        returned (an explicit id, as :meth:`~jobchain.backend.Backend.enqueue`);
        a job whose key (in its queue) is held is not stored and the holder's id
        is returned; otherwise the job is stored, takes its key and its id is
        returned. Two jobs of one batch with one key: the first is stored.

        ``hold`` None: each job carries its key (``job.unique == key``,
        :func:`jobchain.uniqueness.check_batch`) and holds it until the job
        reaches a final state. The settlement that finishes the job (``Completed``,
        ``Failed``) releases the key in its own atomic step, only if this job
        holds it; ``Retried``, ``Released`` and a lease that runs out keep it. A
        key whose holder is finished or unknown (its record is gone) is free.
        With ``hold``: the key is held ``hold`` seconds from now on the backend's
        clock, whatever the job does; the job does not carry it.
        """


class RateLimits(Capability):
    """Rate-limit tokens shared by every worker and process of the backend (the built-in backends have it).

    A limit is one or more windows ``(tokens, seconds)``, all of which must
    admit a take. Each window is a GCRA
    (generic cell rate algorithm: a token bucket of ``tokens`` refilled evenly
    over ``seconds``, kept as one "theoretical arrival time"), judged on the
    backend's clock and updated atomically, so every caller of the backend
    shares it. The shared rules are in :mod:`jobchain.limits`.
    """

    what = "rate limits"

    @abc.abstractmethod
    def take_tokens(
        self, key: str, windows: Sequence[tuple[int, float]], count: int = 1, *, max_wait: float = 0.0
    ) -> float:
        """Take ``count`` tokens of ``key`` at the earliest time every window ``(tokens, seconds)`` admits.

        When that time is at most ``max_wait`` seconds away, the tokens are
        taken (reserved for that time, so a later caller gets a later time) and
        the seconds until it are returned (0.0: now). Otherwise nothing is
        taken and the wait (> ``max_wait``) is returned. One atomic step per
        call, on the backend's clock (:func:`jobchain.limits.gcra_take`).
        """


class ConcurrencyLimits(Capability):
    """Lease-bound semaphores shared by every worker: at most ``limit`` holders of a key at once.

    A slot is held by a holder (a job id) until it is released or its ``ttl``
    runs out on the backend's clock, so the slot of a worker that died frees
    when its lease would have ended. Workers extend their slots with their
    leases (implemented by the built-in backends).
    """

    what = "concurrency limits"

    @abc.abstractmethod
    def acquire_slot(self, key: str, limit: int, holder: str, ttl: float) -> bool:
        """Take a slot of ``key`` for ``holder`` for ``ttl`` seconds if fewer than ``limit`` are held.

        Atomic. Slots whose ttl ran out do not count (and are dropped). A holder
        that holds a live slot already keeps it (its ttl renewed): True.
        """

    @abc.abstractmethod
    def extend_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> list[bool]:
        """Renew each live slot ``(key, holder)`` for ``ttl`` seconds from now; False for one gone."""

    @abc.abstractmethod
    def release_slot(self, key: str, holder: str) -> None:
        """Free ``holder``'s slot of ``key`` (nothing if it holds none)."""

    @abc.abstractmethod
    def slots_held(self, key: str) -> int:
        """How many live slots of ``key`` are held now."""


@frozen(kw_only=True)
class ScheduleState:
    """What a backend keeps of one schedule: its latest slot enqueued (and that slot's job), paused or not."""

    name: str
    #: the latest slot enqueued, in seconds since the epoch (None: none yet)
    last_slot: float | None = None
    #: the id of that slot's job (a chain's id for a chain)
    last_job: str | None = None
    paused: bool = False

    def to_wire(self) -> dict[str, object]:
        return {
            "name": self.name,
            "last_slot": self.last_slot,
            "last_job": self.last_job,
            "paused": self.paused,
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, object]) -> ScheduleState:
        slot = raw.get("last_slot")
        job = raw.get("last_job")
        return cls(
            name=str(raw["name"]),
            last_slot=None if slot is None else float(cast("float", slot)),
            last_job=None if job is None else str(job),
            paused=bool(raw.get("paused", False)),
        )


class ScheduleSlots(Capability):
    """What schedulers share: each schedule's latest slot enqueued, and a paused flag.

    Exactly-once per slot does not rest on this capability: a slot's job id
    is derived from the schedule and the slot time (:func:`jobchain.schedules.slot_id`),
    and ``enqueue`` stores an id once. What the backend keeps here serves the
    missed-slot policy after downtime (which slots were not enqueued) and
    ``jobchain schedules list``; the schedulers judge slots on
    :meth:`~jobchain.backend.Backend.now`. The rules are checked by
    :class:`jobchain.testing.suite.ScheduleConformance`.
    """

    what = "schedules"

    @abc.abstractmethod
    def mark_slot(self, schedule: str, slot: float, job_id: str) -> None:
        """Record that ``slot``'s job (``job_id``) of ``schedule`` was enqueued.

        Atomic and monotonic: the record changes only if ``slot`` is later than
        the one recorded (a scheduler that marks an older slot late, or the same
        slot again, changes nothing). Leaves the paused flag as it is.
        """

    @abc.abstractmethod
    def schedule_states(self, names: Sequence[str]) -> list[ScheduleState]:
        """The state of each named schedule, in the order given (never seen: no slot, not paused)."""

    @abc.abstractmethod
    def pause_schedule(self, name: str) -> None:
        """Pause ``name``: schedulers enqueue none of its slots until it is resumed (idempotent)."""

    @abc.abstractmethod
    def resume_schedule(self, name: str) -> None:
        """Resume ``name`` (idempotent); the slots it missed follow its missed-slot policy."""


class AsyncClient(Capability):
    """The client's hot calls served on the caller's event loop (``await task.submit_async(...)``).

    Without it, the App runs the synchronous call in a small thread pool of
    its own (see :mod:`jobchain.aio`), which is correct for every backend:
    the contract's methods are called from many threads already (a worker's
    fetcher, settler, monitor and pool threads). A backend declares this to
    skip the thread hop on the paths an async web handler takes most:
    storing a submit, and reading a job's or a chain's record while it waits.

    Each coroutine must do exactly what its synchronous twin does (same
    writes, same errors: :class:`~jobchain.errors.BackendUnavailableError`
    during an outage, so the submit buffer holds the submit) and never block
    the event loop. A backend may serve natively only some of its instances
    (a redis-py asyncio client exists for one server, not yet for every way
    of connecting): :meth:`serves_async` says so, and the App uses its
    thread pool when it is False. Clients are bound to the event loop that
    made them: :meth:`close_async` closes the running loop's.
    """

    what = "an asyncio client"

    @abc.abstractmethod
    def serves_async(self) -> bool:
        """True when this instance serves the coroutines below (False: the App's thread pool does)."""

    @abc.abstractmethod
    async def enqueue_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        """:meth:`Backend.enqueue <jobchain.backend.Backend.enqueue>`, awaited."""

    @abc.abstractmethod
    async def enqueue_new_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        """:meth:`Backend.enqueue_new <jobchain.backend.Backend.enqueue_new>`, awaited."""

    @abc.abstractmethod
    async def get_job_async(self, job_id: str) -> JobRecord | None:
        """:meth:`Backend.get_job <jobchain.backend.Backend.get_job>`, awaited."""

    @abc.abstractmethod
    async def get_chain_async(self, chain_id: str) -> ChainRecord | None:
        """:meth:`Backend.get_chain <jobchain.backend.Backend.get_chain>`, awaited."""

    @abc.abstractmethod
    async def close_async(self) -> None:
        """Close what the running event loop's calls opened (its connections); the backend stays usable."""


#: every capability, in the order they are listed
ALL: tuple[type[Capability], ...] = (
    FailedQueue,
    WorkerRegistry,
    Stats,
    Browse,
    Cancel,
    Pause,
    Uniqueness,
    RateLimits,
    ConcurrencyLimits,
    ScheduleSlots,
    AsyncClient,
)


def supports(backend: Backend | type[Backend], capability: type[Capability]) -> bool:
    """True if ``backend`` (an instance or a class) declares ``capability``."""
    if isinstance(backend, type):
        return issubclass(backend, capability)
    return isinstance(backend, capability)


def require(backend: Backend, capability: Callable[..., C]) -> C:
    """``backend`` as a ``capability`` (a class of this module); :class:`NotSupportedError` if it lacks it.

    The error names the backend's URL, the capability, and the installed
    backends that have it. (``capability`` is typed as a callable only because
    type checkers refuse abstract classes where ``type[C]`` is expected.)
    """
    cls = cast("type[C]", capability)
    if isinstance(backend, cls):
        return backend
    raise NotSupportedError(backend.url, cls.__name__, cls.what, _supported_by(cls))


def capabilities(backend: Backend | type[Backend]) -> list[str]:
    """The names of the capabilities ``backend`` (an instance or a class) declares, for display."""
    return [c.__name__ for c in ALL if supports(backend, c)]


def _supported_by(capability: type[Capability]) -> list[str]:
    """Schemes of the installed backends that declare ``capability`` (only read on the error path)."""
    from jobchain.plugins import default_plugins

    try:
        specs = default_plugins().backends.specs()
    except Exception:  # the message is still clear without examples
        return []
    shortest: dict[str, str] = {}  # one scheme per distribution: memory, not memory's variants
    for spec in specs:
        if spec.capabilities is not None and capability.__name__ in spec.capabilities:
            held = shortest.get(spec.distribution)
            if held is None or len(spec.scheme) < len(held):
                shortest[spec.distribution] = spec.scheme
    return sorted(shortest.values())
