"""The backend conformance suite, and a pytest plugin with shared fixtures.

A backend (built in or third party) proves it behaves like the others by
running :class:`CoreConformance` and the suite of each capability it declares
(:class:`FailedQueueConformance`, :class:`WorkerRegistryConformance`,
:class:`StatsConformance`, :class:`PauseConformance`, :class:`BrowseConformance`,
:class:`CancelConformance`),
or :class:`BackendConformance` for all of them::

    # conftest.py at the root of your tests
    pytest_plugins = ["jobchain.testing"]

    # test_conformance.py
    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self, clock):
            return MyBackend(clock=clock)

Opting in with ``pytest_plugins`` also gives every test the ``clock``
(:class:`jobchain.ManualClock`) and ``make_job`` fixtures. This package needs
pytest (``pip install jobchain[testing]``); jobchain itself never imports it.
"""

from __future__ import annotations

import functools

import pytest

pytest.register_assert_rewrite("jobchain.testing.suite", "jobchain.testing.helpers")

from jobchain.clock import ManualClock  # noqa: E402 - after registering the assert rewrite
from jobchain.testing.helpers import (  # noqa: E402
    MakeJob,
    completed,
    eventually,
    failed,
    make_job,
    queue_stats,
    released,
    reserve,
    reserve_one,
    retried,
    run_worker,
    wait_until,
)
from jobchain.testing.suite import (  # noqa: E402
    BackendConformance,
    BrowseConformance,
    CancelConformance,
    CoreConformance,
    FailedQueueConformance,
    PauseConformance,
    StatsConformance,
    UniquenessConformance,
    WorkerRegistryConformance,
)

__all__ = [
    "BackendConformance",
    "BrowseConformance",
    "CancelConformance",
    "CoreConformance",
    "FailedQueueConformance",
    "MakeJob",
    "PauseConformance",
    "StatsConformance",
    "UniquenessConformance",
    "WorkerRegistryConformance",
    "clock",
    "completed",
    "eventually",
    "failed",
    "make_job",
    "make_job_fixture",
    "queue_stats",
    "released",
    "reserve",
    "reserve_one",
    "retried",
    "run_worker",
    "wait_until",
]


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test advances it."""
    return ManualClock()


@pytest.fixture(name="make_job")
def make_job_fixture(clock: ManualClock) -> MakeJob:
    """Build a job as a client would submit it now, by the ``clock`` fixture's time."""
    return functools.partial(make_job, clock)
