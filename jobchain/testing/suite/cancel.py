"""Cancelling jobs: removed atomically before they run, asked to stop while they run, queues purged."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.canvas import chain, group
from jobchain.capabilities import Cancel, CancelReport, FailedQueue, supports
from jobchain.clock import ManualClock
from jobchain.context import current_job
from jobchain.errors import Cancelled, JobCancelledError
from jobchain.model import Aborted, ChainState, JobState, StepState
from jobchain.testing.helpers import MakeJob, completed, reserve, reserve_one
from jobchain.testing.suite._base import CancelBackend, ConformanceBase
from jobchain.testing.suite.chains import declare_tasks, get_chain
from jobchain.worker import Worker

__all__ = ["CancelRules", "CancelRunning", "CancelWaiting", "CancelWorkerRuns", "Purge"]


def state_of(backend: Backend, job_id: str) -> JobState:
    record = backend.get_job(job_id)
    assert record is not None, f"the backend has no record of job {job_id}"
    return record.state


class CancelRules(ConformanceBase):
    """Base of the cancel rules: skipped for a backend that does not declare Cancel."""

    @pytest.fixture
    def cancellable(self, backend: Backend) -> CancelBackend:
        """The backend under test, which declares Cancel; the rule is skipped for one that does not."""
        if not supports(backend, Cancel):
            pytest.skip(f"{type(backend).__name__} does not declare Cancel")
        return cast(CancelBackend, backend)


class CancelWaiting(CancelRules):
    """A ready or delayed job is removed and recorded cancelled: never run, retried or failed."""

    def test_cancel_a_ready_job(self, cancellable: CancelBackend, make_job: MakeJob) -> None:
        """The job is recorded cancelled and never reserved; the other jobs are untouched."""
        doomed, kept = make_job(), make_job(args=[2])
        cancellable.enqueue([doomed, kept])
        report = cancellable.cancel([doomed.id])
        assert report == CancelReport(cancelled=(doomed.id,))
        assert state_of(cancellable, doomed.id) is JobState.CANCELLED
        assert [d.job.id for d in reserve(cancellable)] == [kept.id]
        assert reserve(cancellable) == []

    def test_cancel_a_delayed_job(
        self, cancellable: CancelBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """A delayed job is cancelled before its time, and is not made ready when its time comes."""
        job = make_job(not_before=clock.now() + 10)
        cancellable.enqueue([job])
        assert cancellable.cancel([job.id]).cancelled == (job.id,)
        clock.advance(11)
        assert reserve(cancellable) == []
        assert state_of(cancellable, job.id) is JobState.CANCELLED

    def test_a_cancelled_job_is_not_in_the_failed_queue(
        self, cancellable: CancelBackend, make_job: MakeJob
    ) -> None:
        """Cancelling is not failing."""
        job = make_job()
        cancellable.enqueue([job])
        cancellable.cancel([job.id])
        if isinstance(cancellable, FailedQueue):
            assert cancellable.get_failed(job.id) is None

    def test_unknown_and_finished_ids_are_reported(
        self, cancellable: CancelBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """An id the backend does not know, or of a finished job, is reported, never an error."""
        done, doomed = make_job(), make_job(args=[2])
        cancellable.enqueue([done])
        cancellable.settle([completed(reserve_one(cancellable), 1, clock=clock)])
        cancellable.enqueue([doomed])
        cancellable.cancel([doomed.id])
        report = cancellable.cancel(["no-such-job", done.id, doomed.id])
        assert report == CancelReport(unknown=("no-such-job",), finished=(done.id, doomed.id))
        assert state_of(cancellable, done.id) is JobState.SUCCEEDED

    def test_cancel_a_chain_step_ends_the_chain(
        self, app: App, cancellable: CancelBackend, clock: ManualClock
    ) -> None:
        """The cancelled step's chain is cancelled; the later steps are not executed, never enqueued."""
        fetch, parse, store = declare_tasks(app, "fetch", "parse", "store")
        handle = chain(fetch, parse, store).submit("url")
        cancellable.settle([completed(reserve_one(cancellable), "body", clock=clock)])
        second = handle.job_ids()[1][0]
        assert cancellable.cancel([second]).cancelled == (second,)
        record = get_chain(cancellable, handle.id)
        assert record.state is ChainState.CANCELLED
        assert [s.state for s in record.steps] == [
            StepState.COMPLETED,
            StepState.CANCELLED,
            StepState.NOT_EXECUTED,
        ]
        assert reserve(cancellable) == []
        assert cancellable.get_job(handle.job_ids()[2][0]) is None
        with pytest.raises(JobCancelledError):
            handle.result()

    def test_a_cancelled_group_member_ends_the_chain(
        self, app: App, cancellable: CancelBackend, clock: ManualClock
    ) -> None:
        """The chain does not wait for the cancelled member; the others may still finish."""
        a, b, after = declare_tasks(app, "a", "b", "after")
        handle = chain(group(a, b), after).submit()
        _first, second = handle.job_ids()[0]
        cancellable.cancel([second])
        assert get_chain(cancellable, handle.id).state is ChainState.CANCELLED
        cancellable.settle([completed(reserve_one(cancellable), 1, clock=clock)])
        record = get_chain(cancellable, handle.id)
        assert record.state is ChainState.CANCELLED
        assert record.steps[1].state is StepState.NOT_EXECUTED
        assert reserve(cancellable) == []

    def test_cancel_against_a_concurrent_reserve(self, cancellable: CancelBackend, make_job: MakeJob) -> None:
        """Every job is either cancelled unrun or reserved (then asked to stop): exactly one wins."""
        jobs = [make_job(args=[i]) for i in range(40)]
        cancellable.enqueue(jobs)
        reserved: list[str] = []

        def take() -> None:
            for _ in range(40):
                reserved.extend(d.job.id for d in reserve(cancellable, limit=1))

        taker = threading.Thread(target=take)
        taker.start()
        report = cancellable.cancel([j.id for j in jobs])
        taker.join(10)
        assert set(report.cancelled).isdisjoint(reserved)
        assert set(report.cancelled) | set(reserved) == {j.id for j in jobs}
        assert set(report.requested) <= set(reserved)
        for job_id in report.cancelled:
            assert state_of(cancellable, job_id) is JobState.CANCELLED


