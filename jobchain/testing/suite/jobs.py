"""Storing jobs: records, idempotent enqueue, batches, delayed jobs, retries, stats and payloads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.canvas import chain
from jobchain.clock import ManualClock
from jobchain.errors import InvalidJobError
from jobchain.errortext import DEFAULT_MAX_ERROR_BYTES
from jobchain.model import ChainRef, Completed, Delivery, ErrorInfo, Failed, Job, JobState
from jobchain.testing.helpers import (
    MakeJob,
    completed,
    failed,
    released,
    reserve,
    reserve_one,
    retried,
)
from jobchain.testing.suite._base import ConformanceBase

__all__ = [
    "BadPayloads",
    "BatchOperations",
    "DelayedJobs",
    "IdempotentEnqueue",
    "JobRecords",
    "Retries",
]


class JobRecords(ConformanceBase):
    """A job comes back exactly as stored, and its record follows it through its life."""

    def test_job_round_trips_unchanged(self, backend: Backend, clock: ManualClock, make_job: MakeJob) -> None:
        """Every field of a job, JSON arguments included, is delivered exactly as it was enqueued."""
        job = make_job(
            "resize",
            args=[1, 2.5, -(2**40), "héllo ✓", None, True, [1, [2, {"k": "v"}]], {"a": {"b": []}}],
            kwargs={"size": {"w": 10, "h": 20}, "tags": ["x", "y"], "empty": {}, "none": None},
            queue="images",
            priority=-4,
            not_before=clock.now() - 1.0,
            expires_at=clock.now() + 3600.0,
            chain=ChainRef(chain_id="chain-1", step=2, member=1),
        )
        backend.enqueue([job])
        assert reserve_one(backend, ["images"]).job == job

    def test_record_follows_the_job_to_success(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """``get_job`` shows a job queued, then running, then succeeded with its result."""
        job = make_job()
        backend.enqueue([job])
        queued = backend.get_job(job.id)
        assert queued is not None
        assert (queued.state, queued.job) == (JobState.QUEUED, job)
        delivery = reserve_one(backend)
        running = backend.get_job(job.id)
        assert running is not None
        assert running.state is JobState.RUNNING
        started = clock.advance(1.0)
        finished = clock.advance(2.0)
        outcome = Completed(
            delivery=delivery, result={"rows": [1, 2]}, started_at=started, finished_at=finished
        )
        backend.settle([outcome])
        done = backend.get_job(job.id)
        assert done is not None
        assert (done.state, done.result) == (JobState.SUCCEEDED, {"rows": [1, 2]})
        assert (done.started_at, done.finished_at) == (started, finished)

    def test_record_of_a_failed_job_carries_its_error(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """``get_job`` of a job that failed for good shows the failed state and the error."""
        job = make_job()
        backend.enqueue([job])
        backend.settle([failed(reserve_one(backend), "disk full", clock=clock, error_type="OSError")])
        record = backend.get_job(job.id)
        assert record is not None
        assert record.state is JobState.FAILED
        assert record.error is not None
        assert (record.error.type, record.error.message) == ("OSError", "disk full")

    def test_an_error_at_the_default_cap_is_kept_exactly(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A failure whose message and traceback were cut to the default cap is stored and read unchanged."""
        try:
            raise ValueError("héllo ✓ 😀 \ud800 " * 1_000_000)  # 22 MB, with a lone surrogate
        except ValueError as exc:
            error = ErrorInfo.from_exception(exc, attempt=1, at=clock.now())
        assert len(error.message.encode()) > DEFAULT_MAX_ERROR_BYTES - 100
        job = make_job()
        backend.enqueue([job])
        backend.settle([Failed(delivery=reserve_one(backend), error=error)])
        record = backend.get_job(job.id)
        assert record is not None
        assert record.error == error

    def test_unknown_job_has_no_record(self, backend: Backend) -> None:
        """``get_job`` of an id never enqueued is None."""
        assert backend.get_job("no-such-job") is None


