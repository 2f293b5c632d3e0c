"""The backend conformance suite: one mixin per rule of the Semantics, combined in BackendConformance.

Run it against a backend by subclassing and overriding the ``backend`` fixture::

    from jobchain.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self, clock):
            backend = MyBackend(clock=clock)
            yield backend
            backend.close()

The class is not named ``Test*``, so pytest collects only subclasses. A
backend that implements part of the contract can subclass single mixins.
Time-dependent rules move the injected :class:`jobchain.ManualClock`.
"""

from __future__ import annotations

from jobchain.testing.suite._base import ConformanceBase
from jobchain.testing.suite.chains import AtomicChainAdvance, ChainHalting, Groups, NextStepHandOff
from jobchain.testing.suite.crashes import CrashCounting
from jobchain.testing.suite.failed import FailedPaging, FailedQueue, Redrive
from jobchain.testing.suite.jobs import (
    BadPayloads,
    BatchOperations,
    DelayedJobs,
    IdempotentEnqueue,
    JobRecords,
    QueueStatistics,
    Retries,
)
from jobchain.testing.suite.leases import LeaseExpiry, LeaseExtension, Release, StaleSettlement
from jobchain.testing.suite.ordering import FifoOrdering, PriorityAging, PriorityOrdering
from jobchain.testing.suite.signing import SignedJobs
from jobchain.testing.suite.workers import WorkerNames, WorkerRegistry, WorkerRuns

__all__ = [
    "AtomicChainAdvance",
    "BackendConformance",
    "BadPayloads",
    "BatchOperations",
    "ChainHalting",
    "ConformanceBase",
    "CrashCounting",
    "DelayedJobs",
    "FailedPaging",
    "FailedQueue",
    "FifoOrdering",
    "Groups",
    "IdempotentEnqueue",
    "JobRecords",
    "LeaseExpiry",
    "LeaseExtension",
    "NextStepHandOff",
    "PriorityAging",
    "PriorityOrdering",
    "QueueStatistics",
    "Redrive",
    "Release",
    "Retries",
    "SignedJobs",
    "StaleSettlement",
    "WorkerNames",
    "WorkerRegistry",
    "WorkerRuns",
]


class BackendConformance(
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
    DelayedJobs,
    Retries,
    AtomicChainAdvance,
    ChainHalting,
    Groups,
    NextStepHandOff,
    FailedQueue,
    FailedPaging,
    Redrive,
    QueueStatistics,
    BadPayloads,
    SignedJobs,
    WorkerRegistry,
    WorkerNames,
    WorkerRuns,
):
    """Every rule of the Semantics. Subclass it as ``Test<YourBackend>`` and override ``backend``."""
