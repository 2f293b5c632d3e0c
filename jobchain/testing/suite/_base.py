"""The fixtures every conformance mixin shares; a backend's test class overrides ``backend``."""

from __future__ import annotations

import functools

import pytest

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.capabilities import (
    Browse,
    Cancel,
    FailedQueue,
    Pause,
    ScheduleSlots,
    Stats,
    Uniqueness,
    WorkerRegistry,
)
from jobchain.clock import ManualClock
from jobchain.plugins import Plugins
from jobchain.testing.helpers import MakeJob, make_job

__all__ = [
    "BrowseBackend",
    "CancelBackend",
    "ConformanceBase",
    "FailedQueueBackend",
    "FullBackend",
    "PauseBackend",
    "ScheduleBackend",
    "StatsBackend",
    "UniquenessBackend",
    "WorkerRegistryBackend",
]


# For annotations only: the type of the ``backend`` fixture in a capability's rules (never built).
class FailedQueueBackend(Backend, FailedQueue):
    """A backend with a failed queue."""


class WorkerRegistryBackend(Backend, WorkerRegistry):
    """A backend with a worker registry."""


class StatsBackend(Backend, Stats):
    """A backend with queue statistics."""


class PauseBackend(Backend, Pause):
    """A backend whose queues can be paused."""


class BrowseBackend(Backend, Browse):
    """A backend whose jobs can be listed."""


class UniquenessBackend(Backend, Uniqueness):
    """A backend with uniqueness keys."""


class CancelBackend(Backend, Cancel):
    """A backend whose jobs can be cancelled."""


class ScheduleBackend(Backend, ScheduleSlots):
    """A backend that keeps schedule slots."""


class FullBackend(Backend, FailedQueue, WorkerRegistry, Stats):
    """A backend with every capability the built-in backends have."""


class ConformanceBase:
    """Fixtures of the suite. Override ``backend``; override the class attributes where noted.

    ``backend`` must return (or yield) an empty backend built with the injected
    ``clock``, so that tests move time with ``clock.advance()`` instead of
    sleeping. Its ``aging_interval`` is read from the backend.
    """

    #: How far, in aging intervals, a bucketed backend's aging may lag exact aging
    #: (0 for backends that sort by the exact key). The docs state each backend's precision.
    aging_tolerance: float = 0.0

    @pytest.fixture
    def backend(self, clock: ManualClock) -> Backend:
        """The backend under test: override this fixture in your test class (it may yield)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the 'backend' fixture with an empty backend "
            "built with the injected clock (e.g. MyBackend(clock=clock))"
        )

    @pytest.fixture
    def clock(self) -> ManualClock:
        """Time that moves only when a test advances it."""
        return ManualClock()

    @pytest.fixture
    def make_job(self, clock: ManualClock) -> MakeJob:
        """Build a job as a client would submit it now (see :func:`jobchain.testing.make_job`)."""
        return functools.partial(make_job, clock)

    @pytest.fixture
    def app(self, backend: Backend, clock: ManualClock) -> App:
        """An App over the backend under test, with no installed plugins loaded."""
        return App(backend=backend, clock=clock, plugins=Plugins(entry_points=False))
