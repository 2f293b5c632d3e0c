"""Browsing jobs: listed by queue and state in a stable order, by task, paged while the queue moves."""

from __future__ import annotations

from typing import cast

import pytest

from jobchain.backend import Backend
from jobchain.browsing import BROWSABLE
from jobchain.capabilities import Browse, Cancel, supports
from jobchain.clock import ManualClock
from jobchain.model import Job, JobState
from jobchain.testing.helpers import MakeJob, completed, failed, released, reserve, reserve_one
from jobchain.testing.suite._base import BrowseBackend, ConformanceBase

__all__ = ["BrowsePaging", "BrowseRules", "BrowsedStates"]


def ids(backend: BrowseBackend, state: JobState, queue: str = "default", **options: object) -> list[str]:
    """The ids of every job listed, page after page (pages of 2 unless ``limit`` is given)."""
    out: list[str] = []
    cursor: str | None = None
    options.setdefault("limit", 2)
    for _ in range(1000):
        page = backend.browse(queue=queue, state=state, cursor=cursor, **options)  # type: ignore[arg-type]
        out += [r.job.id for r in page.records]
        cursor = page.cursor
        if cursor is None:
            return out
    raise AssertionError("the listing never ended")


def spaced(make_job: MakeJob, clock: ManualClock, count: int, **options: object) -> list[Job]:
    """``count`` jobs enqueued one second apart (so their order is plain)."""
    jobs = []
    for n in range(count):
        jobs.append(make_job(args=[n], **options))  # type: ignore[arg-type]
        clock.advance(1.0)
    return jobs


class BrowseRules(ConformanceBase):
    """Base of the browse rules: skipped for a backend that does not declare Browse."""

    @pytest.fixture
    def browsable(self, backend: Backend) -> BrowseBackend:
        """The backend under test, which declares Browse; the rule is skipped for one that does not."""
        if not supports(backend, Browse):
            pytest.skip(f"{type(backend).__name__} does not declare Browse")
        return cast(BrowseBackend, backend)


