"""The backend conformance suite: one mixin per rule, combined per part of the contract.

* :class:`CoreConformance`: the required core (:class:`jobchain.backend.Backend`):
  ordering and aging, leases, stale settlements, crash counting, batches,
  records, idempotent enqueue and explicit ids, delays, retries and each attempt's error,
  chains and groups, the next step's hand-off, signatures, bad payloads. It observes only through the
  core (``get_job``, ``get_chain``, ``reserve``).
* One suite per capability (:mod:`jobchain.capabilities`):
  :class:`FailedQueueConformance`, :class:`WorkerRegistryConformance`,
  :class:`StatsConformance`, :class:`PauseConformance`, :class:`BrowseConformance`,
  :class:`UniquenessConformance`, :class:`CancelConformance`, :class:`ScheduleConformance`,
  :class:`RateLimitConformance`, :class:`ConcurrencyConformance`, :class:`AsyncClientConformance`.
* :class:`BackendConformance`: all of them, plus the rules that need several
  capabilities at once (:class:`FailedQueueStats`, and :class:`WorkerRuns`,
  :class:`AttemptWorkerRuns` and :class:`AsyncWorkerRuns`, which run today's Worker,
  the last with ``async def`` tasks). The built-in backends run it. Its Pause, Browse,
  Uniqueness, Cancel, ScheduleSlots, RateLimits and ConcurrencyLimits rules run only for a
  backend that declares them (skipped otherwise).

A backend's test class subclasses the suites of what it declares::

    from jobchain.testing.suite import CoreConformance, FailedQueueConformance

    class TestMyBackend(CoreConformance, FailedQueueConformance):  # MyBackend(Backend, FailedQueue)
        @pytest.fixture
        def backend(self, clock):
            backend = MyBackend(clock=clock)
            yield backend
            backend.close()

The core suite checks that the class runs the suite of every capability the
backend declares. The classes are not named ``Test*``, so pytest collects
only subclasses. Time-dependent rules move the injected
:class:`jobchain.ManualClock`.
"""

from __future__ import annotations

from jobchain import capabilities as caps
from jobchain.backend import Backend
from jobchain.testing.suite._base import ConformanceBase
from jobchain.testing.suite.async_workers import AsyncWorkerRuns
from jobchain.testing.suite.asyncclient import AsyncClientConformance
from jobchain.testing.suite.attempts import AttemptHistory, AttemptWorkerRuns, RedriveHistory
from jobchain.testing.suite.browse import BrowsedStates, BrowsePaging
from jobchain.testing.suite.cancel import CancelRunning, CancelWaiting, CancelWorkerRuns, Purge
from jobchain.testing.suite.chains import AtomicChainAdvance, ChainHalting, Groups, NextStepHandOff
from jobchain.testing.suite.crashes import CrashCounting
from jobchain.testing.suite.failed import FailedPaging, FailedQueue, Redrive
from jobchain.testing.suite.jobs import (
    BadPayloads,
    BatchOperations,
    DelayedJobs,
    IdempotentEnqueue,
    JobRecords,
    Retries,
)
from jobchain.testing.suite.leases import LeaseExpiry, LeaseExtension, Release, StaleSettlement
from jobchain.testing.suite.limits import ConcurrencyConformance, RateLimitConformance
from jobchain.testing.suite.ordering import FifoOrdering, PriorityAging, PriorityOrdering
from jobchain.testing.suite.pause import PausedQueues, PauseHandOff
from jobchain.testing.suite.schedules import ScheduleRuns, ScheduleStates
from jobchain.testing.suite.signing import SignedJobs
from jobchain.testing.suite.stats import FailedQueueStats, QueueStatistics, StatsFollowTransitions
from jobchain.testing.suite.unique import ExplicitIds, UniqueKeys, UniqueSubmits
from jobchain.testing.suite.workers import WorkerNames, WorkerRegistry, WorkerRuns

# FailedQueue and WorkerRegistry here are rule mixins; the capabilities of those names are caps.*

__all__ = [
    "SUITES",
    "AsyncClientConformance",
    "AsyncWorkerRuns",
    "AtomicChainAdvance",
    "AttemptHistory",
    "AttemptWorkerRuns",
    "BackendConformance",
    "BadPayloads",
    "BatchOperations",
    "BrowseConformance",
    "BrowsePaging",
    "BrowsedStates",
    "CancelConformance",
    "CancelRunning",
    "CancelWaiting",
    "CancelWorkerRuns",
    "ChainHalting",
    "ConcurrencyConformance",
    "ConformanceBase",
    "CoreConformance",
    "CrashCounting",
    "DeclaredCapabilities",
    "DelayedJobs",
    "ExplicitIds",
    "FailedPaging",
    "FailedQueue",
    "FailedQueueConformance",
    "FailedQueueStats",
    "FifoOrdering",
    "Groups",
    "IdempotentEnqueue",
    "JobRecords",
    "LeaseExpiry",
    "LeaseExtension",
    "NextStepHandOff",
    "PauseConformance",
    "PauseHandOff",
    "PausedQueues",
    "PriorityAging",
    "PriorityOrdering",
    "Purge",
    "QueueStatistics",
    "RateLimitConformance",
    "Redrive",
    "RedriveHistory",
    "Release",
    "Retries",
    "ScheduleConformance",
    "ScheduleRuns",
    "ScheduleStates",
    "SignedJobs",
    "StaleSettlement",
    "StatsConformance",
    "StatsFollowTransitions",
    "UniqueKeys",
    "UniqueSubmits",
    "UniquenessConformance",
    "WorkerNames",
    "WorkerRegistry",
    "WorkerRegistryConformance",
    "WorkerRuns",
]


