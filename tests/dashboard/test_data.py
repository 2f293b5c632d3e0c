"""The dashboard's data layer: every figure checked against what was run, on real workers and a manual clock.

Figures of real runs are checked against the job records' own timings,
gathered from the handles (not from the listing the layer reads); window
edges, caps and the worst-first order are built on a manual clock, settling
deliveries with chosen start and finish times.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobchain_dashboard import data
from jobchain_dashboard._figures import MAX_BUCKETS, MAX_CAP
from jobchain_sqlite import SqliteBackend

from jobchain import App, Backend, Fail, ManualClock, Plugins, Retry, Worker, chain, group
from jobchain.browsing import Jobs
from jobchain.capabilities import JobPage
from jobchain.memory import MemoryBackend
from jobchain.model import Completed, JobRecord, JobState, StepState
from jobchain.testing import eventually, failed, make_job, reserve_one

ROOT = Path(__file__).resolve().parents[2]

T0 = 1_800_000_000.0


# --- helpers --------------------------------------------------------------------------------


def _quantile(values: list[float], q: int) -> float:
    """The q-th percentile, interpolated between ranks (the oracle: statistics, not the layer's code)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _due(record: JobRecord) -> float:
    nb = record.job.not_before
    return record.job.enqueued_at if nb is None or nb < record.job.enqueued_at else nb


def _records(app: App, ids: list[str]) -> list[JobRecord]:
    found = [app.jobs.get(i) for i in ids]
    assert all(r is not None for r in found)
    return [r for r in found if r is not None]


def _member_ids(app: App, chain_id: str, *, run: bool = False) -> list[str]:
    """The job ids of a chain's members (with ``run``: only those that were enqueued)."""
    record = app.backend.get_chain(chain_id)
    assert record is not None
    members = [m for step in record.steps for m in step.members]
    return [m.job_id for m in members if not run or m.state is not StepState.NOT_EXECUTED]


def _finish(app: App, clock: ManualClock, *, queue: str, started: float, finished: float) -> str:
    """Submit a job of ``queue`` now, run it from ``started`` to ``finished`` (settled by hand)."""
    job_id = app.submit(f"work_{queue}", 1).id
    delivery = reserve_one(app.backend, [queue])
    assert delivery.job.id == job_id
    app.backend.settle([Completed(delivery=delivery, result=1, started_at=started, finished_at=finished)])
    return job_id


def _fail(app: App, clock: ManualClock, *, queue: str, error: str = "ValueError") -> str:
    """Submit a job of ``queue`` now and fail it for good with ``error`` (settled by hand)."""
    job_id = app.submit(f"work_{queue}", 1).id
    delivery = reserve_one(app.backend, [queue])
    app.backend.settle([failed(delivery, "no", clock=clock, error_type=error)])
    return job_id


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at T0."""
    return ManualClock(T0)


@pytest.fixture
def manual(clock: ManualClock) -> Iterator[App]:
    """An App on a memory backend and a manual clock, with one task per queue a-d."""
    app = App(MemoryBackend(clock=clock), plugins=Plugins(entry_points=False), clock=clock)
    for queue in "abcd":
        app.task(lambda x: x, name=f"work_{queue}", queue=queue)
    yield app
    app.close()


@pytest.fixture
def system_app() -> Iterator[App]:
    """An App on a memory backend and the system clock, for real workers."""
    app = App(MemoryBackend(), plugins=Plugins(entry_points=False))
    yield app
    app.close()


def _declare(app: App) -> dict[str, Any]:
    """ok; boom (fails for good); fatal (raises Fail); flaky (fails twice, then succeeds);
    slow (queue slow: waits for ``release``); parked (queue held)."""
    calls: dict[int, int] = {}
    release = threading.Event()

    @app.task
    def ok(x: Any) -> Any:
        return x

    @app.task
    def boom(x: Any) -> Any:
        raise ValueError(f"boom {x}")

    @app.task
    def fatal(x: Any) -> Any:
        raise Fail("given up")

    @app.task(retry=Retry(attempts=3, base=0.02, factor=1.0, jitter=False))
    def flaky(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if calls[x] < 3:
            raise RuntimeError(f"attempt {calls[x]}")
        return x

    @app.task(queue="slow")
    def slow(x: Any) -> Any:
        release.wait(10)
        return x

    @app.task(queue="held")
    def parked(x: Any) -> Any:
        return x

    return {
        "ok": ok,
        "boom": boom,
        "fatal": fatal,
        "flaky": flaky,
        "slow": slow,
        "parked": parked,
        "release": release,
    }


# --- the overview on real workers ---------------------------------------------------------


def _start_run(record: JobRecord) -> tuple[JobRecord, float, float] | None:
    """(record, start, seconds run) from the record's own times, or a failed one's error (``at - ran``)."""
    if record.started_at is not None and record.finished_at is not None:
        return record, record.started_at, record.finished_at - record.started_at
    error = record.error
    if record.state is JobState.FAILED and error is not None and error.ran is not None:
        return record, error.at - error.ran, error.ran
    return None


def test_overview_figures_are_those_of_the_records(
    system_app: App, start_worker: Callable[..., Worker]
) -> None:
    """Counts, throughput, wait and run percentiles and the sparkline of a real run match its records."""
    app = system_app
    t = _declare(app)
    app.pause("held")
    parked = t["parked"].submit(0)
    delayed = t["ok"].submit(99, countdown=3600)
    plain = [t["ok"].submit(i) for i in range(6)]
    boom = t["boom"].submit(1)
    flaky = t["flaky"].submit(7)
    halted = app.submit(chain(t["ok"], t["boom"], t["ok"]), 1)
    fanned = app.submit(chain(t["ok"], group(t["ok"], t["ok"]), t["ok"]), 2)
    start_worker(app, queues=["default"])
    for handle in [*plain, flaky]:
        handle.wait(10)
    for handle in (boom, halted, fanned):
        assert eventually(lambda h=handle: h.status() in ("failed", "succeeded"))
    ids = [h.id for h in (*plain, flaky, boom)] + _member_ids(app, halted.id, run=True)
    ids += _member_ids(app, fanned.id, run=True)
    records = [r for r in _records(app, ids) if r.state.finished]
    succeeded = [r for r in records if r.state is JobState.SUCCEEDED]
    lost = [r for r in records if r.state is JobState.FAILED]
    assert (len(succeeded), len(lost)) == (6 + 1 + 1 + 4, 2)
    now = max(r.finished_at or 0.0 for r in records) + 1.0

    view = data.overview(app, window=300, buckets=30, now=now)

    rows = {r.queue: r for r in view.queues}
    assert set(rows) == {"default", "held", "slow"}
    default = rows["default"]
    assert (default.ready, default.delayed, default.running, default.failed) == (0, 1, 0, 2)
    assert (default.figures.succeeded, default.figures.failed) == (len(succeeded), len(lost))
    assert default.figures.throughput == pytest.approx((len(succeeded) + len(lost)) * 60 / 300)
    timed = [t for t in map(_start_run, records) if t is not None]
    waits = sorted(max(0.0, start - _due(r)) for r, start, _ in timed)
    runs = sorted(ran for _, _, ran in timed)
    assert default.figures.timed == len(timed) == len(succeeded) + len(lost)  # failed: from error.ran
    assert default.figures.wait_p50 == pytest.approx(_quantile(waits, 50))
    assert default.figures.wait_p95 == pytest.approx(_quantile(waits, 95))
    assert default.figures.run_p50 == pytest.approx(_quantile(runs, 50))
    assert default.figures.run_p95 == pytest.approx(_quantile(runs, 95))
    # the retried job waited from its retry's time, not from its submit
    retried = app.jobs.get(flaky.id)
    assert retried is not None
    assert retried.job.not_before is not None
    assert retried.job.not_before > retried.job.enqueued_at
    # each job in the 10 s bucket its finish falls in
    for state, spark in ((succeeded, default.figures.spark_succeeded), (lost, default.figures.spark_failed)):
        expected = [0] * 30
        for record in state:
            expected[min(29, int(((record.finished_at or 0.0) - (now - 300)) // 10))] += 1
        assert spark == tuple(expected)
    assert not default.figures.sampled
    held = rows["held"]
    assert (held.paused, held.ready, held.oldest_job) == (True, 1, parked.id)
    assert held.oldest_age == pytest.approx(now - _records(app, [parked.id])[0].job.enqueued_at)
    assert (view.ready, view.delayed, view.failed) == (1, 1, 2)
    assert view.totals.finished == len(records)
    assert view.workers == 1
    assert view.notes == ()
    assert delayed.status() == "delayed"


def _sqlite(tmp_path: Path) -> Backend:
    return SqliteBackend(str(tmp_path / "jobs.db"))


def _fake_redis(kind: str) -> Callable[[Path], Backend]:
    def make(tmp_path: Path) -> Backend:
        fakeredis = pytest.importorskip("fakeredis", reason="pip install -e backends/redis[test]")
        from jobchain_redis.lists import ListsBackend
        from jobchain_redis.streams import StreamsBackend

        backend = ListsBackend if kind == "lists" else StreamsBackend
        return backend(fakeredis.FakeRedis(decode_responses=True), prefix=f"dash{tmp_path.name[-8:]}")

    return make


@pytest.mark.parametrize(
    "open_backend",
    [_sqlite, _fake_redis("lists"), _fake_redis("streams")],
    ids=["sqlite", "redis-lists", "redis-streams"],
)
def test_overview_on_other_backends(
    tmp_path: Path, start_worker: Callable[..., Worker], open_backend: Callable[[Path], Backend]
) -> None:
    """On SQLite and the Redis layouts, the overview's counts and figures are those of the run's records."""
    app = App(open_backend(tmp_path), plugins=Plugins(entry_points=False))
    try:
        t = _declare(app)
        handles = [t["ok"].submit(i) for i in range(5)]
        boom = t["boom"].submit(1)
        later = t["ok"].submit(5, countdown=3600)
        start_worker(app, queues=["default"])
        for handle in handles:
            handle.wait(10)
        assert eventually(lambda: boom.status() == "failed")
        records = _records(app, [h.id for h in (*handles, boom)])
        now = max(r.finished_at or 0.0 for r in records) + 0.5
        view = data.overview(app, window=60, buckets=6, now=now)
        [default] = [r for r in view.queues if r.queue == "default"]
        assert (default.ready, default.delayed, default.failed) == (0, 1, 1)
        assert (default.figures.succeeded, default.figures.failed) == (5, 1)
        assert default.figures.throughput == pytest.approx(6 * 60 / 60)
        timed = [t for t in map(_start_run, records) if t is not None]
        runs = [ran for _, _, ran in timed]
        waits = [max(0.0, start - _due(r)) for r, start, _ in timed]
        assert default.figures.timed == len(timed) == 6  # the failed job's from its error
        assert default.figures.run_p95 == pytest.approx(_quantile(runs, 95))
        assert default.figures.wait_p50 == pytest.approx(_quantile(waits, 50))
        assert sum(default.figures.spark_succeeded) == 5
        assert sum(default.figures.spark_failed) == 1
        assert view.workers == 1
        assert later.status() == "delayed"
    finally:
        app.close()


# --- the overview on a manual clock: edges, caps, order ------------------------------------


def test_window_edges_and_buckets(manual: App, clock: ManualClock) -> None:
    """A job finished at the window's start or at ``now`` counts; one before, or after ``now``, does not."""
    now = T0 + 1000.0
    start = now - 300.0
    inside = {
        start: 0,  # the first instant of the window: bucket 0
        start + 59.999: 0,
        start + 60.0: 1,
        now - 0.001: 4,
        now: 4,  # the last instant: the last bucket
    }
    for finished in [start - 0.001, *inside, now + 0.001]:
        _finish(manual, clock, queue="a", started=finished - 0.5, finished=finished)
    view = data.overview(manual, window=300, buckets=5, now=now)
    [row] = [r for r in view.queues if r.queue == "a"]
    assert row.figures.succeeded == len(inside)
    assert row.figures.spark_succeeded == (2, 1, 0, 0, 2)
    assert row.figures.spark_failed == (0, 0, 0, 0, 0)
    assert row.figures.bucket_seconds == pytest.approx(60.0)
    assert row.figures.spark_start == pytest.approx(start)
    assert row.figures.run_p50 == pytest.approx(0.5)
    assert row.figures.throughput == pytest.approx(len(inside) * 60 / 300)
    assert row.figures.spark_max == 2


def test_wait_counts_from_the_due_time(manual: App, clock: ManualClock) -> None:
    """Wait is start minus enqueue, or minus ``not_before`` for a delayed job; p50 and p95 interpolate."""
    starts = [2.0, 4.0, 6.0, 8.0, 10.0]
    for offset in starts:  # enqueued at T0, started offset seconds later, ran 1 s
        _finish(manual, clock, queue="a", started=T0 + offset, finished=T0 + offset + 1.0)
    manual.submit_later("work_b", (1,), countdown=5.0)
    clock.advance(6.0)
    delivery = reserve_one(manual.backend, ["b"])
    manual.backend.settle([Completed(delivery=delivery, started_at=T0 + 7.5, finished_at=T0 + 9.0)])
    view = data.overview(manual, window=60, now=T0 + 20.0)
    rows = {r.queue: r for r in view.queues}
    assert rows["a"].figures.wait_p50 == pytest.approx(6.0)
    assert rows["a"].figures.wait_p95 == pytest.approx(_quantile(starts, 95))
    assert rows["a"].figures.run_p95 == pytest.approx(1.0)
    assert rows["b"].figures.wait_p50 == pytest.approx(2.5)  # due at T0 + 5, started at T0 + 7.5
    assert view.totals.wait_p50 == pytest.approx(_quantile([*starts, 2.5], 50))


def test_the_cap_bounds_reads_and_says_the_figures_are_sampled(
    manual: App, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap, the newest records are used over the time they cover; older buckets are unknown."""
    for second in range(1, 26):  # 25 jobs finished at T0+1 .. T0+25
        _finish(manual, clock, queue="a", started=T0 + second - 0.1, finished=T0 + second)
    read: list[int] = []
    original = Jobs.list

    def counting(self: Jobs, *args: Any, **kwargs: Any) -> JobPage:
        page = original(self, *args, **kwargs)
        read.append(len(page.records))
        return page

    monkeypatch.setattr(Jobs, "list", counting)
    view = data.overview(manual, window=30, buckets=6, now=T0 + 30.0, cap=10)
    [row] = [r for r in view.queues if r.queue == "a"]
    assert row.figures.sampled
    assert view.sampled
    assert row.figures.succeeded == 10  # T0+16 .. T0+25
    assert row.figures.throughput == pytest.approx(10 * 60 / (30.0 - 16.0))
    # buckets of 5 s from T0: those starting before T0+16 are not known
    assert row.figures.spark_succeeded == (None, None, None, None, 5, 1)
    assert any("newest 10 finished jobs" in note for note in view.notes)
    assert sum(read) <= 2 * (10 + 1)  # succeeded and failed, one record past the cap at most
    uncapped = data.overview(manual, window=30, buckets=6, now=T0 + 30.0, cap=25)
    assert not uncapped.sampled
    assert uncapped.queues[0].figures.spark_succeeded == (4, 5, 5, 5, 5, 1)


def test_queues_are_listed_worst_first(manual: App, clock: ManualClock) -> None:
    """Most failed first; then the oldest waiting job; then the deepest backlog; then the name."""
    manual.submit("work_c", 1)  # c: one ready job, waiting since T0
    clock.advance(30)
    for _ in range(4):
        manual.submit("work_b", 1)  # b: four ready jobs, waiting since T0 + 30
    _fail(manual, clock, queue="d")  # d: one failed job
    manual.submit("work_d", 2)
    manual.backend.enqueue([make_job(clock, "elsewhere", queue="zeta", enqueued_at=T0 + 35.0)])
    view = data.overview(manual, now=T0 + 40.0)
    # zeta: a queue only the backend knows (no task of this App); a, default: declared, empty
    assert [r.queue for r in view.queues] == ["d", "c", "b", "zeta", "a", "default"]
    rows = {r.queue: r for r in view.queues}
    assert rows["c"].oldest_age == pytest.approx(40.0)
    assert rows["b"].oldest_age == pytest.approx(10.0)
    assert (rows["a"].oldest_age, rows["a"].oldest_job) == (None, None)
    assert rows["d"].failed == 1
    assert rows["zeta"].oldest_age == pytest.approx(5.0)
    assert (view.ready, view.failed) == (7, 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 0}, "window must be between 1 and 86400 seconds, got 0"),
        ({"window": float("inf")}, "window must be between"),
        ({"window": float("nan")}, "window must be between"),
        ({"window": True}, "window must be between"),
        ({"window": "300"}, "window must be between"),
        ({"buckets": 0}, f"buckets must be an integer between 1 and {MAX_BUCKETS}, got 0"),
        ({"buckets": 10**9}, "buckets must be an integer"),
        ({"cap": 0}, f"cap must be an integer between 1 and {MAX_CAP}"),
        ({"cap": 2.5}, "cap must be an integer"),
        ({"now": float("nan")}, "now must be a finite number of seconds"),
        ({"now": "x" * 10_000}, "now must be a finite number of seconds"),
    ],
)
def test_overview_parameters_are_bounded(manual: App, options: dict[str, Any], message: str) -> None:
    """Every parameter out of range is a ValueError of one short line."""
    with pytest.raises(ValueError) as caught:
        data.overview(manual, **options)
    text = str(caught.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert len(text) < 200


# --- a queue -------------------------------------------------------------------------------


def test_queue_page_lists_a_state_page_by_page(manual: App, clock: ManualClock) -> None:
    """Pages of a state cover each job once; the counts, paused flag and task names come along."""
    manual.task(lambda x: x, name="other_a", queue="a")
    done = [_finish(manual, clock, queue="a", started=T0, finished=T0 + i) for i in range(5)]
    manual.submit("other_a", 1)
    manual.submit_later("work_a", (1,), countdown=60)
    manual.pause("a")
    seen: list[str] = []
    cursor = None
    while True:
        page = data.queue_page(manual, "a", "succeeded", cursor=cursor, limit=2)
        seen += [r.job.id for r in page.records]
        assert len(page.records) <= 2
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == done[::-1]  # newest first
    assert page.counts[JobState.SUCCEEDED] == 5
    assert page.counts[JobState.QUEUED] == 1
    assert page.counts[JobState.DELAYED] == 1
    assert page.paused
    assert page.tasks == ("other_a", "work_a")
    ready = data.queue_page(manual, "a", "ready", task="other_a")
    assert ready.state is JobState.QUEUED
    assert [r.job.task for r in ready.records] == ["other_a"]
    assert data.queue_page(manual, "a", JobState.QUEUED, task="work_a").records == ()
    assert data.queue_page(manual, "b", "ready").paused is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit must be an integer between 1 and 1000, got 0"),
        ({"limit": 1001}, "limit must be an integer between 1 and 1000"),
        ({"limit": True}, "limit must be an integer between"),
        ({"limit": "9" * 10_000}, "limit must be an integer between"),
        ({"state": "bogus"}, "unknown job state 'bogus'"),
        ({"state": "x" * 5000}, "unknown job state"),
        ({"state": JobState.BUFFERED}, "unknown job state 'buffered'"),
        ({"state": 3}, "state must be one of ready, queued"),
        ({"queue": ""}, "queue must be a text of 1 to 1024 characters"),
        ({"queue": "q" * 1025}, "queue must be a text"),
        ({"queue": None}, "queue must be a text"),
        ({"task": "t" * 1025}, "task must be a text"),
        ({"cursor": "not-a-cursor"}, "not a cursor of this listing"),
        ({"cursor": 12}, "not a cursor of this listing"),
        ({"cursor": "A" * 100_000}, "not a cursor of this listing"),
    ],
)
def test_queue_page_parameters_are_checked(manual: App, options: dict[str, Any], message: str) -> None:
    """A bad queue, state, task, cursor or limit is a ValueError of one short line."""
    arguments: dict[str, Any] = {"queue": "a", "state": "ready", **options}
    with pytest.raises(ValueError) as caught:
        data.queue_page(manual, arguments.pop("queue"), arguments.pop("state"), **arguments)
    text = str(caught.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert len(text) < 200


# --- a job -----------------------------------------------------------------------------------


def test_job_detail_of_a_failed_job(system_app: App, start_worker: Callable[..., Worker]) -> None:
    """A failed job shows its error, is in the failed queue, can be re-driven and not cancelled."""
    t = _declare(system_app)
    handle = t["boom"].submit(3)
    start_worker(system_app, queues=["default"])
    assert eventually(lambda: handle.status() == "failed")
    detail = data.job_detail(system_app, handle.id)
    assert detail is not None
    assert detail.state is JobState.FAILED
    assert [(e.attempt, e.type, e.message, e.retry_in) for e in detail.errors] == [
        (1, "ValueError", "boom 3", None)
    ]
    assert "ValueError: boom 3" in (detail.errors[0].traceback or "")
    assert (detail.in_failed_queue, detail.can_redrive, detail.can_cancel) == (True, True, False)
    system_app.failed.purge([handle.id])
    purged = data.job_detail(system_app, handle.id)
    assert purged is not None
    assert (purged.in_failed_queue, purged.can_redrive) == (False, False)


def test_job_detail_of_waiting_and_running_jobs(manual: App, clock: ManualClock) -> None:
    """Queued, delayed and running jobs can be cancelled; a running one names its worker and chain step."""
    queued = manual.submit("work_a", 1).id
    delayed = manual.submit_later("work_b", (1,), countdown=60).id
    steps = manual.submit(chain(manual.get_task("work_c"), manual.get_task("work_c")), 1)
    reserve_one(manual.backend, ["c"], worker="w-1")
    for job_id in (queued, delayed):
        detail = data.job_detail(manual, job_id)
        assert detail is not None
        assert detail.can_cancel
        assert not detail.can_redrive
    first = _member_ids(manual, steps.id)[0]
    running = data.job_detail(manual, first)
    assert running is not None
    assert running.state is JobState.RUNNING
    assert running.record.worker == "w-1"
    assert (running.chain_id, running.chain_step) == (steps.id, 1)
    assert running.can_cancel
    assert data.job_detail(manual, "no-such-job") is None


def test_job_detail_of_a_job_waiting_for_its_retry(
    system_app: App, start_worker: Callable[..., Worker]
) -> None:
    """A job that failed once and waits for its next attempt shows that error and can be cancelled."""

    @system_app.task(retry=Retry(attempts=2, base=3600.0, cap=7200.0, jitter=False))
    def later(x: int) -> int:
        raise RuntimeError(f"not yet {x}")

    handle = later.submit(4)
    start_worker(system_app, queues=["default"])
    assert eventually(lambda: handle.status() == "delayed")
    detail = data.job_detail(system_app, handle.id)
    assert detail is not None
    assert detail.record.job.attempt == 2
    assert [(e.attempt, e.type, e.message) for e in detail.errors] == [(1, "RuntimeError", "not yet 4")]
    assert (detail.can_cancel, detail.can_redrive, detail.in_failed_queue) == (True, False, False)
    due = detail.record.job.not_before
    assert due is not None
    assert due == pytest.approx(detail.errors[0].at + 3600.0, abs=1.0)


def test_the_longest_ids_jobchain_makes_are_accepted(manual: App) -> None:
    """A chain under a 200-character id and its members' longer ids are shown; an id past the bound is not."""
    work = manual.get_task("work_a")
    handle = manual.submit_as("c" * 200, chain(work, work), 1)
    detail = data.chain_detail(manual, handle.id)
    assert detail is not None
    first = detail.steps[0].job_ids[0]
    assert len(first) > 200
    job = data.job_detail(manual, first)
    assert job is not None
    assert job.chain_id == handle.id
    with pytest.raises(ValueError, match=r"^job id must be a text of 1 to 1024 characters$"):
        data.job_detail(manual, "j" * 1025)
    with pytest.raises(ValueError, match=r"^chain id must be a text"):
        data.chain_detail(manual, "")


def test_job_detail_shows_every_attempt_with_its_backoff_and_run_time(
    app: App, start_worker: Callable[..., Worker]
) -> None:
    """A job that failed twice then succeeded shows both failed attempts, in order, with backoff and run."""
    from jobchain import current_job

    @app.task(retry=Retry(attempts=3, base=0.02, factor=2.0, jitter=False))
    def flaky() -> str:
        attempt = current_job().attempt
        if attempt < 3:
            raise RuntimeError(f"attempt {attempt} failed")
        return "third time"

    handle = flaky.submit()
    start_worker(app)
    assert handle.wait(timeout=10) == "third time"
    detail = data.job_detail(app, handle.id)
    assert detail is not None
    assert [(e.attempt, e.type, e.message, e.retry_in) for e in detail.errors] == [
        (1, "RuntimeError", "attempt 1 failed", 0.02),
        (2, "RuntimeError", "attempt 2 failed", 0.04),
    ]
    assert all(e.ran is not None and e.traceback and "in flaky" in e.traceback for e in detail.errors)
    assert detail.errors[0].at < detail.errors[1].at


# --- a chain --------------------------------------------------------------------------------


def test_chain_detail_of_a_halted_chain_and_a_group(
    system_app: App, start_worker: Callable[..., Worker]
) -> None:
    """Steps in order with their jobs, the rendering, and the failed step's jobs to re-drive."""
    t = _declare(system_app)
    halted = system_app.submit(chain(t["ok"], t["boom"], t["ok"]), 1)
    fanned = system_app.submit(chain(t["ok"], group(t["ok"], t["fatal"], t["ok"]), t["ok"]), 2)
    start_worker(system_app, queues=["default"])
    for handle in (halted, fanned):
        assert eventually(lambda h=handle: h.status() == "failed")
    detail = data.chain_detail(system_app, halted.id)
    assert detail is not None
    assert detail.rendered == "ok (succeeded) -> boom (failed) -> ok (not executed)"
    members = _member_ids(system_app, halted.id)
    assert [s.job_ids for s in detail.steps] == [(members[0],), (members[1],), (members[2],)]
    assert [s.state for s in detail.steps] == [StepState.SUCCEEDED, StepState.FAILED, StepState.NOT_EXECUTED]
    assert (detail.failed_step, detail.failed_job_ids, detail.redrive_ids) == (
        2,
        (members[1],),
        (members[1],),
    )
    group_detail = data.chain_detail(system_app, fanned.id)
    assert group_detail is not None
    assert group_detail.rendered == ("ok (succeeded) -> group(ok, fatal, ok) (failed) -> ok (not executed)")
    second = group_detail.steps[1]
    assert (second.index, second.kind, len(second.members)) == (2, "group", 3)
    assert [m.task for m in second.members if m.state is StepState.FAILED] == ["fatal"]
    assert group_detail.failed_job_ids == group_detail.redrive_ids == (second.members[1].job_id,)
    # re-driving exactly those ids resumes the chain from the failed step
    assert system_app.failed.redrive(list(detail.redrive_ids)) == list(detail.redrive_ids)
    after = data.chain_detail(system_app, halted.id)
    assert after is not None
    assert after.redrive_ids == ()
    assert data.chain_detail(system_app, "no-such-chain") is None


# --- the failed queue ------------------------------------------------------------------------


def test_failed_page_filters_pages_and_counts(manual: App, clock: ManualClock) -> None:
    """Filters by task and error type, pages by matching entries, counts every task and error type."""
    made = {
        "a-value": [_fail(manual, clock, queue="a", error="ValueError") for _ in range(3)],
        "a-key": [_fail(manual, clock, queue="a", error="KeyError") for _ in range(2)],
        "b-value": [_fail(manual, clock, queue="b", error="ValueError") for _ in range(4)],
    }
    everything = data.failed_page(manual)
    assert everything.matched == everything.scanned == 9
    assert everything.by_task == (("work_a", 5), ("work_b", 4))
    assert everything.by_error == (("ValueError", 7), ("KeyError", 2))
    assert not everything.capped
    values = data.failed_page(manual, error_type="ValueError", limit=3)
    assert values.matched == 7
    assert [e.job.id for e in values.entries] == (made["a-value"] + made["b-value"])[:3]
    assert values.next_offset == 3
    last = data.failed_page(manual, error_type="ValueError", limit=3, offset=6)
    assert [e.job.id for e in last.entries] == made["b-value"][-1:]
    assert last.next_offset is None
    both = data.failed_page(manual, task="work_a", error_type="KeyError")
    assert [e.job.id for e in both.entries] == made["a-key"]
    assert data.failed_matching(manual, task="work_a", error_type="KeyError") == made["a-key"]
    assert (
        data.failed_matching(manual, error_type="ValueError", cap=5)
        == (made["a-value"] + made["b-value"])[:5]
    )
    capped = data.failed_page(manual, scan=4)
    assert (capped.scanned, capped.capped, capped.matched) == (4, True, 4)
    assert capped.by_error == (("ValueError", 3), ("KeyError", 1))
    assert capped.notes == ("counts are of the oldest 4 failed jobs",)


def test_a_bulk_action_touches_exactly_the_matching_ids(manual: App, clock: ManualClock) -> None:
    """The ids shown before a purge are the ones purged; the others stay."""
    keys = [_fail(manual, clock, queue="a", error="KeyError") for _ in range(3)]
    values = [_fail(manual, clock, queue="a", error="ValueError") for _ in range(2)]
    matching = data.failed_matching(manual, error_type="KeyError")
    assert matching == keys
    assert manual.failed.purge(matching) == 3
    assert [e.job.id for e in data.failed_page(manual).entries] == values


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit must be an integer between 1 and 1000"),
        ({"offset": -1}, "offset must be an integer between 0 and 1000000, got -1"),
        ({"offset": 10**12}, "offset must be an integer"),
        ({"scan": 0}, "scan must be an integer"),
        ({"task": ""}, "task must be a text"),
        ({"error_type": "E" * 1025}, "error type must be a text"),
    ],
)
def test_failed_page_parameters_are_checked(manual: App, options: dict[str, Any], message: str) -> None:
    """A bad filter, offset or limit is a ValueError of one short line."""
    with pytest.raises(ValueError) as caught:
        data.failed_page(manual, **options)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


