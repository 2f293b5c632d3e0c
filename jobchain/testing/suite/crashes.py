"""Marking a delivery running, and counting only the leases lost while a job ran (``crashes``)."""

from __future__ import annotations

from jobchain.backend import Backend
from jobchain.clock import ManualClock
from jobchain.model import Delivery
from jobchain.testing.helpers import (
    MakeJob,
    completed,
    released,
    reserve,
    reserve_one,
    retried,
)
from jobchain.testing.suite._base import ConformanceBase

__all__ = ["CrashCounting"]


def _crash(backend: Backend, clock: ManualClock, delivery: Delivery, worker: str = "w-2") -> Delivery:
    """Mark ``delivery`` running, let its lease run out, and reserve the job again."""
    assert backend.mark_running([delivery]) == [True]
    clock.advance(delivery.lease_until - clock.now() + 1.0)
    return reserve_one(backend, lease=5.0, worker=worker)


class CrashCounting(ConformanceBase):
    """Only a lease lost while its job was marked running counts as a crash; a mark needs a held lease."""

    def test_first_delivery_has_no_crashes(self, backend: Backend, make_job: MakeJob) -> None:
        """A job delivered for the first time has crashed no worker."""
        backend.enqueue([make_job()])
        assert reserve_one(backend).crashes == 0

    def test_lease_lost_while_only_reserved_is_not_a_crash(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A lease that runs out on a delivery never marked running is redelivered with no crash."""
        backend.enqueue([make_job()])
        reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        again = reserve_one(backend, lease=5.0, worker="w-2")
        assert (again.delivery_count, again.crashes) == (2, 0)

    def test_lease_lost_while_marked_running_is_a_crash(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Each lease lost while the job was marked running counts one crash."""
        backend.enqueue([make_job()])
        second = _crash(backend, clock, reserve_one(backend, lease=5.0, worker="w-1"))
        assert (second.delivery_count, second.crashes) == (2, 1)
        third = _crash(backend, clock, second, worker="w-3")
        assert (third.delivery_count, third.crashes) == (3, 2)

    def test_unmarked_loss_after_a_crash_keeps_the_count(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A later lease lost while the job was only reserved adds nothing to its crashes."""
        backend.enqueue([make_job()])
        second = _crash(backend, clock, reserve_one(backend, lease=5.0, worker="w-1"))
        clock.advance(second.lease_until - clock.now() + 1.0)
        third = reserve_one(backend, lease=5.0, worker="w-3")
        assert (third.delivery_count, third.crashes) == (3, 1)

    def test_mark_is_true_for_a_held_lease(self, backend: Backend, make_job: MakeJob) -> None:
        """A delivery whose lease is held can be marked running, answered per delivery in order."""
        backend.enqueue([make_job(), make_job()])
        assert backend.mark_running(reserve(backend, limit=2)) == [True, True]

    def test_mark_of_an_expired_lease_is_false(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Judged on the backend's clock: a delivery whose lease has ended cannot be marked."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend, lease=5.0)
        clock.advance(6.0)
        assert backend.mark_running([delivery]) == [False]

    def test_mark_of_a_lease_taken_over_is_false(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delivery whose job another worker holds now cannot be marked, and the holder is not charged."""
        backend.enqueue([make_job()])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        current = reserve_one(backend, lease=5.0, worker="w-2")
        assert backend.mark_running([stale, current]) == [False, True]
        assert backend.settle([completed(current, clock=clock)])[0].accepted

    def test_mark_of_a_settled_delivery_is_false(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A delivery already settled cannot be marked."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend)
        backend.settle([completed(delivery, clock=clock)])
        assert backend.mark_running([delivery]) == [False]

    def test_marked_then_settled_is_not_a_crash(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A marked delivery that is released ends its mark: the next delivery has no crash."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend, lease=5.0)
        assert backend.mark_running([delivery]) == [True]
        backend.settle([released(delivery)])
        again = reserve_one(backend, lease=5.0)
        clock.advance(6.0)
        assert reserve_one(backend, lease=5.0, worker="w-2").crashes == 0
        assert again.crashes == 0

    def test_extended_marked_lease_is_not_lost(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A marked delivery whose lease is extended keeps its job."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend, lease=5.0)
        assert backend.mark_running([delivery]) == [True]
        clock.advance(4.0)
        assert backend.extend([delivery], 5.0) == [True]
        clock.advance(4.0)
        assert reserve(backend, worker="w-2") == []
        assert backend.settle([completed(delivery, clock=clock)])[0].accepted

    def test_new_attempt_starts_a_fresh_crash_count(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Crashes are counted per attempt: a retried job's next attempt starts at 0."""
        backend.enqueue([make_job()])
        second = _crash(backend, clock, reserve_one(backend, lease=5.0, worker="w-1"))
        assert second.crashes == 1
        backend.settle([retried(second, 0.0, clock=clock)])
        assert reserve_one(backend).crashes == 0