class CancelRunning(CancelRules):
    """A running job is asked to stop; its worker's Aborted outcome records it cancelled."""

    def test_a_running_job_is_asked_to_stop(
        self, cancellable: CancelBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """The request is reported, seen by cancel_requested, and Aborted records the job cancelled."""
        job, other = make_job(), make_job(args=[2])
        cancellable.enqueue([job, other])
        delivery, bystander = reserve(cancellable)
        assert cancellable.cancel([job.id]) == CancelReport(requested=(job.id,))
        assert state_of(cancellable, job.id) is JobState.RUNNING
        assert cancellable.cancel_requested([job.id, other.id]) == [job.id]
        now = clock.now()
        (result,) = cancellable.settle([Aborted(delivery=delivery, started_at=now, finished_at=now)])
        assert result.accepted
        assert state_of(cancellable, job.id) is JobState.CANCELLED
        assert reserve(cancellable) == []
        assert state_of(cancellable, bystander.job.id) is JobState.RUNNING

    def test_a_job_that_finishes_anyway_is_settled_as_usual(
        self, cancellable: CancelBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """A request the task never honoured changes nothing: the job succeeds."""
        job = make_job()
        cancellable.enqueue([job])
        delivery = reserve_one(cancellable)
        cancellable.cancel([job.id])
        cancellable.settle([completed(delivery, 7, clock=clock)])
        assert state_of(cancellable, job.id) is JobState.SUCCEEDED

    def test_an_aborted_chain_step_ends_the_chain(
        self, app: App, cancellable: CancelBackend, clock: ManualClock
    ) -> None:
        """The settlement returns the cancelled chain record."""
        first, second = declare_tasks(app, "first", "second")
        handle = chain(first, second).submit()
        delivery = reserve_one(cancellable)
        cancellable.cancel([delivery.job.id])
        now = clock.now()
        (result,) = cancellable.settle([Aborted(delivery=delivery, started_at=now, finished_at=now)])
        assert result.chain is not None
        assert result.chain.state is ChainState.CANCELLED
        assert [s.state for s in get_chain(cancellable, handle.id).steps] == [
            StepState.CANCELLED,
            StepState.NOT_EXECUTED,
        ]


class Purge(CancelRules):
    """``purge`` cancels a queue's ready and delayed jobs, counted; running jobs and other queues stay."""

    def test_purge_counts_ready_and_delayed_jobs(
        self, cancellable: CancelBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        running = make_job(queue="q")
        cancellable.enqueue([running])
        held = reserve_one(cancellable, ["q"])
        ready = [make_job(queue="q", args=[i]) for i in range(3)]
        delayed = make_job(queue="q", not_before=clock.now() + 60)
        elsewhere = make_job(queue="other")
        cancellable.enqueue([*ready, delayed, elsewhere])
        assert cancellable.purge("q") == 4
        for job in [*ready, delayed]:
            assert state_of(cancellable, job.id) is JobState.CANCELLED
        assert state_of(cancellable, held.job.id) is JobState.RUNNING
        assert reserve(cancellable, ["q"]) == []
        assert [d.job.id for d in reserve(cancellable, ["other"])] == [elsewhere.id]
        assert cancellable.purge("q") == 0
        assert cancellable.purge("never-seen") == 0


def _stoppable(app: App, started: threading.Event) -> Any:
    @app.task(name="stoppable")
    def stoppable() -> str:
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            current_job().raise_if_cancelled()
            time.sleep(0.01)
        return "ran to its end"

    return stoppable


class CancelWorkerRuns(CancelRules):
    """A real Worker: a running task sees the request through current_job() and stops, cancelled."""

    def test_a_running_task_stops_cooperatively(self, app: App, cancellable: CancelBackend) -> None:
        started = threading.Event()
        stoppable = _stoppable(app, started)

        @app.task(name="quick")
        def quick(x: int) -> int:
            return x * 2

        worker = Worker(app, concurrency=2, poll=0.02, lease=5.0)
        worker.start()
        try:
            handle = stoppable.submit()
            assert started.wait(10)
            assert handle.cancel().requested == (handle.id,)
            with pytest.raises(JobCancelledError):
                handle.wait(10)
            assert quick.submit(21).wait(10) == 42  # the worker goes on with other jobs
        finally:
            assert worker.stop(timeout=5.0)
        assert worker.counters.cancelled == 1
        if isinstance(cancellable, FailedQueue):
            assert cancellable.get_failed(handle.id) is None

    def test_cancelled_raised_without_a_request_fails(self, app: App, cancellable: CancelBackend) -> None:
        """A task raising Cancelled on its own is a permanent failure, not a cancellation."""

        @app.task(name="gives_up")
        def gives_up() -> None:
            raise Cancelled("not today")

        worker = Worker(app, concurrency=1, poll=0.02)
        worker.start()
        try:
            handle = gives_up.submit()
            with pytest.raises(Exception, match="not today"):
                handle.wait(10)
        finally:
            assert worker.stop(timeout=5.0)
        assert state_of(cancellable, handle.id) is JobState.FAILED
