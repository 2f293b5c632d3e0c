"""Queue statistics: ready, delayed, in-flight (and failed) counts per queue follow every transition."""

from __future__ import annotations

from jobchain.app import App
from jobchain.canvas import chain
from jobchain.clock import ManualClock
from jobchain.model import QueueStats
from jobchain.testing.helpers import MakeJob, completed, failed, queue_stats, reserve, reserve_one, retried
from jobchain.testing.suite._base import ConformanceBase, FullBackend, StatsBackend
from jobchain.testing.suite.chains import declare_tasks
from jobchain.testing.suite.failed import fail_jobs

__all__ = ["FailedQueueStats", "QueueStatistics", "StatsFollowTransitions"]


class QueueStatistics(ConformanceBase):
    """``stats`` counts ready, delayed, in-flight and failed jobs per queue."""

    def test_stats_count_each_place_per_queue_apart(
        self, backend: StatsBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Each queue's ready, delayed and in-flight jobs are counted apart."""
        backend.enqueue([make_job(queue="a") for _ in range(3)])
        backend.enqueue([make_job(queue="a", not_before=clock.now() + 60.0)])
        backend.enqueue([make_job(queue="b"), make_job(queue="b")])
        reserve_one(backend, ["a"])
        assert len(reserve(backend, ["b"])) == 2
        stats = {s.queue: s for s in backend.stats()}
        assert stats["a"] == QueueStats(queue="a", ready=2, delayed=1, in_flight=1, failed=0)
        assert stats["b"] == QueueStats(queue="b", ready=0, delayed=0, in_flight=2, failed=0)

    def test_finished_jobs_leave_the_counts(
        self, backend: StatsBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job that succeeded is counted nowhere."""
        backend.enqueue([make_job()])
        backend.settle([completed(reserve_one(backend), clock=clock)])
        assert queue_stats(backend) == QueueStats(queue="default")

    def test_stats_count_a_whole_batch(self, backend: StatsBackend, make_job: MakeJob) -> None:
        """Every job of one enqueue call is counted ready."""
        backend.enqueue([make_job(args=[i]) for i in range(50)])
        assert queue_stats(backend).ready == 50

    def test_expired_lease_counts_as_ready_again(
        self, backend: StatsBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Once its lease has run out, the job counts as ready, not in flight."""
        job = make_job()
        backend.enqueue([job])
        reserve_one(backend, lease=5.0)
        assert queue_stats(backend).in_flight == 1
        clock.advance(6.0)
        stats = queue_stats(backend)
        assert (stats.ready, stats.in_flight) == (1, 0)


class StatsFollowTransitions(ConformanceBase):
    """The counts seen after the core's transitions (the core rules observe them with ``get_job``)."""

    def test_next_chain_step_counts_as_ready(
        self, app: App, backend: StatsBackend, clock: ManualClock
    ) -> None:
        """When a step's completion is settled, the next step is counted ready."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        assert queue_stats(backend).ready == 1

    def test_a_step_taken_on_settle_counts_in_flight(
        self, app: App, backend: StatsBackend, clock: ManualClock
    ) -> None:
        """A next step leased by ``settle_and_take`` counts in flight; one not taken counts ready."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        done = completed(reserve_one(backend, worker="w-1"), "body", clock=clock)
        _, taken = backend.settle_and_take([done], worker="w-1", queues=["default"], lease=30.0, limit=4)
        stats = queue_stats(backend)
        assert (stats.ready, stats.in_flight) == ((0, 1) if taken else (1, 0))

    def test_reenqueue_of_a_running_job_is_counted_once(
        self, backend: StatsBackend, make_job: MakeJob
    ) -> None:
        """Enqueueing a job that a worker holds leaves it counted in flight only."""
        job = make_job()
        backend.enqueue([job])
        reserve_one(backend)
        backend.enqueue([job])
        stats = queue_stats(backend)
        assert (stats.ready, stats.in_flight) == (0, 1)

    def test_enqueue_new_counts_ready_and_delayed_jobs(
        self, app: App, backend: StatsBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Jobs stored through ``enqueue_new`` are counted like those of ``enqueue``."""
        (head,) = declare_tasks(app, "head")
        chain(head, head).submit(1)
        backend.enqueue_new([*(make_job(args=[i]) for i in range(5)), make_job(not_before=clock.now() + 30)])
        assert (queue_stats(backend).ready, queue_stats(backend).delayed) == (6, 1)

    def test_delayed_job_counts_as_delayed(
        self, backend: StatsBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job with ``not_before`` ahead is counted delayed, not ready."""
        backend.enqueue([make_job(not_before=clock.now() + 30.0)])
        clock.advance(29.5)
        assert (queue_stats(backend).ready, queue_stats(backend).delayed) == (0, 1)

    def test_retried_job_counts_as_delayed(
        self, backend: StatsBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job retried with a delay is counted delayed until its time."""
        backend.enqueue([make_job()])
        backend.settle([retried(reserve_one(backend), 20.0, clock=clock)])
        clock.advance(19.0)
        assert queue_stats(backend).delayed == 1

    def test_stale_retry_changes_no_count(
        self, backend: StatsBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A rejected retry leaves the job counted in flight, neither ready nor delayed."""
        backend.enqueue([make_job()])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        reserve_one(backend, worker="w-2")
        backend.settle([retried(stale, 0.0, clock=clock)])
        stats = queue_stats(backend)
        assert (stats.ready, stats.delayed, stats.in_flight) == (0, 0, 1)


class FailedQueueStats(ConformanceBase):
    """A backend with a failed queue and statistics counts the failed queue's entries per queue."""

    def test_stats_count_each_place_per_queue(
        self, backend: FullBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Each queue's ready, delayed, in-flight and failed jobs are counted apart."""
        backend.enqueue([make_job(queue="a") for _ in range(3)])
        backend.enqueue([make_job(queue="a", not_before=clock.now() + 60.0)])
        backend.enqueue([make_job(queue="b"), make_job(queue="b")])
        reserve_one(backend, ["a"])
        backend.settle([failed(reserve_one(backend, ["b"]), clock=clock)])
        stats = {s.queue: s for s in backend.stats()}
        assert stats["a"] == QueueStats(queue="a", ready=2, delayed=1, in_flight=1, failed=0)
        assert stats["b"] == QueueStats(queue="b", ready=1, delayed=0, in_flight=0, failed=1)

    def test_failed_jobs_are_counted_per_queue(
        self, backend: FullBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Stats count failed jobs in their own queue."""
        fail_jobs(backend, clock, [make_job(), make_job()])
        assert queue_stats(backend).failed == 2

    def test_purged_entries_leave_the_count(
        self, backend: FullBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """After purging the failed queue, no job counts as failed."""
        fail_jobs(backend, clock, [make_job(args=[i]) for i in range(3)])
        assert backend.purge_failed() == 3
        assert queue_stats(backend).failed == 0

    def test_len_of_the_apps_failed_queue(
        self, app: App, backend: FullBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """``len(app.failed)`` is the failed count, here read from the stats."""
        fail_jobs(backend, clock, [make_job(args=[i]) for i in range(3)])
        assert len(app.failed) == 3