class IdempotentEnqueue(ConformanceBase):
    """Enqueueing a job id that the backend already knows changes nothing."""

    def test_enqueueing_a_job_twice_stores_it_once(self, backend: Backend, make_job: MakeJob) -> None:
        """The same job enqueued in two calls is delivered once."""
        job = make_job()
        backend.enqueue([job])
        backend.enqueue([job])
        assert [d.job.id for d in reserve(backend)] == [job.id]

    def test_duplicate_ids_in_one_batch_store_one_job(self, backend: Backend, make_job: MakeJob) -> None:
        """A batch that names one job id twice stores one job."""
        job = make_job()
        backend.enqueue([job, job])
        assert len(reserve(backend)) == 1

    def test_reenqueue_of_a_running_job_is_ignored(self, backend: Backend, make_job: MakeJob) -> None:
        """Enqueueing a job that a worker holds does not make a second copy ready."""
        job = make_job()
        backend.enqueue([job])
        reserve_one(backend)
        backend.enqueue([job])
        assert reserve(backend, worker="w-2") == []
        record = backend.get_job(job.id)
        assert record is not None
        assert record.state is JobState.RUNNING

    def test_reenqueue_of_a_finished_job_is_ignored(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Enqueueing a job that already succeeded neither runs it again nor forgets its result."""
        job = make_job()
        backend.enqueue([job])
        backend.settle([completed(reserve_one(backend), 42, clock=clock)])
        backend.enqueue([job])
        assert reserve(backend) == []
        record = backend.get_job(job.id)
        assert record is not None
        assert (record.state, record.result) == (JobState.SUCCEEDED, 42)

    def test_resubmitted_chain_is_not_reset(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """Enqueueing a chain record and its first job again leaves a chain in progress untouched."""

        @app.task
        def first(x: int) -> int:
            return x

        @app.task
        def second(x: int) -> int:
            return x

        handle = chain(first, second).submit(1)
        original = backend.get_chain(handle.id)
        assert original is not None
        head = reserve_one(backend)
        backend.settle([completed(head, 1, clock=clock)])
        backend.enqueue([head.job], [original])  # a client retrying its submit
        [following] = reserve(backend)
        assert following.job.task == "second"
        record = backend.get_chain(handle.id)
        assert record is not None
        assert record.steps[0].result == 1


class BatchOperations(ConformanceBase):
    """One call serves many jobs: enqueue, reserve up to a limit, settle many outcomes."""

    def test_enqueue_new_stores_jobs_and_chains_like_enqueue(
        self, app: App, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """The fresh-id path App.submit uses stores a batch, a delayed job and a chain record."""

        @app.task
        def head(x: int) -> int:
            return x

        handle = chain(head, head).submit(1)  # App.submit goes through enqueue_new
        assert backend.get_chain(handle.id) is not None
        jobs = [make_job(args=[i]) for i in range(5)]
        later = make_job(not_before=clock.now() + 30)
        backend.enqueue_new([*jobs, later])
        served = [d.job.id for d in reserve(backend, limit=10)]
        assert served[1:] == [j.id for j in jobs]
        record = backend.get_job(later.id)
        assert record is not None
        assert record.state is JobState.DELAYED

    def test_enqueue_stores_a_whole_batch(self, backend: Backend, make_job: MakeJob) -> None:
        """Every job of one enqueue call is stored."""
        backend.enqueue([make_job(args=[i]) for i in range(50)])
        assert len(reserve(backend, limit=100)) == 50

    def test_reserve_returns_at_most_limit(self, backend: Backend, make_job: MakeJob) -> None:
        """A reservation returns no more jobs than its limit, and the rest stay ready."""
        backend.enqueue([make_job() for _ in range(10)])
        assert len(reserve(backend, limit=4)) == 4
        assert len(reserve(backend, limit=100)) == 6

    def test_reserve_batch_holds_the_most_urgent_jobs_in_order(
        self, backend: Backend, make_job: MakeJob
    ) -> None:
        """A batch reservation returns the most urgent ready jobs, most urgent first."""
        jobs = [make_job(priority=p) for p in (1, 7, 3, 0, 9, 5, 2)]
        backend.enqueue(jobs)
        assert [d.job.priority for d in reserve(backend, limit=3)] == [9, 7, 5]

    def test_settle_applies_a_mixed_batch(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """One settle call completes, retries, fails and releases jobs, answering each in order."""
        jobs = [make_job(args=[i]) for i in range(4)]
        backend.enqueue(jobs)
        done, again, broken, back = reserve(backend, limit=4)
        results = backend.settle(
            [
                completed(done, "ok", clock=clock),
                retried(again, 60.0, clock=clock),
                failed(broken, clock=clock),
                released(back),
            ]
        )
        assert [r.accepted for r in results] == [True, True, True, True]
        states = [r.state if (r := backend.get_job(j.id)) else None for j in jobs]
        assert states == [JobState.SUCCEEDED, JobState.DELAYED, JobState.FAILED, JobState.QUEUED]
        assert [d.job.id for d in reserve(backend)] == [jobs[3].id]

    def test_stale_outcome_does_not_block_its_batch(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A rejected outcome in a batch leaves the other outcomes of that batch applied."""
        jobs = [make_job(), make_job()]
        backend.enqueue(jobs)
        stale = reserve_one(backend, lease=5.0)
        held = reserve_one(backend, lease=30.0)
        clock.advance(6.0)
        redelivered = reserve(backend, worker="w-2")
        assert [d.job.id for d in redelivered] == [stale.job.id]
        results = backend.settle([completed(stale, clock=clock), completed(held, "kept", clock=clock)])
        assert [r.accepted for r in results] == [False, True]
        record = backend.get_job(held.job.id)
        assert record is not None
        assert record.result == "kept"

    def test_blocking_reserve_gets_a_job_that_arrives_while_waiting(
        self, backend: Backend, make_job: MakeJob
    ) -> None:
        """A reservation waiting on empty queues returns a job enqueued meanwhile, at once."""
        got: list[Delivery] = []
        waiter = threading.Thread(
            target=lambda: got.extend(backend.reserve(["default"], limit=1, lease=30.0, worker="w", wait=5.0))
        )
        started = time.monotonic()
        waiter.start()
        time.sleep(0.05)
        job = make_job()
        backend.enqueue([job])
        waiter.join(5.0)
        assert [d.job.id for d in got] == [job.id]
        assert time.monotonic() - started < 2.5

    def test_blocking_reserve_gives_up_after_its_wait(self, backend: Backend) -> None:
        """A reservation on empty queues returns nothing once its wait is over."""
        started = time.monotonic()
        assert backend.reserve(["default"], limit=5, lease=30.0, worker="w", wait=0.05) == []
        assert time.monotonic() - started < 2.0


class DelayedJobs(ConformanceBase):
    """A job whose ``not_before`` is in the future waits in a delayed set until then."""

    def test_delayed_job_is_not_ready_before_its_time(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job with ``not_before`` 30s ahead is delayed, not ready, until 30s have passed."""
        job = make_job(not_before=clock.now() + 30.0)
        backend.enqueue([job])
        clock.advance(29.5)
        assert reserve(backend) == []
        record = backend.get_job(job.id)
        assert record is not None
        assert record.state is JobState.DELAYED

    def test_delayed_job_is_ready_at_its_time(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Once its ``not_before`` has passed, a delayed job is delivered."""
        job = make_job(not_before=clock.now() + 30.0)
        backend.enqueue([job])
        clock.advance(30.5)
        assert reserve_one(backend).job == job


class Retries(ConformanceBase):
    """A retried job comes back as the next attempt, after its delay, keeping its ``enqueued_at``."""

    def test_retry_delivers_the_next_attempt(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """After a retry, the same job is delivered with its attempt number one higher."""
        job = make_job()
        backend.enqueue([job])
        backend.settle([retried(reserve_one(backend), 0.0, clock=clock)])
        again = reserve_one(backend).job
        assert (again.id, again.task, again.args, again.attempt) == (job.id, job.task, job.args, 2)

    def test_each_retry_increments_the_attempt(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Every retry adds one to the attempt number."""
        backend.enqueue([make_job()])
        for _ in range(3):
            backend.settle([retried(reserve_one(backend), 1.0, clock=clock)])
            clock.advance(1.5)
        assert reserve_one(backend).job.attempt == 4

    def test_retry_waits_out_its_delay(self, backend: Backend, clock: ManualClock, make_job: MakeJob) -> None:
        """A job retried with a 20s delay sits in the delayed set for 20s."""
        job = make_job()
        backend.enqueue([job])
        backend.settle([retried(reserve_one(backend), 20.0, clock=clock)])
        clock.advance(19.0)
        assert reserve(backend) == []
        record = backend.get_job(job.id)
        assert record is not None
        assert record.state is JobState.DELAYED
        clock.advance(2.0)
        assert reserve_one(backend).job.attempt == 2

    def test_retried_job_keeps_its_enqueued_at(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """The next attempt carries the first attempt's ``enqueued_at``."""
        job = make_job()
        backend.enqueue([job])
        clock.advance(3.0)
        backend.settle([retried(reserve_one(backend), 5.0, clock=clock)])
        clock.advance(6.0)
        assert reserve_one(backend).job.enqueued_at == job.enqueued_at

    def test_retried_job_outranks_newer_jobs_of_its_priority(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job that failed and waited is served before jobs of the same priority submitted since."""
        job = make_job(priority=1)
        backend.enqueue([job])
        backend.settle([retried(reserve_one(backend), 10.0, clock=clock)])
        clock.advance(5.0)
        backend.enqueue([make_job(priority=1) for _ in range(3)])
        clock.advance(6.0)
        assert reserve_one(backend).job.id == job.id

    def test_retry_records_the_error(self, backend: Backend, clock: ManualClock, make_job: MakeJob) -> None:
        """The error that caused a retry is kept on the job's record."""
        job = make_job()
        backend.enqueue([job])
        backend.settle([retried(reserve_one(backend), 5.0, "flaky network", clock=clock)])
        record = backend.get_job(job.id)
        assert record is not None
        assert record.error is not None
        assert (record.error.message, record.error.attempt) == ("flaky network", 1)

    def test_new_attempt_starts_a_fresh_delivery_count(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Lost leases are counted per attempt: the next attempt's first delivery has count 1."""
        backend.enqueue([make_job()])
        reserve_one(backend, lease=5.0)
        clock.advance(6.0)
        second = reserve_one(backend)
        assert second.delivery_count == 2
        backend.settle([retried(second, 0.0, clock=clock)])
        assert reserve_one(backend).delivery_count == 1


#: Stored payloads that are not a job, and why.
MALFORMED: list[tuple[str, Any]] = [
    ("not-an-object", ["id", "task"]),
    ("missing-id", {"task": "t", "enqueued_at": 1.0}),
    ("empty-id", {"id": "", "task": "t", "enqueued_at": 1.0}),
    ("missing-task", {"id": "j", "enqueued_at": 1.0}),
    ("task-not-a-string", {"id": "j", "task": None, "enqueued_at": 1.0}),
    ("missing-enqueued-at", {"id": "j", "task": "t"}),
    ("enqueued-at-not-a-number", {"id": "j", "task": "t", "enqueued_at": "yesterday"}),
    ("args-not-a-list", {"id": "j", "task": "t", "enqueued_at": 1.0, "args": "abc"}),
    ("kwargs-not-an-object", {"id": "j", "task": "t", "enqueued_at": 1.0, "kwargs": [1]}),
    ("priority-not-an-int", {"id": "j", "task": "t", "enqueued_at": 1.0, "priority": "high"}),
    ("attempt-zero", {"id": "j", "task": "t", "enqueued_at": 1.0, "attempt": 0}),
    ("not-before-not-a-number", {"id": "j", "task": "t", "enqueued_at": 1.0, "not_before": "soon"}),
    ("chain-too-short", {"id": "j", "task": "t", "enqueued_at": 1.0, "chain": ["c"]}),
    ("chain-step-negative", {"id": "j", "task": "t", "enqueued_at": 1.0, "chain": ["c", -1, 0]}),
]


class BadPayloads(ConformanceBase):
    """A stored payload that is not a well-formed job is refused with :class:`InvalidJobError`."""

    @pytest.mark.parametrize("raw", [raw for _, raw in MALFORMED], ids=[name for name, _ in MALFORMED])
    def test_from_wire_rejects_a_malformed_payload(self, raw: Any) -> None:
        """``Job.from_wire`` raises InvalidJobError, never a bare KeyError or TypeError."""
        with pytest.raises(InvalidJobError, match=r"malformed job payload|must be"):
            Job.from_wire(raw)

    def test_from_wire_reads_what_to_wire_writes(self, make_job: MakeJob, clock: ManualClock) -> None:
        """A job written with ``to_wire`` reads back equal with ``from_wire``."""
        job = make_job(
            args=[1, {"a": [None]}],
            kwargs={"k": "v"},
            priority=3,
            not_before=clock.now() + 1,
            expires_at=clock.now() + 9,
            chain=ChainRef(chain_id="c", step=1, member=2),
        )
        assert Job.from_wire(job.to_wire()) == job
