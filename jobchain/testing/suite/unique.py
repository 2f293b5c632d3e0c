"""Explicit ids (every backend) and uniqueness keys (backends that declare Uniqueness).

A submit under an id that exists, or with a key a live job of its queue
holds, stores nothing and answers with the existing job: once per key, even
when many threads submit the duplicate at the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import pytest
from attrs import evolve

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.capabilities import Cancel, FailedQueue, Uniqueness, supports
from jobchain.clock import ManualClock
from jobchain.model import Job, JobState
from jobchain.testing.helpers import MakeJob, completed, failed, released, reserve, reserve_one, retried
from jobchain.testing.suite._base import CancelBackend, ConformanceBase, UniquenessBackend

__all__ = ["ExplicitIds", "UniqueKeys", "UniqueRules", "UniqueSubmits"]


def _all_at_once(count: int, submit: Callable[[], str]) -> list[str]:
    """``submit`` run by ``count`` threads released together; the ids they answered."""
    barrier = threading.Barrier(count)
    answers: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait(10)
            answer = submit()
        except BaseException as exc:  # reported by the test below
            with lock:
                errors.append(exc)
            return
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return answers


def _echo(app: App, **options: Any) -> Any:
    @app.task(name="echo", **options)
    def echo(x: Any, other: Any = None) -> Any:
        return x

    return echo


class ExplicitIds(ConformanceBase):
    """A submit under an id that exists stores nothing and answers with the existing job."""

    def test_a_second_submit_with_an_id_returns_the_first_job(self, app: App, backend: Backend) -> None:
        """The handle of the second submit is the first job's; the first job's arguments are kept."""
        echo = _echo(app)
        first = echo.submit("first", job_id="order-1")
        second = echo.submit("second", job_id="order-1")
        assert second.id == first.id == "order-1"
        [delivery] = reserve(backend)
        assert delivery.job.args == ("first",)

    def test_concurrent_submits_with_one_id_store_one_job(self, app: App, backend: Backend) -> None:
        """Eight threads submitting one id at once store one job."""
        echo = _echo(app)
        answers = _all_at_once(8, lambda: echo.submit(1, job_id="same").id)
        assert answers == ["same"] * 8
        assert len(reserve(backend)) == 1


class UniqueRules(ConformanceBase):
    """Base of the uniqueness rules: skipped for a backend that does not declare Uniqueness."""

    @pytest.fixture
    def unique(self, backend: Backend) -> UniquenessBackend:
        """The backend under test, which declares Uniqueness; the rule is skipped for one that does not."""
        if not supports(backend, Uniqueness):
            pytest.skip(f"{type(backend).__name__} does not declare Uniqueness")
        return cast(UniquenessBackend, backend)


def _keyed(make_job: MakeJob, key: str = "k", **options: Any) -> Job:
    return evolve(make_job(**options), unique=key)


class UniqueKeys(UniqueRules):
    """``enqueue_unique``: a held key makes a duplicate store nothing; final states release it."""

    def test_a_held_key_stores_nothing_and_names_the_holder(
        self, unique: UniquenessBackend, make_job: MakeJob
    ) -> None:
        """The second job with a held key is not stored; its answer is the holder's id."""
        first, second = _keyed(make_job), _keyed(make_job, args=[2])
        assert unique.enqueue_unique([first], ["k"]) == [first.id]
        assert unique.enqueue_unique([second], ["k"]) == [first.id]
        assert unique.get_job(second.id) is None
        assert [d.job.id for d in reserve(unique)] == [first.id]

    def test_a_key_is_scoped_to_its_queue(self, unique: UniquenessBackend, make_job: MakeJob) -> None:
        """The same key on two queues is held by one job of each."""
        a, b = _keyed(make_job, queue="a"), _keyed(make_job, queue="b")
        assert unique.enqueue_unique([a, b], ["k", "k"]) == [a.id, b.id]

    def test_one_batch_with_one_key_stores_the_first(
        self, unique: UniquenessBackend, make_job: MakeJob
    ) -> None:
        """Two jobs of one batch with one key: the first is stored, both answers name it."""
        first, second = _keyed(make_job), _keyed(make_job, args=[2])
        assert unique.enqueue_unique([first, second], ["k", "k"]) == [first.id, first.id]
        assert unique.get_job(second.id) is None

    def test_an_existing_id_stores_nothing_and_takes_no_key(
        self, unique: UniquenessBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """A job whose id exists answers with its own id and leaves the key free."""
        done = make_job()
        unique.enqueue([done])
        assert unique.enqueue_unique([evolve(done, unique="k")], ["k"]) == [done.id]
        other = _keyed(make_job)
        assert unique.enqueue_unique([other], ["k"]) == [other.id]

    def test_success_releases_the_key(
        self, unique: UniquenessBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """Once the holder succeeded, a job with its key is stored."""
        first = _keyed(make_job)
        unique.enqueue_unique([first], ["k"])
        unique.settle([completed(reserve_one(unique), 1, clock=clock)])
        again = _keyed(make_job)
        assert unique.enqueue_unique([again], ["k"]) == [again.id]

    def test_cancelling_the_holder_releases_the_key(
        self, unique: UniquenessBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """A cancelled holder (ready or delayed) frees its key; a running one keeps it until settled."""
        if not supports(unique, Cancel):
            pytest.skip(f"{type(unique).__name__} does not declare Cancel")
        canceller = cast(CancelBackend, unique)
        first, delayed = _keyed(make_job), _keyed(make_job, key="d", not_before=clock.now() + 60)
        unique.enqueue_unique([first, delayed], ["k", "d"])
        assert canceller.cancel([first.id, delayed.id]).cancelled == (first.id, delayed.id)
        again, later = _keyed(make_job), _keyed(make_job, key="d")
        assert unique.enqueue_unique([again, later], ["k", "d"]) == [again.id, later.id]
        running = reserve_one(unique)
        assert running.job.id == again.id
        assert canceller.cancel([again.id]).requested == (again.id,)
        duplicate = _keyed(make_job)
        assert unique.enqueue_unique([duplicate], ["k"]) == [again.id]  # still running: still held

    def test_the_key_is_kept_through_a_retry_and_a_release(
        self, unique: UniquenessBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """A retried job (delayed) and a released one (queued) still hold their key."""
        first = _keyed(make_job)
        unique.enqueue_unique([first], ["k"])
        unique.settle([retried(reserve_one(unique), 5.0, clock=clock)])
        assert unique.enqueue_unique([_keyed(make_job)], ["k"]) == [first.id]
        clock.advance(6)
        unique.settle([released(reserve_one(unique))])
        assert unique.enqueue_unique([_keyed(make_job)], ["k"]) == [first.id]
        unique.settle([completed(reserve_one(unique), 1, clock=clock)])
        record = unique.get_job(first.id)
        assert record is not None
        assert (record.state, record.job.attempt) == (JobState.SUCCEEDED, 2)

    def test_the_key_stays_with_the_job_after_its_lease_runs_out(
        self, unique: UniquenessBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """A crash (the lease ends unsettled) leaves the key with the job delivered again."""
        first = _keyed(make_job)
        unique.enqueue_unique([first], ["k"])
        reserve_one(unique, lease=1.0)
        clock.advance(2)
        assert unique.enqueue_unique([_keyed(make_job)], ["k"]) == [first.id]
        again = reserve_one(unique, worker="worker-b")
        assert again.job.id == first.id
        unique.settle([completed(again, 1, clock=clock)])
        later = _keyed(make_job)
        assert unique.enqueue_unique([later], ["k"]) == [later.id]

    def test_a_failure_releases_the_key_and_a_redrive_does_not_take_it_back(
        self, unique: UniquenessBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """The failed job frees its key; re-driven, it runs without it and frees nobody else's."""
        first = _keyed(make_job)
        unique.enqueue_unique([first], ["k"])
        unique.settle([failed(reserve_one(unique), clock=clock)])
        second = _keyed(make_job, args=[2])
        assert unique.enqueue_unique([second], ["k"]) == [second.id]
        if not isinstance(unique, FailedQueue):
            return
        assert unique.redrive([first.id]) == [first.id]
        held = {d.job.id: d for d in reserve(unique)}
        assert set(held) == {first.id, second.id}
        unique.settle([completed(held[first.id], 1, clock=clock)])
        assert unique.enqueue_unique([_keyed(make_job)], ["k"]) == [second.id]

    def test_a_timed_key_outlives_its_job_then_expires(
        self, unique: UniquenessBackend, make_job: MakeJob, clock: ManualClock
    ) -> None:
        """With ``hold`` the key is held that long on the backend's clock, whatever the job does."""
        first = make_job()
        assert unique.enqueue_unique([first], ["k"], hold=10.0) == [first.id]
        unique.settle([completed(reserve_one(unique), 1, clock=clock)])
        assert unique.enqueue_unique([make_job()], ["k"], hold=10.0) == [first.id]
        clock.advance(11)
        later = make_job()
        assert unique.enqueue_unique([later], ["k"], hold=10.0) == [later.id]

    def test_a_job_must_carry_the_key_it_holds_until_it_finishes(
        self, unique: UniquenessBackend, make_job: MakeJob
    ) -> None:
        """``hold=None`` with a job that does not carry its key is refused before anything is stored."""
        job = make_job()
        with pytest.raises(ValueError, match="unique"):
            unique.enqueue_unique([job], ["k"])
        assert unique.get_job(job.id) is None


class UniqueSubmits(UniqueRules):
    """The App over the backend: keys derived by tasks or given per submit, and concurrent duplicates."""

    def test_a_task_declared_unique_by_arguments(self, app: App, unique: UniquenessBackend) -> None:
        """``unique=("x",)``: a call with the same ``x`` returns the holder, another ``x`` is stored."""
        echo = _echo(app, unique=("x",))
        first = echo.submit(1, other="a")
        assert echo.submit(1, other="b").id == first.id
        assert echo.submit(2).id != first.id
        assert len(reserve(unique)) == 2

    def test_concurrent_duplicate_submits_store_one_job(self, app: App, unique: UniquenessBackend) -> None:
        """Eight threads submitting one key at once store one job; every handle is its."""
        echo = _echo(app)
        answers = _all_at_once(8, lambda: echo.submit(1, unique_key="report").id)
        assert len(set(answers)) == 1
        [delivery] = reserve(unique)
        assert delivery.job.id == answers[0]
        assert delivery.job.unique == "report"

    def test_unique_for_holds_the_key_after_the_job(
        self, app: App, unique: UniquenessBackend, clock: ManualClock
    ) -> None:
        """A key given ``unique_for`` seconds is held after its job succeeded, until they pass."""
        echo = _echo(app)
        first = echo.submit(1, unique_key="daily", unique_for=60)
        unique.settle([completed(reserve_one(unique), 1, clock=clock)])
        assert echo.submit(2, unique_key="daily", unique_for=60).id == first.id
        clock.advance(61)
        assert echo.submit(3, unique_key="daily", unique_for=60).id != first.id
