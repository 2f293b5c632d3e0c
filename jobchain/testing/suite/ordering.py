"""Which ready job a reservation returns: priority, FIFO among equals, and aging."""

from __future__ import annotations

import random

from jobchain.aging import effective_priority
from jobchain.backend import Backend
from jobchain.clock import ManualClock
from jobchain.model import Job
from jobchain.testing.helpers import MakeJob, completed, reserve, reserve_one
from jobchain.testing.suite._base import ConformanceBase

__all__ = ["FifoOrdering", "PriorityAging", "PriorityOrdering"]


class PriorityOrdering(ConformanceBase):
    """Reservation returns the ready job with the highest priority first."""

    def test_higher_priority_is_reserved_first(self, backend: Backend, make_job: MakeJob) -> None:
        """Of jobs enqueued at the same moment, higher priorities are reserved first."""
        priorities = [0, 5, -3, 2, 9, 1]
        backend.enqueue([make_job(priority=p) for p in priorities])
        served = [reserve_one(backend).job.priority for _ in priorities]
        assert served == sorted(priorities, reverse=True)

    def test_priority_is_compared_across_queues(self, backend: Backend, make_job: MakeJob) -> None:
        """Reserving from several queues returns the most urgent job of any of them."""
        backend.enqueue(
            [
                make_job(queue="a", priority=1),
                make_job(queue="b", priority=3),
                make_job(queue="a", priority=2),
            ]
        )
        served = [reserve_one(backend, ["a", "b"]).job for _ in range(3)]
        assert [(j.queue, j.priority) for j in served] == [("b", 3), ("a", 2), ("a", 1)]

    def test_reserve_takes_only_from_the_named_queues(self, backend: Backend, make_job: MakeJob) -> None:
        """Jobs of a queue that the reservation does not name are left alone."""
        other = make_job(queue="other", priority=9)
        mine = make_job(queue="mine")
        backend.enqueue([other, mine])
        assert [d.job.id for d in reserve(backend, ["mine"])] == [mine.id]
        assert reserve(backend, ["mine"]) == []
        assert [d.job.id for d in reserve(backend, ["other"])] == [other.id]


class FifoOrdering(ConformanceBase):
    """Among jobs of equal effective priority, the first submitted is served first."""

    def test_equal_jobs_are_reserved_in_submit_order(self, backend: Backend, make_job: MakeJob) -> None:
        """Jobs of one priority enqueued at one moment in one call come out in submit order."""
        jobs = [make_job(args=[i]) for i in range(20)]
        backend.enqueue(jobs)
        assert [reserve_one(backend).job.id for _ in jobs] == [j.id for j in jobs]

    def test_fifo_holds_across_enqueue_calls(self, backend: Backend, make_job: MakeJob) -> None:
        """Jobs of one priority enqueued one call at a time come out in submit order."""
        jobs = [make_job(args=[i]) for i in range(10)]
        for job in jobs:
            backend.enqueue([job])
        assert [reserve_one(backend).job.id for _ in jobs] == [j.id for j in jobs]

    def test_fifo_holds_within_each_priority(self, backend: Backend, make_job: MakeJob) -> None:
        """With priorities interleaved, each priority's jobs keep their submit order."""
        jobs = [make_job(priority=i % 3, args=[i]) for i in range(12)]
        backend.enqueue(jobs)
        served = [reserve_one(backend).job for _ in jobs]
        expected = sorted(jobs, key=lambda j: -j.priority)  # a stable sort keeps submit order
        assert [j.id for j in served] == [j.id for j in expected]

    def test_older_job_is_served_before_a_newer_one(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Of two equal-priority jobs, the one enqueued earlier wins even if it was stored later.

        The two are further apart than the backend's declared aging precision
        (``aging_tolerance`` aging intervals), and at least one second.
        """
        old = make_job()
        clock.advance(max(1.0, 2 * self.aging_tolerance * backend.aging_interval))
        new = make_job()
        backend.enqueue([new])
        backend.enqueue([old])  # e.g. a retried job, or a client whose submit was slow to arrive
        assert reserve_one(backend).job.id == old.id


class PriorityAging(ConformanceBase):
    """Effective priority is ``priority + (t - enqueued_at) / aging_interval``; nothing starves."""

    def test_waiting_outranks_a_newer_more_urgent_job(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job that waited longer than the priority gap times the aging interval outranks a newer one."""
        interval = backend.aging_interval
        old = make_job(priority=0)
        backend.enqueue([old])
        clock.advance((1.5 + self.aging_tolerance) * interval)
        backend.enqueue([make_job(priority=1)])
        assert reserve_one(backend).job.id == old.id

    def test_short_wait_does_not_outrank_a_more_urgent_job(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job that waited less than the priority gap times the aging interval still yields."""
        interval = backend.aging_interval
        backend.enqueue([make_job(priority=0)])
        clock.advance(max(0.0, 2.0 - self.aging_tolerance) * interval)
        urgent = make_job(priority=3)
        backend.enqueue([urgent])
        assert reserve_one(backend).job.id == urgent.id

    def test_no_job_starves_under_a_stream_of_urgent_jobs(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A low job is served before any higher one enqueued after it waited the starvation bound."""
        interval = backend.aging_interval
        p_low, p_high = 0, 3
        low = make_job(priority=p_low)
        backend.enqueue([low])
        bound = low.enqueued_at + (p_high - p_low + self.aging_tolerance) * interval
        served_before_low: list[Job] = []
        # two urgent jobs arrive per tick and one is served: without aging, `low` would wait forever
        for _tick in range(200):
            backend.enqueue([make_job(priority=p_high), make_job(priority=p_high)])
            delivery = reserve_one(backend)
            backend.settle([completed(delivery, clock=clock)])
            job = delivery.job
            if job.id == low.id:
                break
            served_before_low.append(job)
            clock.advance(interval / 4)
        else:
            raise AssertionError("the low-priority job was never served: it starved")
        late = [j for j in served_before_low if j.enqueued_at > bound]
        assert late == [], "urgent jobs enqueued after the starvation bound were served first"

    def test_reservation_follows_effective_priority(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Over a random mix of priorities and ages, each job served has the highest effective priority."""
        rng = random.Random(1729)
        interval = backend.aging_interval
        now = clock.now()
        jobs = [
            make_job(priority=rng.randint(-2, 4), enqueued_at=now - rng.randrange(400) * interval / 37)
            for _ in range(60)
        ]
        backend.enqueue(jobs)  # submit order is unrelated to age, as with retried jobs
        served = [reserve_one(backend).job for _ in jobs]
        slack = self.aging_tolerance + 1e-6
        for index, job in enumerate(served):
            best = max(effective_priority(j, now, interval) for j in served[index:])
            assert effective_priority(job, now, interval) >= best - slack, f"served out of order at {index}"
