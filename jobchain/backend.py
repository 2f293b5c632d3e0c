"""The required core of the backend contract: what every backend implements.

A backend stores jobs, hands them to workers under leases and applies the
transitions workers report, each atomically. Every operation is batched:
one call serves many jobs, so a networked backend pays one round trip per
batch. The chain logic itself lives in :mod:`jobchain.workflow` (pure
functions); a backend calls it inside its transition.

The core is six abstract methods (:meth:`~Backend.enqueue`,
:meth:`~Backend.reserve`, :meth:`~Backend.extend`, :meth:`~Backend.settle`,
:meth:`~Backend.get_job`, :meth:`~Backend.get_chain`); the failed queue, the
worker registry, statistics and the rest are optional capabilities in
:mod:`jobchain.capabilities`. A backend author imports everything from
:mod:`jobchain.contract`, registers the backend with the
``jobchain_register_backends`` hook and proves it with the conformance suite
in :mod:`jobchain.testing`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from jobchain.aging import DEFAULT_AGING_INTERVAL
from jobchain.clock import Clock, SystemClock
from jobchain.errors import WorkerNameTakenError
from jobchain.model import (
    ChainRecord,
    Delivery,
    Job,
    JobRecord,
    Outcome,
    SettleResult,
    WorkerInfo,
)

__all__ = ["Backend", "name_taken"]


def name_taken(holder: WorkerInfo | None, live: bool, info: WorkerInfo) -> WorkerNameTakenError | None:
    """The error to raise when ``info`` registers over ``holder`` (None: the name is free to take).

    ``live``: the holder's heartbeat is within its ttl. Only another instance
    with a live heartbeat keeps the name; the same instance refreshes it.
    """
    if holder is None or not live or holder.instance == info.instance:
        return None
    return WorkerNameTakenError(info.name, holder.host, holder.pid)


class Backend(abc.ABC):
    """Storage and delivery of jobs: the required core. Subclasses implement every abstract method.

    Optional capabilities are declared by inheriting them too
    (``class MyBackend(Backend, FailedQueue)``, see :mod:`jobchain.capabilities`).

    Rules every backend honours (the conformance suite checks them):

    * :meth:`reserve` returns ready jobs with the highest effective priority
      first (see :mod:`jobchain.aging`), FIFO among equals, each under a lease
      that ends ``lease`` seconds later; a job whose lease ends without being
      settled becomes ready again, and its ``delivery_count`` grows by one.
    * :meth:`settle` applies each outcome entirely or not at all, and rejects
      (``accepted=False``, nothing changed) an outcome whose delivery token is
      no longer the job's current one.
    * Jobs with ``not_before`` in the future wait in a delayed set until then.
    """

    #: The URL the backend was opened with, without its password.
    url: str = ""

    def __init__(self, *, clock: Clock | None = None, aging_interval: float = DEFAULT_AGING_INTERVAL) -> None:
        if aging_interval <= 0:
            raise ValueError(f"aging_interval must be > 0 seconds, got {aging_interval!r}")
        self.clock: Clock = clock or SystemClock()
        self.aging_interval = float(aging_interval)

    def now(self) -> float:
        """The backend's time, in seconds since the epoch (a server's clock where there is one)."""
        return self.clock.now()

    # --- jobs ----------------------------------------------------------------------

    @abc.abstractmethod
    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        """Store chain records and jobs, all or nothing. A job id that exists already is skipped."""

    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        """Store jobs and chains whose ids were generated just now and never stored, all or nothing.

        :class:`~jobchain.App` calls this for what it submits under fresh ids,
        so a backend may skip the existence check :meth:`enqueue` makes (one
        round trip less per submit on a networked backend). A submit retried
        after an ambiguous error must go through :meth:`enqueue`, which skips
        ids that exist. The default calls :meth:`enqueue`.
        """
        self.enqueue(jobs, chains)

    @abc.abstractmethod
    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        """Lease up to ``limit`` ready jobs from ``queues``; block up to ``wait`` seconds for one."""

    def wake(self, worker: str) -> None:
        """Make a blocking :meth:`reserve` of ``worker`` in this process return soon (a stopping worker).

        Best effort, and optional: the default does nothing, and a worker does not
        wait for a reserve that keeps blocking (it releases whatever that reserve
        returns later). A backend whose reserve waits on a local condition wakes it.
        """

    @abc.abstractmethod
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        """Push the leases of deliveries ``lease`` seconds from now; False where no longer held."""

    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Record that the worker starts these deliveries now; False where the lease is no longer held.

        The worker calls it before it runs a *suspect* (a job delivered before in
        this attempt, :attr:`Delivery.suspect`), alone. A backend that tracks it
        counts, per job and attempt, the leases lost while the job was marked
        (a delivery whose lease ends unsettled after a mark), and reports that
        count as :attr:`Delivery.crashes` of the job's later deliveries; a lease
        lost by a delivery that was never marked (a job only reserved, or a
        first delivery) is not counted. The mark ends with the delivery (settled,
        or its lease lost). The check judges the lease on the backend's clock:
        True only if the delivery's token is the job's current one and its lease
        has not ended.

        The default marks nothing and answers True for every delivery: the
        backend's ``crashes`` stays ``delivery_count - 1``, every lost lease counts.
        """
        return [True] * len(deliveries)

    @abc.abstractmethod
    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        """Apply completions, retries, failures and releases, each atomically, in order.

        A ``Failed`` outcome on a backend without a
        :class:`~jobchain.capabilities.FailedQueue` records the job failed
        (:meth:`get_job`) and halts its chain all the same; only the entry in
        the failed queue is missing.
        """

    def settle_and_take(
        self, outcomes: Sequence[Outcome], *, worker: str, queues: Sequence[str], lease: float, limit: int
    ) -> tuple[list[SettleResult], list[Delivery]]:
        """Settle, and lease to ``worker`` up to ``limit`` of the jobs the outcomes make ready.

        A chain's next step can then start on the worker that finished the step
        before it, without a wake-up and a reservation. A backend takes a job
        only from ``queues`` and only where :meth:`reserve` would have served it
        next (nothing ready in its queue is as urgent), under a lease of
        ``lease`` seconds, as one atomic step with the settlement. The default
        settles and takes nothing; the worker reserves the next steps as usual.
        """
        return self.settle(outcomes), []

    @abc.abstractmethod
    def get_job(self, job_id: str) -> JobRecord | None:
        """The record of one job, or None if the backend does not know it."""

    @abc.abstractmethod
    def get_chain(self, chain_id: str) -> ChainRecord | None:
        """The record of one chain or group, or None."""

    def close(self) -> None:
        """Release connections and threads. The default does nothing."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