class BrowsedStates(BrowseRules):
    """Each state lists its jobs with what it knows of them; counts agree."""

    def test_ready_jobs_newest_first(
        self, browsable: BrowseBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """Ready jobs are listed newest first by default, oldest first on request."""
        jobs = spaced(make_job, clock, 3)
        browsable.enqueue(jobs)
        expected = [j.id for j in jobs]
        assert ids(browsable, JobState.QUEUED) == expected[::-1]
        assert ids(browsable, JobState.QUEUED, oldest_first=True) == expected

    def test_only_the_queue_asked(self, browsable: BrowseBackend, make_job: MakeJob) -> None:
        """Jobs of another queue are not listed."""
        job = make_job(queue="a")
        browsable.enqueue([job, make_job(queue="b")])
        assert ids(browsable, JobState.QUEUED, queue="a") == [job.id]
        assert ids(browsable, JobState.QUEUED, queue="nowhere") == []

    def test_delayed_jobs_by_due_time(
        self, browsable: BrowseBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """Delayed jobs are listed as delayed, soonest due first when oldest first, not as ready."""
        late = make_job(not_before=clock.now() + 60)
        soon = make_job(not_before=clock.now() + 30)
        browsable.enqueue([late, soon])
        assert ids(browsable, JobState.DELAYED, oldest_first=True) == [soon.id, late.id]
        assert ids(browsable, JobState.QUEUED) == []

    def test_running_jobs_name_their_worker(self, browsable: BrowseBackend, make_job: MakeJob) -> None:
        """A reserved job is listed as running, with the worker holding it."""
        job = make_job()
        browsable.enqueue([job])
        reserve_one(browsable, worker="w-7")
        [record] = browsable.browse(queue="default", state=JobState.RUNNING).records
        assert (record.job.id, record.worker) == (job.id, "w-7")
        assert ids(browsable, JobState.QUEUED) == []

    def test_finished_jobs(self, browsable: BrowseBackend, make_job: MakeJob, clock: ManualClock) -> None:
        """Succeeded and failed jobs are listed with their result or error."""
        good, bad = make_job(args=[1]), make_job(args=[2])
        browsable.enqueue([good, bad])
        first, second = reserve(browsable, limit=2)
        ok, ko = (first, second) if first.job.id == good.id else (second, first)
        browsable.settle([completed(ok, 42, clock=clock), failed(ko, "boom", clock=clock)])
        [done] = browsable.browse(queue="default", state=JobState.SUCCEEDED).records
        assert (done.job.id, done.result) == (good.id, 42)
        [lost] = browsable.browse(queue="default", state=JobState.FAILED).records
        assert lost.job.id == bad.id
        assert lost.error is not None
        assert lost.error.message == "boom"

    def test_cancelled_jobs(self, browsable: BrowseBackend, make_job: MakeJob) -> None:
        """A cancelled job is listed as cancelled, not as ready (for a backend that can cancel)."""
        if not supports(browsable, Cancel):
            pytest.skip(f"{type(browsable).__name__} does not declare Cancel")
        job, kept = make_job(args=[1]), make_job(args=[2])
        browsable.enqueue([job, kept])
        cast(Cancel, browsable).cancel([job.id])
        assert ids(browsable, JobState.CANCELLED) == [job.id]
        assert ids(browsable, JobState.QUEUED) == [kept.id]
        assert browsable.counts("default")[JobState.CANCELLED] == 1

    def test_filtered_by_task(self, browsable: BrowseBackend, make_job: MakeJob, clock: ManualClock) -> None:
        """With a task name, only that task's jobs are listed, and paging still ends."""
        jobs = [make_job("a" if n % 3 == 0 else "b", args=[n]) for n in range(9)]
        browsable.enqueue(jobs)
        assert sorted(ids(browsable, JobState.QUEUED, task="a")) == sorted(j.id for j in jobs[::3])
        assert ids(browsable, JobState.QUEUED, task="nope") == []

    def test_counts_per_state(self, browsable: BrowseBackend, make_job: MakeJob, clock: ManualClock) -> None:
        """Counts have every browsable state, and follow the jobs."""
        browsable.enqueue([make_job(args=[n]) for n in range(3)] + [make_job(not_before=clock.now() + 60)])
        first = reserve_one(browsable)
        browsable.settle([completed(first, clock=clock)])
        reserve_one(browsable)
        counts = browsable.counts("default")
        assert set(counts) == set(BROWSABLE)
        assert counts[JobState.QUEUED] == 1
        assert counts[JobState.DELAYED] == 1
        assert counts[JobState.RUNNING] == 1
        assert counts[JobState.SUCCEEDED] == 1
        assert counts[JobState.FAILED] == 0
        assert set(browsable.counts("nowhere").values()) == {0}


class BrowsePaging(BrowseRules):
    """Cursors name a place in a stable order: paging never repeats or skips a job that stays put."""

    def test_pages_cover_every_job_once(
        self, browsable: BrowseBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """Pages of 2 over 7 jobs list each once, in order, the last page without a cursor."""
        jobs = spaced(make_job, clock, 7)
        browsable.enqueue(jobs)
        assert ids(browsable, JobState.QUEUED, oldest_first=True) == [j.id for j in jobs]
        page = browsable.browse(queue="default", state=JobState.QUEUED, limit=7)
        assert len(page.records) == 7

    def test_jobs_enqueued_in_the_same_instant(self, browsable: BrowseBackend, make_job: MakeJob) -> None:
        """Jobs with the same enqueue time are ordered by id, and paged without loss."""
        jobs = [make_job(args=[n]) for n in range(5)]
        browsable.enqueue(jobs)
        assert ids(browsable, JobState.QUEUED, oldest_first=True) == sorted(j.id for j in jobs)

    def test_paging_while_the_queue_moves(
        self, browsable: BrowseBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """Jobs taken, released and added between pages: every job ready all along is listed exactly once."""
        jobs = spaced(make_job, clock, 10)
        browsable.enqueue(jobs)
        page = browsable.browse(queue="default", state=JobState.QUEUED, limit=3, oldest_first=True)
        seen = [r.job.id for r in page.records]
        # the three listed are taken: one finishes, one comes back (behind the cursor); new jobs arrive
        taken = {d.job.id: d for d in reserve(browsable, limit=3)}
        assert set(taken) == set(seen)
        browsable.settle([completed(taken[seen[0]], clock=clock), released(taken[seen[1]])])
        fresh = spaced(make_job, clock, 4)
        browsable.enqueue(fresh)
        cursor = page.cursor
        while cursor is not None:
            page = browsable.browse(
                queue="default", state=JobState.QUEUED, limit=3, cursor=cursor, oldest_first=True
            )
            seen += [r.job.id for r in page.records]
            reserve(browsable, limit=1)  # mid-scan the oldest ready job (listed before) is taken
            cursor = page.cursor
        assert seen == [j.id for j in jobs + fresh]

    def test_a_bad_cursor_or_limit_is_refused(self, browsable: BrowseBackend) -> None:
        """A cursor that is not one of a listing, or a limit out of range, raises ValueError."""
        with pytest.raises(ValueError, match="cursor"):
            browsable.browse(queue="default", state=JobState.QUEUED, cursor="not-a-cursor")
        with pytest.raises(ValueError, match="limit"):
            browsable.browse(queue="default", state=JobState.QUEUED, limit=0)
