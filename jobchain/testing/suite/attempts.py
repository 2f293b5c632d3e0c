"""Every attempt of a job on its record: the errors of its failed attempts, oldest first, with the backoff."""

from __future__ import annotations

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.clock import ManualClock
from jobchain.model import MAX_KEPT_ERRORS, ErrorInfo, JobRecord, JobState
from jobchain.retry import Retry
from jobchain.testing.helpers import MakeJob, completed, eventually, failed, reserve_one, retried
from jobchain.testing.suite._base import ConformanceBase, FailedQueueBackend
from jobchain.worker import Worker

__all__ = ["AttemptHistory", "AttemptWorkerRuns", "RedriveHistory"]


def _record(backend: Backend, job_id: str) -> JobRecord:
    record = backend.get_job(job_id)
    assert record is not None, f"no record of job {job_id}"
    return record


def _summary(errors: tuple[ErrorInfo, ...]) -> list[tuple[str, str, int, float | None]]:
    return [(e.type, e.message, e.attempt, e.retry_in) for e in errors]


class AttemptHistory(ConformanceBase):
    """A job's record lists the error of each failed attempt, oldest first, each with its backoff."""

    def test_retried_then_succeeded_job_lists_both_errors_in_order(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Two failed attempts, then success: the record keeps both errors, their tracebacks and backoffs."""
        job = make_job()
        backend.enqueue([job])
        backend.settle([retried(reserve_one(backend), 2.0, "first", clock=clock)])
        clock.advance(2.5)
        backend.settle([retried(reserve_one(backend), 4.0, "second", clock=clock, error_type="OSError")])
        waiting = _record(backend, job.id)
        assert waiting.state is JobState.DELAYED
        assert waiting.error is not None
        assert (waiting.error.message, waiting.error.retry_in) == ("second", 4.0)
        clock.advance(4.5)
        backend.settle([completed(reserve_one(backend), "ok", clock=clock)])
        record = _record(backend, job.id)
        assert (record.state, record.result) == (JobState.SUCCEEDED, "ok")
        assert _summary(record.errors) == [("RuntimeError", "first", 1, 2.0), ("OSError", "second", 2, 4.0)]
        assert [e.traceback for e in record.errors] == [
            "Traceback (most recent call last):\nRuntimeError: first\n",
            "Traceback (most recent call last):\nOSError: second\n",
        ]
        assert record.errors[0].at < record.errors[1].at

    def test_job_that_fails_for_good_lists_all_its_attempts(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Two retries and a final failure: three errors, the last with no backoff and equal to ``error``."""
        job = make_job()
        backend.enqueue([job])
        for message in ("one", "two"):
            backend.settle([retried(reserve_one(backend), 1.0, message, clock=clock)])
            clock.advance(1.5)
        backend.settle([failed(reserve_one(backend), "three", clock=clock, error_type="ValueError")])
        record = _record(backend, job.id)
        assert record.state is JobState.FAILED
        assert _summary(record.errors) == [
            ("RuntimeError", "one", 1, 1.0),
            ("RuntimeError", "two", 2, 1.0),
            ("ValueError", "three", 3, None),
        ]
        assert record.error == record.errors[-1]

    def test_history_keeps_only_the_last_attempts(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job that failed more than MAX_KEPT_ERRORS times keeps the errors of its latest attempts."""
        job = make_job()
        backend.enqueue([job])
        runs = MAX_KEPT_ERRORS + 3
        for run in range(1, runs):
            backend.settle([retried(reserve_one(backend), 0.0, f"run {run}", clock=clock)])
        backend.settle([failed(reserve_one(backend), f"run {runs}", clock=clock)])
        record = _record(backend, job.id)
        assert len(record.errors) == MAX_KEPT_ERRORS
        assert [e.attempt for e in record.errors] == list(range(runs - MAX_KEPT_ERRORS + 1, runs + 1))
        assert [e.message for e in record.errors] == [f"run {e.attempt}" for e in record.errors]

    def test_a_lost_lease_is_not_an_attempt_error(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delivery whose lease ran out (its worker died) adds nothing to the history."""
        job = make_job()
        backend.enqueue([job])
        reserve_one(backend, lease=5.0)
        clock.advance(6.0)
        backend.settle([completed(reserve_one(backend), None, clock=clock)])
        assert _record(backend, job.id).errors == ()


class AttemptWorkerRuns(ConformanceBase):
    """A real Worker's retries reach the record: the task's own errors, tracebacks and backoffs."""

    def test_worker_records_each_attempt_of_a_retried_task(self, app: App, clock: ManualClock) -> None:
        """A real task that fails twice with distinct messages, then succeeds, lists both real errors."""
        runs: list[int] = []

        @app.task(retry=Retry(attempts=3, base=2.0, factor=3.0, jitter=False))
        def flaky() -> str:
            runs.append(len(runs) + 1)
            if len(runs) == 1:
                raise ConnectionError("refused")
            if len(runs) == 2:
                raise TimeoutError("timed out")
            return "done"

        handle = flaky.submit()
        worker = Worker(app, concurrency=1, poll=0.01)
        worker.start()
        try:

            def finished() -> bool:
                record = app.backend.get_job(handle.id)
                if record is not None and record.state is JobState.DELAYED:
                    clock.advance(1.0)  # the backoff passes on the test's clock, never a lease
                return record is not None and record.state is JobState.SUCCEEDED

            assert eventually(finished), "the task did not succeed on its third run"
        finally:
            assert worker.stop(timeout=5.0)
        record = _record(app.backend, handle.id)
        assert _summary(record.errors) == [
            ("ConnectionError", "refused", 1, 2.0),
            ("TimeoutError", "timed out", 2, 6.0),
        ]
        for error in record.errors:
            assert error.traceback is not None
            assert f"{error.type}: {error.message}" in error.traceback
            assert "in flaky" in error.traceback


class RedriveHistory(ConformanceBase):
    """A re-driven job keeps its history, and its next attempts are appended to it."""

    def test_redriven_job_keeps_its_history_and_appends_to_it(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Retried once, failed, re-driven, failed again: three errors in order, ``error`` cleared between."""
        job = make_job()
        backend.enqueue([job])
        backend.settle([retried(reserve_one(backend), 1.0, "before", clock=clock)])
        clock.advance(1.5)
        backend.settle([failed(reserve_one(backend), "given up", clock=clock)])
        backend.redrive([job.id])
        waiting = _record(backend, job.id)
        assert waiting.state is JobState.QUEUED
        assert waiting.error is None
        assert [e.message for e in waiting.errors] == ["before", "given up"]
        backend.settle([failed(reserve_one(backend), "again", clock=clock)])
        record = _record(backend, job.id)
        assert _summary(record.errors) == [
            ("RuntimeError", "before", 1, 1.0),
            ("RuntimeError", "given up", 2, None),
            ("RuntimeError", "again", 1, None),
        ]