# --- workers and schedules --------------------------------------------------------------------


def test_workers_show_their_running_jobs_and_heartbeat(
    system_app: App, start_worker: Callable[..., Worker]
) -> None:
    """A live worker's name, queues, labels, concurrency, heartbeat age and the job it runs."""
    t = _declare(system_app)
    system_app.schedule("nightly", t["ok"], cron="0 3 * * *", args=(1,))
    handle = t["slow"].submit(1)
    worker = start_worker(system_app, queues=["slow"], name="w-slow", labels={"zone": "eu"}, concurrency=3)
    assert eventually(lambda: handle.status() == "running")
    [info] = system_app.workers()
    view = data.workers(system_app, now=info.heartbeat_at + 5.0)
    [row] = view.workers
    assert (row.name, row.queues, dict(row.labels), row.concurrency) == (
        "w-slow",
        ("slow",),
        {"zone": "eu"},
        3,
    )
    assert row.heartbeat_age == pytest.approx(5.0)
    assert row.running == (handle.id,)
    assert row.held == 0
    [schedule] = view.schedules
    assert (schedule.name, schedule.paused, schedule.last_run) == ("nightly", False, None)
    assert schedule.next_run is not None
    assert view.notes == ()
    t["release"].set()
    handle.wait(10)
    worker.stop(timeout=5)
    assert data.workers(system_app).workers == ()