class DeclaredCapabilities(ConformanceBase):
    """A backend's test class runs the suite of every capability the backend declares."""

    def test_every_declared_capability_is_checked(self, backend: Backend) -> None:
        """For each capability with a suite that the backend declares, this class includes that suite."""
        missing = [
            suite.__name__
            for capability, suite in SUITES.items()
            if isinstance(backend, capability) and not isinstance(self, suite)
        ]
        assert not missing, (
            f"{type(backend).__name__} declares {', '.join(caps.capabilities(backend))}: "
            f"add {', '.join(missing)} to {type(self).__name__}'s bases"
        )


class CoreConformance(
    PriorityOrdering,
    FifoOrdering,
    PriorityAging,
    LeaseExpiry,
    StaleSettlement,
    LeaseExtension,
    Release,
    CrashCounting,
    BatchOperations,
    JobRecords,
    IdempotentEnqueue,
    ExplicitIds,
    DelayedJobs,
    Retries,
    AttemptHistory,
    AtomicChainAdvance,
    ChainHalting,
    Groups,
    NextStepHandOff,
    BadPayloads,
    SignedJobs,
    DeclaredCapabilities,
):
    """The rules of the required core. Every backend runs it."""


class FailedQueueConformance(FailedQueue, FailedPaging, Redrive, RedriveHistory):
    """The rules of :class:`jobchain.capabilities.FailedQueue`: entries, paging, re-drive, purge."""


class WorkerRegistryConformance(WorkerRegistry, WorkerNames):
    """The rules of :class:`jobchain.capabilities.WorkerRegistry`: heartbeats, names, stop requests."""


class StatsConformance(QueueStatistics, StatsFollowTransitions):
    """The rules of :class:`jobchain.capabilities.Stats`: the counts follow every transition."""


class PauseConformance(PausedQueues, PauseHandOff):
    """The rules of :class:`jobchain.capabilities.Pause`: paused queues are not served, and accept jobs."""


class BrowseConformance(BrowsedStates, BrowsePaging):
    """The rules of :class:`jobchain.capabilities.Browse`: states, order, task filter, paging while moving."""


class UniquenessConformance(UniqueKeys, UniqueSubmits):
    """The rules of :class:`jobchain.capabilities.Uniqueness`: held keys, release, concurrent duplicates."""


class CancelConformance(CancelWaiting, CancelRunning, Purge, CancelWorkerRuns):
    """The rules of :class:`jobchain.capabilities.Cancel`: waiting jobs removed, running ones stopped."""


class ScheduleConformance(ScheduleStates, ScheduleRuns):
    """The rules of :class:`jobchain.capabilities.ScheduleSlots`: latest slot, pause, one job per slot."""


#: the suite a backend's test class runs for each capability it declares
SUITES: dict[type[caps.Capability], type[ConformanceBase]] = {
    caps.FailedQueue: FailedQueueConformance,
    caps.WorkerRegistry: WorkerRegistryConformance,
    caps.Stats: StatsConformance,
    caps.Pause: PauseConformance,
    caps.Browse: BrowseConformance,
    caps.Uniqueness: UniquenessConformance,
    caps.Cancel: CancelConformance,
    caps.ScheduleSlots: ScheduleConformance,
    caps.RateLimits: RateLimitConformance,
    caps.ConcurrencyLimits: ConcurrencyConformance,
    caps.AsyncClient: AsyncClientConformance,
}


class BackendConformance(
    CoreConformance,
    FailedQueueConformance,
    WorkerRegistryConformance,
    StatsConformance,
    PauseConformance,
    BrowseConformance,
    UniquenessConformance,
    CancelConformance,
    ScheduleConformance,
    RateLimitConformance,
    ConcurrencyConformance,
    AsyncClientConformance,
    FailedQueueStats,
    WorkerRuns,
    AttemptWorkerRuns,
    AsyncWorkerRuns,
):
    """Every rule, for a backend with the failed queue, the worker registry and stats (the built-in ones).

    The rules of Pause, Browse, Uniqueness, Cancel, ScheduleSlots and AsyncClient are included and
    run only if the backend declares them.

    Subclass it as ``Test<YourBackend>`` and override ``backend``.
    """
