"""Paused queues: not served by ``reserve`` or the hand-off, still accepting jobs, served again on resume."""

from __future__ import annotations

from typing import cast

import pytest

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.canvas import chain
from jobchain.capabilities import Pause, supports
from jobchain.clock import ManualClock
from jobchain.model import JobState
from jobchain.testing.helpers import MakeJob, completed, reserve, reserve_one
from jobchain.testing.suite._base import ConformanceBase, PauseBackend
from jobchain.testing.suite.chains import declare_tasks

__all__ = ["PauseHandOff", "PauseRules", "PausedQueues"]


class PauseRules(ConformanceBase):
    """Base of the pause rules: skipped for a backend that does not declare Pause.

    Each rule takes the backend as ``pausable``, so
    :class:`~jobchain.testing.suite.BackendConformance` includes them and they
    run only where the capability is declared (the other rules are untouched).
    """

    @pytest.fixture
    def pausable(self, backend: Backend) -> PauseBackend:
        """The backend under test, which declares Pause; the rule is skipped for one that does not."""
        if not supports(backend, Pause):
            pytest.skip(f"{type(backend).__name__} does not declare Pause")
        return cast(PauseBackend, backend)


class PausedQueues(PauseRules):
    """``pause`` stops ``reserve`` serving a queue, ``resume`` serves it again; ``paused`` lists them."""

    def test_a_paused_queue_is_not_served(self, pausable: PauseBackend, make_job: MakeJob) -> None:
        """Ready jobs of a paused queue stay where they are."""
        pausable.enqueue([make_job(queue="a")])
        pausable.pause(["a"])
        assert reserve(pausable, ["a"]) == []

    def test_other_queues_are_still_served(self, pausable: PauseBackend, make_job: MakeJob) -> None:
        """Pausing one queue leaves the others of the same reservation served."""
        pausable.enqueue([make_job(queue="a"), make_job(queue="b", args=[2])])
        pausable.pause(["a"])
        assert [d.job.queue for d in reserve(pausable, ["a", "b"])] == ["b"]

    def test_submits_to_a_paused_queue_are_accepted(self, pausable: PauseBackend, make_job: MakeJob) -> None:
        """A job enqueued to a paused queue is stored, queued."""
        pausable.pause(["a"])
        job = make_job(queue="a")
        pausable.enqueue([job])
        record = pausable.get_job(job.id)
        assert record is not None
        assert record.state is JobState.QUEUED

    def test_resume_serves_the_jobs_again_in_order(self, pausable: PauseBackend, make_job: MakeJob) -> None:
        """After ``resume``, the jobs held meanwhile are served in their usual order."""
        pausable.pause(["a"])
        jobs = [make_job(queue="a", args=[i]) for i in range(3)]
        pausable.enqueue(jobs)
        assert reserve(pausable, ["a"]) == []
        pausable.resume(["a"])
        assert [d.job.id for d in reserve(pausable, ["a"])] == [j.id for j in jobs]

    def test_paused_lists_the_paused_queues(self, pausable: PauseBackend) -> None:
        """``paused`` names every paused queue, and none once resumed."""
        assert pausable.paused() == []
        pausable.pause(["b", "a"])
        assert sorted(pausable.paused()) == ["a", "b"]
        pausable.resume(["a"])
        assert pausable.paused() == ["b"]

    def test_pause_and_resume_are_idempotent(self, pausable: PauseBackend, make_job: MakeJob) -> None:
        """Pausing twice needs one resume; resuming a queue that is not paused changes nothing."""
        pausable.enqueue([make_job(queue="a")])
        pausable.resume(["a"])
        pausable.pause(["a"])
        pausable.pause(["a"])
        assert pausable.paused() == ["a"]
        pausable.resume(["a"])
        pausable.resume(["a"])
        assert pausable.paused() == []
        reserve_one(pausable, ["a"])

    def test_running_jobs_of_a_paused_queue_settle(
        self, pausable: PauseBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job leased before the pause finishes as usual."""
        job = make_job(queue="a")
        pausable.enqueue([job])
        delivery = reserve_one(pausable, ["a"])
        pausable.pause(["a"])
        pausable.settle([completed(delivery, "ok", clock=clock)])
        record = pausable.get_job(job.id)
        assert record is not None
        assert record.state is JobState.SUCCEEDED

    def test_delayed_jobs_of_a_paused_queue_wait(
        self, pausable: PauseBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delayed job that comes due in a paused queue is served only after resume."""
        pausable.pause(["a"])
        pausable.enqueue([make_job(queue="a", not_before=clock.now() + 10.0)])
        clock.advance(11.0)
        assert reserve(pausable, ["a"]) == []
        pausable.resume(["a"])
        reserve_one(pausable, ["a"])


class PauseHandOff(PauseRules):
    """``settle_and_take`` never hands a worker the next step from a paused queue."""

    def test_next_step_in_a_paused_queue_is_not_taken(
        self, app: App, pausable: PauseBackend, clock: ManualClock
    ) -> None:
        """The next step is stored ready, not leased, while its queue is paused."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        done = completed(reserve_one(pausable, worker="w-1"), "body", clock=clock)
        pausable.pause(["default"])
        _, taken = pausable.settle_and_take([done], worker="w-1", queues=["default"], lease=30.0, limit=4)
        assert taken == []
        assert reserve(pausable) == []
        pausable.resume(["default"])
        assert [d.job.task for d in reserve(pausable)] == ["parse"]
