"""Leases: redelivery after expiry, rejected stale settlements, extension and release."""

from __future__ import annotations

from jobchain.backend import Backend
from jobchain.clock import ManualClock
from jobchain.model import JobState
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

__all__ = ["LeaseExpiry", "LeaseExtension", "Release", "StaleSettlement"]


class LeaseExpiry(ConformanceBase):
    """A delivery holds its job for the lease; a lease that runs out makes the job deliverable again."""

    def test_delivery_lease_ends_lease_seconds_from_now(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delivery's ``lease_until`` is the reservation time plus the lease, and names the worker."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend, lease=12.5, worker="w-1")
        assert delivery.lease_until == clock.now() + 12.5
        assert delivery.worker == "w-1"
        assert delivery.delivery_count == 1

    def test_leased_job_is_not_delivered_again(self, backend: Backend, make_job: MakeJob) -> None:
        """While its lease lasts, a reserved job is given to no one else."""
        backend.enqueue([make_job()])
        reserve_one(backend, worker="w-1")
        assert reserve(backend, worker="w-2") == []

    def test_job_is_kept_until_its_lease_ends(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Just before its lease ends, a reserved job is still held."""
        backend.enqueue([make_job()])
        reserve_one(backend, lease=10.0)
        clock.advance(9.5)
        assert reserve(backend, worker="w-2") == []

    def test_expired_lease_redelivers_the_job(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """After its lease ends unsettled, the job is delivered again with delivery_count 2."""
        job = make_job()
        backend.enqueue([job])
        first = reserve_one(backend, lease=10.0, worker="w-1")
        clock.advance(10.5)
        second = reserve_one(backend, lease=10.0, worker="w-2")
        assert second.job == job
        assert second.delivery_count == 2
        assert second.token != first.token
        assert second.worker == "w-2"

    def test_redelivery_keeps_the_attempt(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A lost lease does not use up an attempt."""
        backend.enqueue([make_job()])
        reserve_one(backend, lease=5.0)
        clock.advance(6.0)
        assert reserve_one(backend).job.attempt == 1

    def test_redelivered_job_keeps_its_place(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job whose lease expired is served before equal jobs submitted after it."""
        first, later = make_job(), make_job()
        backend.enqueue([first])
        reserve_one(backend, lease=5.0)
        backend.enqueue([later])
        clock.advance(6.0)
        assert reserve_one(backend).job.id == first.id


class StaleSettlement(ConformanceBase):
    """An outcome whose delivery is no longer the job's current one changes nothing."""

    def test_stale_completion_is_rejected(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A worker whose lease expired cannot complete a job that another worker now holds."""
        job = make_job()
        backend.enqueue([job])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        reserve_one(backend, worker="w-2")
        [result] = backend.settle([completed(stale, "late", clock=clock)])
        assert not result.accepted
        record = backend.get_job(job.id)
        assert record is not None
        assert record.state is JobState.RUNNING
        assert record.result is None

    def test_current_holder_completes_after_a_stale_rejection(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """After a stale completion is rejected, the current delivery's completion is accepted."""
        job = make_job()
        backend.enqueue([job])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        current = reserve_one(backend, worker="w-2")
        backend.settle([completed(stale, "late", clock=clock)])
        [result] = backend.settle([completed(current, "fresh", clock=clock)])
        assert result.accepted
        record = backend.get_job(job.id)
        assert record is not None
        assert (record.state, record.result) == (JobState.SUCCEEDED, "fresh")

    def test_stale_failure_is_rejected(self, backend: Backend, clock: ManualClock, make_job: MakeJob) -> None:
        """A stale worker's failure does not fail the job that another worker now holds."""
        job = make_job()
        backend.enqueue([job])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        reserve_one(backend, worker="w-2")
        [result] = backend.settle([failed(stale, clock=clock)])
        assert not result.accepted
        record = backend.get_job(job.id)
        assert record is not None
        assert (record.state, record.error) == (JobState.RUNNING, None)

    def test_stale_retry_is_rejected(self, backend: Backend, clock: ManualClock, make_job: MakeJob) -> None:
        """A stale worker's retry does not schedule another attempt."""
        job = make_job()
        backend.enqueue([job])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        current = reserve_one(backend, worker="w-2")
        [result] = backend.settle([retried(stale, 0.0, clock=clock)])
        assert not result.accepted
        record = backend.get_job(job.id)
        assert record is not None
        assert (record.state, record.job.attempt) == (JobState.RUNNING, 1)
        assert reserve(backend, worker="w-3") == []
        assert backend.extend([current], 30.0) == [True]

    def test_settled_delivery_cannot_be_settled_again(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A second outcome for a delivery already settled is rejected."""
        job = make_job()
        backend.enqueue([job])
        delivery = reserve_one(backend)
        assert backend.settle([completed(delivery, 1, clock=clock)])[0].accepted
        assert not backend.settle([failed(delivery, clock=clock)])[0].accepted
        record = backend.get_job(job.id)
        assert record is not None
        assert (record.state, record.result, record.error) == (JobState.SUCCEEDED, 1, None)


class LeaseExtension(ConformanceBase):
    """``extend`` pushes the lease of a delivery still held; it reports False for one that is not."""

    def test_extend_keeps_the_job_past_its_first_lease(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """An extended lease ends ``lease`` seconds after the extension, not after the reservation."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend, lease=10.0)
        clock.advance(8.0)
        assert backend.extend([delivery], 10.0) == [True]
        clock.advance(9.0)  # 17s after the reservation, 9s after the extension
        assert reserve(backend, worker="w-2") == []
        clock.advance(2.0)  # 11s after the extension
        assert reserve_one(backend, worker="w-2").delivery_count == 2

    def test_extend_of_a_settled_delivery_is_false(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delivery that was settled can no longer be extended."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend)
        backend.settle([completed(delivery, clock=clock)])
        assert backend.extend([delivery], 10.0) == [False]

    def test_extend_of_a_stale_delivery_is_false(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delivery whose job another worker now holds cannot be extended."""
        backend.enqueue([make_job()])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        reserve_one(backend, lease=5.0, worker="w-2")
        assert backend.extend([stale], 100.0) == [False]

    def test_stale_extend_leaves_the_current_lease_alone(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A rejected extension does not lengthen the lease of the delivery that holds the job now."""
        backend.enqueue([make_job()])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        reserve_one(backend, lease=5.0, worker="w-2")
        backend.extend([stale], 100.0)
        clock.advance(6.0)
        assert reserve_one(backend, worker="w-3").delivery_count == 3

    def test_extend_answers_for_each_delivery_in_order(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A batch extension returns one answer per delivery, in the order given."""
        backend.enqueue([make_job() for _ in range(3)])
        first, second, third = reserve(backend, limit=3)
        backend.settle([completed(second, clock=clock)])
        assert backend.extend([first, second, third], 10.0) == [True, False, True]


class Release(ConformanceBase):
    """A released job is ready again at once and has used up neither an attempt nor a lease."""

    def test_released_job_is_ready_again(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job handed back unrun can be reserved again at once, with the same attempt."""
        job = make_job()
        backend.enqueue([job])
        delivery = reserve_one(backend, worker="w-1")
        [result] = backend.settle([released(delivery)])
        assert result.accepted
        again = reserve_one(backend, worker="w-2")
        assert again.job == job

    def test_release_is_not_a_lost_lease(self, backend: Backend, make_job: MakeJob) -> None:
        """Releasing a job does not count towards its delivery_count."""
        backend.enqueue([make_job()])
        backend.settle([released(reserve_one(backend))])
        assert reserve_one(backend).delivery_count == 1

    def test_released_job_keeps_its_place(self, backend: Backend, make_job: MakeJob) -> None:
        """A released job keeps its enqueued_at, so it is served before jobs submitted after it."""
        first, later = make_job(), make_job()
        backend.enqueue([first])
        delivery = reserve_one(backend)
        backend.enqueue([later])
        backend.settle([released(delivery)])
        assert reserve_one(backend).job.id == first.id