# --- a backend without the capabilities ----------------------------------------------------------


def _minimal_backend() -> Any:
    """examples/minimal_backend.py's backend: the required core, no capability."""
    module = sys.modules.get("minimal_backend")  # loaded already by tests/backends/test_minimal_backend.py
    if module is None:
        path = ROOT / "examples" / "minimal_backend.py"
        spec = importlib.util.spec_from_file_location("minimal_backend", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["minimal_backend"] = module  # attrs resolves the module's annotations through it
        spec.loader.exec_module(module)
    return module.MinimalBackend()


def test_a_backend_without_capabilities_gives_empty_sections_and_notes() -> None:
    """On the required core alone, every page renders: empty sections, a note for each missing part."""
    app = App(_minimal_backend(), plugins=Plugins(entry_points=False))
    try:

        @app.task
        def ok(x: Any) -> Any:
            return x

        handle = ok.submit(1)
        view = data.overview(app)
        assert [(r.queue, r.ready, r.oldest_age) for r in view.queues] == [("default", 0, None)]
        assert view.workers is None
        assert view.notes == (
            "minimal:// does not support queue statistics",
            "minimal:// does not support browsing jobs: no oldest job, throughput, wait or run times",
            "minimal:// does not support the worker registry",
        )
        page = data.queue_page(app, "default", "ready")
        assert (page.records, page.counts, page.notes) == (
            (),
            {},
            ("minimal:// does not support browsing jobs",),
        )
        failed_view = data.failed_page(app)
        assert failed_view.entries == ()
        assert failed_view.notes == ("minimal:// does not support the failed queue",)
        assert data.failed_matching(app) == []
        detail = data.job_detail(app, handle.id)
        assert detail is not None
        assert (detail.can_cancel, detail.notes) == (False, ("minimal:// does not support cancelling jobs",))
        assert data.workers(app).notes == ("minimal:// does not support the worker registry",)
    finally:
        app.close()
