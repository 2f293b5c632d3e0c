"""Paused queues: not served by ``reserve`` or the hand-off, still accepting jobs, served again on resume."""

from __future__ import annotations

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

    So :class:`~jobchain.testing.suite.BackendConformance` includes them and
    they run only where the capability is declared.
    """

    @pytest.fixture(autouse=True)
    def _needs_pause(self, backend: Backend) -> None:
        if not supports(backend, Pause):
            pytest.skip(f"{type(backend).__name__} does not declare Pause")


class PausedQueues(PauseRules):
    """``pause`` stops ``reserve`` serving a queue, ``resume`` serves it again; ``paused`` lists them."""

    def test_a_paused_queue_is_not_served(self, backend: PauseBackend, make_job: MakeJob) -> None:
        """Ready jobs of a paused queue stay where they are."""
        backend.enqueue([make_job(queue="a")])
        backend.pause(["a"])
        assert reserve(backend, ["a"]) == []

    def test_other_queues_are_still_served(self, backend: PauseBackend, make_job: MakeJob) -> None:
        """Pausing one queue leaves the others of the same reservation served."""
        backend.enqueue([make_job(queue="a"), make_job(queue="b", args=[2])])
        backend.pause(["a"])
        assert [d.job.queue for d in reserve(backend, ["a", "b"])] == ["b"]

    def test_submits_to_a_paused_queue_are_accepted(
        self, backend: PauseBackend, make_job: MakeJob
    ) -> None:
        """A job enqueued to a paused queue is stored, queued."""
        backend.pause(["a"])
        job = make_job(queue="a")
        backend.enqueue([job])
        record = backend.get_job(job.id)
        assert record is not None
        assert record.state is JobState.QUEUED

    def test_resume_serves_the_jobs_again_in_order(
        self, backend: PauseBackend, make_job: MakeJob
    ) -> None:
        """After ``resume``, the jobs held meanwhile are served in their usual order."""
        backend.pause(["a"])
        jobs = [make_job(queue="a", args=[i]) for i in range(3)]
        backend.enqueue(jobs)
        assert reserve(backend, ["a"]) == []
        backend.resume(["a"])
        assert [d.job.id for d in reserve(backend, ["a"])] == [j.id for j in jobs]

    def test_paused_lists_the_paused_queues(self, backend: PauseBackend) -> None:
        """``paused`` names every paused queue, and none once resumed."""
        assert backend.paused() == []
        backend.pause(["b", "a"])
        assert sorted(backend.paused()) == ["a", "b"]
        backend.resume(["a"])
        assert backend.paused() == ["b"]

    def test_pause_and_resume_are_idempotent(self, backend: PauseBackend, make_job: MakeJob) -> None:
        """Pausing twice needs one resume; resuming a queue that is not paused changes nothing."""
        backend.enqueue([make_job(queue="a")])
        backend.resume(["a"])
        backend.pause(["a"])
        backend.pause(["a"])
        assert backend.paused() == ["a"]
        backend.resume(["a"])
        backend.resume(["a"])
        assert backend.paused() == []
        reserve_one(backend, ["a"])

    def test_running_jobs_of_a_paused_queue_settle(
        self, backend: PauseBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job leased before the pause finishes as usual."""
        job = make_job(queue="a")
        backend.enqueue([job])
        delivery = reserve_one(backend, ["a"])
        backend.pause(["a"])
        backend.settle([completed(delivery, "ok", clock=clock)])
        record = backend.get_job(job.id)
        assert record is not None
        assert record.state is JobState.SUCCEEDED

    def test_delayed_jobs_of_a_paused_queue_wait(
        self, backend: PauseBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delayed job that comes due in a paused queue is served only after resume."""
        backend.pause(["a"])
        backend.enqueue([make_job(queue="a", not_before=clock.now() + 10.0)])
        clock.advance(11.0)
        assert reserve(backend, ["a"]) == []
        backend.resume(["a"])
        reserve_one(backend, ["a"])


class PauseHandOff(PauseRules):
    """``settle_and_take`` never hands a worker the next step from a paused queue."""

    def test_next_step_in_a_paused_queue_is_not_taken(
        self, app: App, backend: PauseBackend, clock: ManualClock
    ) -> None:
        """The next step is stored ready, not leased, while its queue is paused."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        done = completed(reserve_one(backend, worker="w-1"), "body", clock=clock)
        backend.pause(["default"])
        _, taken = backend.settle_and_take([done], worker="w-1", queues=["default"], lease=30.0, limit=4)
        assert taken == []
        assert reserve(backend) == []
        backend.resume(["default"])
        assert [d.job.task for d in reserve(backend)] == ["parse"]
