"""The failed queue: list oldest first, show, re-drive (resetting attempts, resuming chains), purge."""

from __future__ import annotations

import pytest
from attrs import evolve

from jobchain.app import App, FailedPage
from jobchain.backend import Backend
from jobchain.canvas import chain, group
from jobchain.clock import ManualClock
from jobchain.errors import NotInFailedQueueError
from jobchain.model import ChainRef, ChainState, ErrorInfo, Failed, Job, JobState, StepState
from jobchain.testing.helpers import MakeJob, completed, failed, released, reserve, reserve_one, retried
from jobchain.testing.suite._base import ConformanceBase, FailedQueueBackend
from jobchain.testing.suite.chains import declare_tasks, get_chain

__all__ = ["FailedPaging", "FailedQueue", "Redrive"]


def fail_jobs(backend: Backend, clock: ManualClock, jobs: list[Job], *, spacing: float = 1.0) -> None:
    """Enqueue ``jobs`` and fail them one by one, ``spacing`` seconds apart, in list order."""
    backend.enqueue(jobs)
    by_id = {d.job.id: d for d in reserve(backend, limit=len(jobs))}
    for job in jobs:
        clock.advance(spacing)
        backend.settle([failed(by_id[job.id], f"{job.args} failed", clock=clock)])


class FailedQueue(ConformanceBase):
    """Permanently failed jobs wait in the failed queue with the error that put them there."""

    def test_failed_job_enters_the_failed_queue(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A failure appends the job, its error (type, message, traceback, attempt) and the time."""
        job = make_job(args=[1])
        backend.enqueue([job])
        delivery = reserve_one(backend)
        clock.advance(2.0)
        backend.settle([failed(delivery, "no route", clock=clock, error_type="ConnectionError")])
        entry = backend.get_failed(job.id)
        assert entry is not None
        assert entry.job == job
        assert (entry.error.type, entry.error.message, entry.error.attempt) == (
            "ConnectionError",
            "no route",
            1,
        )
        assert entry.error.traceback is not None
        assert "ConnectionError" in entry.error.traceback
        assert entry.failed_at == clock.now()

    def test_failed_queue_lists_oldest_first(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """``failed()`` lists entries in the order the jobs failed."""
        jobs = [make_job(args=[i]) for i in range(5)]
        fail_order = [jobs[3], jobs[0], jobs[4], jobs[1], jobs[2]]
        fail_jobs(backend, clock, fail_order)
        assert [e.job.id for e in backend.failed()] == [j.id for j in fail_order]

    def test_failed_queue_pages_with_limit_and_offset(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """``limit`` and ``offset`` page through the failed queue, oldest first."""
        jobs = [make_job(args=[i]) for i in range(7)]
        fail_jobs(backend, clock, jobs)
        pages = [backend.failed(limit=3, offset=offset) for offset in (0, 3, 6, 9)]
        assert [[e.job.id for e in page] for page in pages] == [
            [j.id for j in jobs[0:3]],
            [j.id for j in jobs[3:6]],
            [jobs[6].id],
            [],
        ]

    def test_failed_entry_of_an_unknown_id_is_none(self, backend: FailedQueueBackend) -> None:
        """``get_failed`` of a job that is not in the failed queue is None."""
        assert backend.get_failed("no-such-job") is None

    def test_purge_some_removes_only_those(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Purging some ids deletes those entries, counts them and keeps the rest."""
        jobs = [make_job(args=[i]) for i in range(4)]
        fail_jobs(backend, clock, jobs)
        assert backend.purge_failed([jobs[1].id, jobs[3].id, "no-such-job"]) == 2
        assert [e.job.id for e in backend.failed()] == [jobs[0].id, jobs[2].id]

    def test_purge_all_empties_the_failed_queue(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Purging with no ids deletes every entry and returns how many there were."""
        fail_jobs(backend, clock, [make_job(args=[i]) for i in range(3)])
        assert backend.purge_failed() == 3
        assert backend.failed() == []

    def test_failed_step_enters_the_failed_queue_with_its_chain(
        self, app: App, backend: FailedQueueBackend, clock: ManualClock
    ) -> None:
        """The failed step's entry in the failed queue knows its chain and step."""
        fetch, parse, store = declare_tasks(app, "fetch", "parse", "store")
        handle = chain(fetch, parse, store).submit("url")
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        backend.settle([failed(reserve_one(backend), "bad markup", clock=clock, error_type="ValueError")])
        entry = backend.get_failed(handle.job_ids()[1][0])
        assert entry is not None
        assert entry.job.chain == ChainRef(chain_id=handle.id, step=1, member=0)
        assert entry.job.args == ("body",)

    def test_an_error_at_the_default_cap_is_kept_exactly(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A failure whose message and traceback were cut to the default cap is entered unchanged."""
        try:
            raise ValueError("héllo ✓ 😀 \ud800 " * 1_000_000)  # 22 MB, with a lone surrogate
        except ValueError as exc:
            error = ErrorInfo.from_exception(exc, attempt=1, at=clock.now())
        job = make_job()
        backend.enqueue([job])
        backend.settle([Failed(delivery=reserve_one(backend), error=error)])
        entry = backend.get_failed(job.id)
        assert entry is not None
        assert entry.error == error

    def test_a_failure_in_a_mixed_batch_is_entered(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Of a settle batch that completes, retries, fails and releases, only the failure is entered."""
        jobs = [make_job(args=[i]) for i in range(4)]
        backend.enqueue(jobs)
        done, again, broken, back = reserve(backend, limit=4)
        backend.settle(
            [
                completed(done, "ok", clock=clock),
                retried(again, 60.0, clock=clock),
                failed(broken, clock=clock),
                released(back),
            ]
        )
        assert [e.job.id for e in backend.failed()] == [jobs[2].id]

    def test_stale_failure_is_not_entered(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A stale worker's failure does not put the job in the failed queue."""
        job = make_job()
        backend.enqueue([job])
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        reserve_one(backend, worker="w-2")
        [result] = backend.settle([failed(stale, clock=clock)])
        assert not result.accepted
        assert backend.get_failed(job.id) is None
        assert backend.failed() == []

    def test_a_settled_delivery_failed_again_is_not_entered(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A failure for a delivery already completed leaves the failed queue empty."""
        backend.enqueue([make_job()])
        delivery = reserve_one(backend)
        backend.settle([completed(delivery, 1, clock=clock)])
        assert not backend.settle([failed(delivery, clock=clock)])[0].accepted
        assert backend.failed() == []


class Redrive(ConformanceBase):
    """Re-driving moves failed jobs back to ready as attempt 1 and resumes their chains."""

    def test_redrive_moves_a_job_back_to_ready(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A re-driven job leaves the failed queue and can be reserved again."""
        job = make_job(args=["x"])
        fail_jobs(backend, clock, [job])
        assert backend.redrive([job.id]) == [job.id]
        assert backend.get_failed(job.id) is None
        again = reserve_one(backend).job
        assert (again.id, again.task, again.args) == (job.id, job.task, job.args)

    def test_redrive_of_several_returns_the_ids_moved(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Re-driving several failed ids (one given twice) moves each once and says which moved."""
        jobs = [make_job(args=[i]) for i in range(3)]
        fail_jobs(backend, clock, jobs)
        moved = backend.redrive([jobs[0].id, jobs[2].id, jobs[0].id])
        assert moved == [jobs[0].id, jobs[2].id]
        assert [e.job.id for e in backend.failed()] == [jobs[1].id]
        assert sorted(d.job.id for d in reserve(backend)) == sorted([jobs[0].id, jobs[2].id])

    def test_redrive_of_an_id_not_failed_raises_and_moves_nothing(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """An id not in the failed queue among good ones raises NotInFailedQueueError naming it; none move."""
        jobs = [make_job(args=[i]) for i in range(2)]
        fail_jobs(backend, clock, jobs)
        with pytest.raises(NotInFailedQueueError) as caught:
            backend.redrive([jobs[0].id, "no-such-job", jobs[1].id])
        assert caught.value.job_ids == ("no-such-job",)
        assert "no-such-job" in str(caught.value)
        assert [e.job.id for e in backend.failed()] == [jobs[0].id, jobs[1].id]
        assert reserve(backend) == []

    def test_app_redrive_of_a_typo_raises(
        self, app: App, backend: FailedQueueBackend, clock: ManualClock
    ) -> None:
        """``app.failed.redrive`` raises for an unknown id instead of returning [], and moves nothing."""
        (boom,) = declare_tasks(app, "boom")
        handle = boom.submit()
        backend.settle([failed(reserve_one(backend), clock=clock)])
        with pytest.raises(NotInFailedQueueError) as caught:
            app.failed.redrive([handle.id, "typo"])
        assert (caught.value.job_ids, caught.value.moved) == (("typo",), ())
        assert [e.job.id for e in app.failed.list()] == [handle.id]
        assert app.failed.redrive([handle.id]) == [handle.id]
        with pytest.raises(NotInFailedQueueError):
            app.failed.redrive([handle.id])  # re-driven already

    def test_redrive_resets_the_attempt(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job that failed on its third attempt comes back as attempt 1."""
        job = make_job()
        backend.enqueue([job])
        for _ in range(2):
            backend.settle([retried(reserve_one(backend), 1.0, clock=clock)])
            clock.advance(1.5)
        last = reserve_one(backend)
        assert last.job.attempt == 3
        backend.settle([failed(last, clock=clock)])
        backend.redrive([job.id])
        redriven = reserve_one(backend)
        assert (redriven.job.attempt, redriven.delivery_count) == (1, 1)

    def test_redriven_job_gets_a_fresh_expiry_window(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job that expired and was re-driven may run again: its expiry lies ahead once more."""
        job = make_job(expires_at=clock.now() + 5.0)
        backend.enqueue([job])
        delivery = reserve_one(backend)
        clock.advance(10.0)
        backend.settle([failed(delivery, "expired", clock=clock, error_type="JobExpired")])
        clock.advance(100.0)
        backend.redrive([job.id])
        expires_at = reserve_one(backend).job.expires_at
        assert expires_at is not None
        assert expires_at > clock.now()

    def test_redriven_job_can_succeed(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A re-driven job that then completes is recorded as succeeded."""
        job = make_job()
        fail_jobs(backend, clock, [job])
        backend.redrive([job.id])
        backend.settle([completed(reserve_one(backend), "fixed", clock=clock)])
        record = backend.get_job(job.id)
        assert record is not None
        assert (record.state, record.result) == (JobState.SUCCEEDED, "fixed")

    def test_job_failing_again_goes_to_the_back(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A re-driven job that fails again is listed after the jobs that failed meanwhile."""
        first, second = make_job(args=[1]), make_job(args=[2])
        fail_jobs(backend, clock, [first, second])
        backend.redrive([first.id])
        clock.advance(1.0)
        backend.settle([failed(reserve_one(backend), clock=clock)])
        assert [e.job.id for e in backend.failed()] == [second.id, first.id]

    def test_redrive_resumes_a_halted_chain(
        self, app: App, backend: FailedQueueBackend, clock: ManualClock
    ) -> None:
        """Re-driving a chain's failed step runs it with its input and then the steps after it."""
        fetch, parse, store = declare_tasks(app, "fetch", "parse", "store")
        handle = chain(fetch, parse, store).submit("url")
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        failing = reserve_one(backend)
        backend.settle([failed(failing, clock=clock)])
        assert backend.redrive([failing.job.id]) == [failing.job.id]
        resumed = get_chain(backend, handle.id)
        assert resumed.state is ChainState.RUNNING
        assert [s.state for s in resumed.steps] == [StepState.COMPLETED, StepState.PENDING, StepState.PENDING]
        again = reserve_one(backend)
        assert (again.job.task, again.job.args, again.job.attempt) == ("parse", ("body",), 1)
        backend.settle([completed(again, "doc", clock=clock)])
        backend.settle([completed(reserve_one(backend), "stored", clock=clock)])
        record = get_chain(backend, handle.id)
        assert (record.state, record.result) == (ChainState.COMPLETED, "stored")
        assert record.render() == "fetch (succeeded) -> parse (succeeded) -> store (succeeded)"

    def test_redriven_job_starts_a_fresh_crash_count(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A job failed after crashes and re-driven has none."""
        job = make_job()
        backend.enqueue([job])
        first = reserve_one(backend, lease=5.0, worker="w-1")
        assert backend.mark_running([first]) == [True]
        clock.advance(6.0)
        second = reserve_one(backend, lease=5.0, worker="w-2")
        backend.settle([failed(second, "lost", clock=clock, error_type="WorkerLost")])
        assert backend.redrive([job.id]) == [job.id]
        assert reserve_one(backend).crashes == 0

    def test_redriven_job_keeps_its_signature(
        self, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """``sig`` and ``psig`` are kept in the failed entry and delivered unchanged after a re-drive."""
        job = evolve(make_job(args=["x"]), sig="v1.signature", psig="t:v1.previous")
        backend.enqueue([job])
        backend.settle([failed(reserve_one(backend), clock=clock)])
        entry = backend.get_failed(job.id)
        assert entry is not None
        assert entry.job.sig == job.sig
        backend.redrive([job.id])
        again = reserve_one(backend).job
        assert (again.sig, again.psig) == (job.sig, job.psig)

    def test_redrive_of_a_group_member_resumes_the_fan_in(
        self, app: App, backend: FailedQueueBackend, clock: ManualClock
    ) -> None:
        """Re-driving a failed group member lets the group finish and feed every result to the next step."""
        resize, total = declare_tasks(app, "resize", "total")
        handle = chain(group(resize.s(1), resize.s(2)), total).submit("img")
        first, second = reserve(backend)
        backend.settle([completed(first, "r1", clock=clock), failed(second, clock=clock)])
        assert get_chain(backend, handle.id).state is ChainState.HALTED
        backend.redrive([second.job.id])
        backend.settle([completed(reserve_one(backend), "r2", clock=clock)])
        following = reserve_one(backend).job
        assert (following.task, following.args) == ("total", (["r1", "r2"],))


class FailedPaging(ConformanceBase):
    """``app.failed.list()`` is one page that says whether more follow; ``app.failed.iter()`` yields all."""

    def test_list_says_when_more_entries_follow(
        self, app: App, backend: FailedQueueBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A page of ``limit`` entries says there is more and where the next page starts; pages tile."""
        jobs = [make_job(args=[i]) for i in range(7)]
        fail_jobs(backend, clock, jobs)
        first = app.failed.list(limit=3)
        assert isinstance(first, FailedPage)
        assert [e.job.id for e in first] == [j.id for j in jobs[:3]]
        assert (first.more, first.next_offset) == (True, 3)
        assert first[0].job.id == jobs[0].id
        second = app.failed.list(limit=3, offset=3)
        last = app.failed.list(limit=3, offset=second.next_offset or 0)
        assert [e.job.id for e in second] + [e.job.id for e in last] == [j.id for j in jobs[3:]]
        assert (last.more, last.next_offset) == (False, None)
        exact = app.failed.list(limit=7)
        assert (len(exact), exact.more) == (7, False)

    def test_iter_yields_every_entry_past_a_page(
        self,
        app: App,
        backend: FailedQueueBackend,
        clock: ManualClock,
        make_job: MakeJob,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """``iter()`` fetches page after page: every entry, oldest first, a task filter applied."""
        monkeypatch.setattr(app.failed, "PAGE", 2)
        jobs = [make_job(args=[i], task="a" if i % 2 else "b") for i in range(5)]
        fail_jobs(backend, clock, jobs)
        assert [e.job.id for e in app.failed.iter()] == [j.id for j in jobs]
        assert [e.job.id for e in app.failed] == [j.id for j in jobs]
        assert [e.job.id for e in app.failed.iter(task="a")] == [j.id for j in jobs if j.task == "a"]
        page = app.failed.list(task="b", limit=2)
        assert [e.job.id for e in page] == [jobs[0].id, jobs[2].id]
        assert (page.more, page.next_offset) == (True, 4)
        rest = app.failed.list(task="b", limit=2, offset=page.next_offset or 0)
        assert ([e.job.id for e in rest], rest.more) == ([jobs[4].id], False)
