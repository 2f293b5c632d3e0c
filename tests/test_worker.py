"""The worker: retries, the failed queue, chains and groups, stopping, timeouts, leases, bad jobs, events."""

from __future__ import annotations

import datetime as dt
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import structlog.testing

from jobchain import (
    App,
    BackendError,
    ChainHaltedError,
    ChainRecord,
    ConfigurationError,
    ErrorInfo,
    Fail,
    InvalidJobError,
    Job,
    JobFailedError,
    ManualClock,
    Plugins,
    Retry,
    Worker,
    chain,
    group,
    hookimpl,
)
from jobchain.ids import new_id
from jobchain.logplugin import JobLogger
from jobchain.memory import MemoryBackend
from jobchain.model import Completed, Delivery, Outcome, Released, SettleResult
from jobchain.testing import MakeJob
from jobchain.testing import eventually as poll

StartWorker = Callable[..., Worker]
FAST_RETRY = {"base": 0.01, "factor": 1.0, "jitter": False}


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds passed."""
    return poll(check, timeout)


class EventLog:
    """Records every event hook as a tuple, in the order they fire."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    @hookimpl
    def jobchain_worker_started(self, worker: str) -> None:
        self.events.append(("worker_started", worker))

    @hookimpl
    def jobchain_worker_stopped(self, worker: str, processed: int) -> None:
        self.events.append(("worker_stopped", worker, processed))

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        self.events.append(("job_started", job.task, job.attempt))

    @hookimpl
    def jobchain_job_succeeded(self, job: Job, result: Any) -> None:
        self.events.append(("job_succeeded", job.task, job.attempt, result))

    @hookimpl
    def jobchain_job_retrying(self, job: Job, error: ErrorInfo, delay: float) -> None:
        self.events.append(("job_retrying", job.task, job.attempt, error.type, delay))

    @hookimpl
    def jobchain_job_failed(self, job: Job, error: ErrorInfo) -> None:
        self.events.append(("job_failed", job.task, job.attempt, error.type))

    @hookimpl
    def jobchain_chain_completed(self, chain: ChainRecord) -> None:
        self.events.append(("chain_completed", chain.render()))

    @hookimpl
    def jobchain_chain_halted(self, chain: ChainRecord) -> None:
        self.events.append(("chain_halted", chain.render()))


# --- retries and the failed queue ---------------------------------------------------------------


def test_retries_then_success(app: App, start_worker: StartWorker) -> None:
    """A job that fails twice and then succeeds returns its result on the third attempt."""
    attempts: list[int] = []

    @app.task(retry=Retry(attempts=3, **FAST_RETRY))
    def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    handle = flaky.submit()
    start_worker(app)
    assert handle.wait(timeout=2) == "ok"
    assert attempts == [1, 2, 3]
    record = handle.record()
    assert record is not None
    assert record.job.attempt == 3
    assert app.failed.list() == []


def test_retry_waits_for_its_backoff_delay(app: App, start_worker: StartWorker) -> None:
    """A retried job does not run again before its backoff delay has passed."""
    runs: list[float] = []

    @app.task(retry=Retry(attempts=2, base=0.25, jitter=False))
    def flaky() -> None:
        runs.append(time.time())
        if len(runs) == 1:
            raise ConnectionError("later")

    handle = flaky.submit()
    start_worker(app)
    handle.wait(timeout=2)
    assert runs[1] - runs[0] >= 0.24


def test_exhausted_retries_go_to_failed_queue(app: App, start_worker: StartWorker) -> None:
    """After its last attempt a failing job is in the failed queue with type, message and traceback."""

    @app.task(retry=Retry(attempts=2, **FAST_RETRY))
    def always_fails(n: int) -> None:
        raise ValueError(f"bad value {n}")

    handle = always_fails.submit(7)
    start_worker(app)
    with pytest.raises(JobFailedError, match="ValueError: bad value 7") as info:
        handle.wait(timeout=2)
    (entry,) = app.failed.list()
    assert entry.job.id == handle.id
    assert (entry.job.attempt, entry.job.args) == (2, (7,))
    assert (entry.error.type, entry.error.message, entry.error.attempt) == ("ValueError", "bad value 7", 2)
    assert entry.error.traceback is not None
    assert "in always_fails" in entry.error.traceback
    assert "ValueError: bad value 7" in entry.error.traceback
    assert entry.failed_at > 0
    assert info.value.error == entry.error
    assert app.failed.show(handle.id) == entry


def test_an_error_says_how_long_its_attempt_ran(
    app: App, start_worker: StartWorker, make_job: MakeJob
) -> None:
    """``ErrorInfo.ran``: the seconds each failed attempt ran; None for a job refused before it ran."""

    @app.task(retry=Retry(attempts=2, **FAST_RETRY))
    def slow_then_fails(n: int) -> None:
        time.sleep(0.05)
        raise ValueError(f"bad value {n}")

    handle = slow_then_fails.submit(1)
    unknown = make_job(task="no.such.task")
    app.backend.enqueue_new([unknown])
    start_worker(app)
    with pytest.raises(JobFailedError):
        handle.wait(timeout=5)
    record = app.jobs.get(handle.id)
    assert record is not None
    assert [e.attempt for e in record.errors] == [1, 2]
    assert all(e.ran is not None and 0.05 <= e.ran < 5 for e in record.errors)
    assert record.error is not None
    assert record.error.ran == record.errors[-1].ran
    assert poll(lambda: app.failed.show(unknown.id) is not None, timeout=5)
    refused = app.failed.show(unknown.id)
    assert refused is not None
    assert refused.error.ran is None  # refused before it ran: an unknown task


def test_fail_skips_remaining_attempts(app: App, start_worker: StartWorker) -> None:
    """A task raising jobchain.Fail goes to the failed queue at once despite attempts left."""
    calls: list[int] = []

    @app.task(retry=Retry(attempts=5, **FAST_RETRY))
    def validate() -> None:
        calls.append(1)
        raise Fail("input is malformed")

    handle = validate.submit()
    start_worker(app)
    with pytest.raises(JobFailedError):
        handle.wait(timeout=2)
    assert calls == [1]
    entry = app.failed.show(handle.id)
    assert entry is not None
    assert (entry.error.type, entry.error.message, entry.job.attempt) == ("Fail", "input is malformed", 1)


def test_non_retryable_exception_skips_remaining_attempts(app: App, start_worker: StartWorker) -> None:
    """An exception listed as non-retryable is not retried; another one is."""
    calls: list[str] = []

    @app.task(retry=Retry(attempts=3, non_retryable=(KeyError,), **FAST_RETRY))
    def lookup(kind: str) -> None:
        calls.append(kind)
        raise KeyError(kind) if kind == "key" else OSError(kind)

    key, other = lookup.submit("key"), lookup.submit("os")
    start_worker(app)
    for handle in (key, other):
        with pytest.raises(JobFailedError):
            handle.wait(timeout=2)
    assert sorted(calls) == ["key", "os", "os", "os"]


# --- chains and groups --------------------------------------------------------------------------


@pytest.fixture
def abc(app: App) -> dict[str, list[Any]]:
    """Tasks A -> B -> C where B fails (Fail) while `fail_b` holds True; records every call."""
    calls: dict[str, list[Any]] = {"A": [], "B": [], "C": [], "fail_b": [True]}

    @app.task(name="A")
    def a(x: int) -> int:
        calls["A"].append(x)
        return x + 1

    @app.task(name="B")
    def b(x: int) -> int:
        calls["B"].append(x)
        if calls["fail_b"][0]:
            raise Fail("B is broken")
        return x * 10

    @app.task(name="C")
    def c(x: int) -> int:
        calls["C"].append(x)
        return x + 5

    return calls


def test_chain_halts_and_later_steps_never_run(
    app: App, abc: dict[str, list[Any]], start_worker: StartWorker
) -> None:
    """A step failing for good halts the chain; later steps are not_executed and never enqueued."""
    submitted = chain(*(app.tasks[n] for n in "ABC")).submit(1)
    start_worker(app)
    with pytest.raises(ChainHaltedError, match="halted at step 2: Fail: B is broken"):
        submitted.wait(timeout=2)
    time.sleep(0.05)
    assert (abc["A"], abc["B"], abc["C"]) == ([1], [2], [])
    assert submitted.render() == "A (succeeded) -> B (failed) -> C (not executed)"
    c_job = submitted.job_ids()[2][0]
    assert app.backend.get_job(c_job) is None
    (entry,) = app.failed.list()
    assert entry.job.chain is not None
    assert (entry.job.chain.chain_id, entry.job.chain.step) == (submitted.id, 1)


def test_redrive_resumes_chain_where_it_stopped(
    app: App, abc: dict[str, list[Any]], start_worker: StartWorker
) -> None:
    """Re-driving the failed step runs it and the rest of the chain, without re-running earlier steps."""
    handle = chain(*(app.tasks[n] for n in "ABC")).submit(1)
    start_worker(app)
    with pytest.raises(ChainHaltedError):
        handle.wait(timeout=2)
    abc["fail_b"][0] = False
    failed_b = handle.job_ids()[1][0]
    assert app.failed.redrive([failed_b]) == [failed_b]
    assert handle.wait(timeout=2) == 25
    assert (abc["A"], abc["B"], abc["C"]) == ([1], [2, 2], [20])
    assert handle.render() == "A (succeeded) -> B (succeeded) -> C (succeeded)"
    assert app.failed.list() == []


def test_group_fan_in_keeps_member_order(app: App, start_worker: StartWorker) -> None:
    """The step after a group gets its members' results in member order, not finishing order."""
    finished: list[str] = []

    @app.task
    def pause(label: str, seconds: float) -> str:
        time.sleep(seconds)
        finished.append(label)
        return label

    @app.task
    def collect(results: list[str]) -> str:
        return "+".join(results)

    handle = chain(group(pause.s("a", 0.25), pause.s("b", 0.0), pause.s("c", 0.12)), collect).submit()
    start_worker(app, concurrency=3)
    assert handle.wait(timeout=2) == "a+b+c"
    assert finished == ["b", "c", "a"]


def test_group_member_failure_halts_chain(app: App, start_worker: StartWorker) -> None:
    """One group member failing for good halts the chain; the step after the group never runs."""
    collected: list[Any] = []

    @app.task
    def member(n: int) -> int:
        if n == 2:
            raise Fail("member 2 failed")
        return n

    @app.task
    def collect(results: list[int]) -> None:
        collected.append(results)

    handle = chain(group(member.s(1), member.s(2), member.s(3)), collect).submit()
    start_worker(app)
    with pytest.raises(ChainHaltedError):
        handle.wait(timeout=2)
    time.sleep(0.05)
    assert collected == []
    assert handle.render() == "group(member, member, member) (failed) -> collect (not executed)"


# --- stopping -----------------------------------------------------------------------------------


def test_graceful_stop_finishes_running_and_releases_buffered(app: App, start_worker: StartWorker) -> None:
    """stop() waits for the running job and gives unstarted buffered jobs back to the queue."""
    started, gate = threading.Event(), threading.Event()

    @app.task
    def step(n: int) -> int:
        if n == 0:
            started.set()
            gate.wait(2)
        return n

    handles = [step.submit(n) for n in range(3)]
    worker = start_worker(app, concurrency=1, prefetch=3)
    assert started.wait(1)
    assert eventually(lambda: worker.held() == 3)
    clean: list[bool] = []
    stopper = threading.Thread(target=lambda: clean.append(worker.stop(timeout=5)))
    stopper.start()
    time.sleep(0.1)
    assert stopper.is_alive(), "stop() returned while a job was still running"
    gate.set()
    stopper.join(2)
    assert clean == [True]
    assert handles[0].result() == 0
    assert [h.status() for h in handles[1:]] == ["queued", "queued"]
    # a release is not a lost lease: a worker tolerating none still runs the released jobs
    start_worker(app, max_redeliveries=0)
    assert [h.wait(timeout=2) for h in handles[1:]] == [1, 2]


def test_remote_stop_by_name(app: App) -> None:
    """app.stop_worker(name) makes a running worker stop and unregister itself."""
    worker = app.worker(name="remote-1", concurrency=1, poll=0.02, heartbeat_ttl=1.0)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        assert eventually(lambda: [w.name for w in app.workers()] == ["remote-1"])
        assert app.stop_worker("remote-1") is True
        runner.join(2)
        assert not runner.is_alive()
        assert app.workers() == []
        assert app.stop_worker("remote-1") is False
    finally:
        worker.stop(timeout=2)


def test_worker_registers_itself_while_running(app: App, start_worker: StartWorker) -> None:
    """A running worker is listed with its name, queues, labels and concurrency, and not after stop."""
    worker = start_worker(app, name="reg-1", queues=["q1", "q2"], labels={"zone": "a"}, concurrency=3)
    (info,) = app.workers()
    assert (info.name, info.queues, dict(info.labels), info.concurrency) == (
        "reg-1",
        ("q1", "q2"),
        {"zone": "a"},
        3,
    )
    worker.stop()
    assert app.workers() == []


# --- timeouts and leases ------------------------------------------------------------------------


def test_task_timeout_fails_job_with_job_timeout(app: App, start_worker: StartWorker) -> None:
    """A task running past its timeout is interrupted and failed as JobTimeout."""

    @app.task(timeout=0.2)
    def slow() -> None:
        for _ in range(300):
            time.sleep(0.01)

    handle = slow.submit()
    t0 = time.monotonic()
    start_worker(app)
    with pytest.raises(JobFailedError, match="JobTimeout"):
        handle.wait(timeout=3)
    assert time.monotonic() - t0 < 1.5
    entry = app.failed.show(handle.id)
    assert entry is not None
    assert (entry.error.type, entry.error.message) == (
        "JobTimeout",
        "task 'slow' ran past its timeout of 0.2s",
    )


def test_worker_thread_survives_a_timeout(app: App, start_worker: StartWorker) -> None:
    """After a timeout the same worker thread goes on to run the next job."""

    @app.task(timeout=0.1)
    def slow() -> None:
        for _ in range(300):
            time.sleep(0.01)

    @app.task
    def quick() -> str:
        return "done"

    timed_out, after = slow.submit(), quick.submit()
    start_worker(app, concurrency=1)
    assert after.wait(timeout=3) == "done"
    assert timed_out.status() == "failed"


def test_heartbeat_extends_lease_of_long_job(app: App, start_worker: StartWorker) -> None:
    """A job running longer than its lease is kept by its worker and not delivered again."""
    calls: list[int] = []

    @app.task
    def long_job() -> str:
        calls.append(1)
        time.sleep(0.7)
        return "kept"

    handle = long_job.submit()
    worker = start_worker(app, lease=0.3, concurrency=2)
    assert handle.wait(timeout=3) == "kept"
    assert calls == [1]
    assert worker.counters.rejected == 0


def test_completion_after_lost_lease_is_rejected(
    manual_app: App, clock: ManualClock, start_worker: StartWorker
) -> None:
    """A worker whose lease expired cannot complete the job that another delivery now holds."""
    started, gate = threading.Event(), threading.Event()

    @manual_app.task
    def stalled() -> str:
        started.set()
        gate.wait(2)
        return "from the stale worker"

    handle = stalled.submit()
    worker = start_worker(manual_app, concurrency=1, lease=30.0)
    assert started.wait(1)
    clock.advance(31.0)  # the worker stalled past its lease
    (redelivery,) = manual_app.backend.reserve(["default"], limit=1, lease=30.0, worker="other")
    assert redelivery.delivery_count == 2
    with structlog.testing.capture_logs() as logs:
        gate.set()
        assert eventually(lambda: worker.counters.rejected == 1)
    assert handle.status() == "running"
    assert ("stale_delivery_rejected", handle.id) in [(e["event"], e.get("job_id")) for e in logs]
    now = clock.now()
    (settled,) = manual_app.backend.settle(
        [Completed(delivery=redelivery, result="from the new holder", started_at=now, finished_at=now)]
    )
    assert settled.accepted
    assert handle.result() == "from the new holder"


def test_lost_leases_do_not_use_up_attempts(
    manual_app: App, clock: ManualClock, start_worker: StartWorker
) -> None:
    """A job redelivered after lost leases, within the cap, still runs as its first attempt."""

    @manual_app.task(retry=Retry(attempts=2, **FAST_RETRY))
    def work() -> int:
        return 1

    handle = work.submit()
    for _ in range(2):  # two workers died holding it
        assert manual_app.backend.reserve(["default"], limit=1, lease=5.0, worker="dead")
        clock.advance(6.0)
    start_worker(manual_app, max_redeliveries=2)
    assert handle.wait(timeout=2) == 1
    record = handle.record()
    assert record is not None
    assert record.job.attempt == 1


def test_redelivery_cap_fails_job_as_worker_lost(
    manual_app: App, clock: ManualClock, start_worker: StartWorker
) -> None:
    """A job whose lease was lost more than max_redeliveries times is failed as WorkerLost, unrun."""
    calls: list[int] = []

    @manual_app.task(retry=Retry(attempts=3, **FAST_RETRY))
    def doomed() -> None:
        calls.append(1)

    handle = doomed.submit()
    for _ in range(3):  # three workers died running it
        held = manual_app.backend.reserve(["default"], limit=1, lease=5.0, worker="dead")
        assert manual_app.backend.mark_running(held) == [True]
        clock.advance(6.0)
    start_worker(manual_app, max_redeliveries=2)
    with pytest.raises(JobFailedError, match="WorkerLost"):
        handle.wait(timeout=2)
    assert calls == []
    entry = manual_app.failed.show(handle.id)
    assert entry is not None
    assert (entry.error.type, entry.job.attempt) == ("WorkerLost", 1)
    assert "lease lost 3 times while the job ran" in entry.error.message


def test_leases_lost_while_only_reserved_do_not_count_towards_the_cap(
    manual_app: App, clock: ManualClock, start_worker: StartWorker
) -> None:
    """A job whose leases ran out while workers only held it reserved (never started) is not WorkerLost."""

    @manual_app.task
    def innocent() -> str:
        return "ran"

    handle = innocent.submit()
    for _ in range(4):  # reserved alongside a poison job by workers it killed, never started
        assert manual_app.backend.reserve(["default"], limit=1, lease=5.0, worker="dead")
        clock.advance(6.0)
    start_worker(manual_app, max_redeliveries=1)
    assert handle.wait(timeout=2) == "ran"
    assert manual_app.failed.list() == []


def test_suspect_runs_alone(manual_app: App, clock: ManualClock, start_worker: StartWorker) -> None:
    """A job whose last worker died running it starts once the jobs before it ended; none starts beside it."""
    spans: dict[str, tuple[float, float]] = {}

    @manual_app.task
    def work(name: str) -> str:
        start = time.monotonic()
        time.sleep(0.1)
        spans[name] = (start, time.monotonic())
        return name

    handles = [work.submit(name) for name in ("a", "b", "suspect", "c", "d")]
    backend = manual_app.backend
    held = backend.reserve(["default"], limit=3, lease=5.0, worker="dead")
    assert [d.job.args for d in held] == [("a",), ("b",), ("suspect",)]
    assert backend.mark_running(held[2:]) == [True]  # the dead worker was running it
    backend.settle([Released(delivery=d) for d in held[:2]])
    clock.advance(6.0)
    start_worker(manual_app, concurrency=4)
    assert [h.wait(timeout=3) for h in handles] == ["a", "b", "suspect", "c", "d"]
    start, end = spans["suspect"]
    overlapping = [n for n, (s, e) in spans.items() if n != "suspect" and s < end and e > start]
    assert overlapping == []
    assert manual_app.failed.list() == []


def test_suspect_starts_and_ends_with_every_outcome_settled(
    manual_app: App, clock: ManualClock, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A suspect starts only once the jobs before it are settled, and no job starts before it is settled.

    A suspect may kill the worker process (a poison job): a job that merely ran
    next to it, finished but not yet settled, would be delivered again and, once
    marked running, charged with the death, up to a ``WorkerLost`` it never earned.
    """
    backend = manual_app.backend
    unsettled_at_start: list[str] = []
    order: list[str] = []

    @manual_app.task
    def work(name: str) -> str:
        if "suspect" in order:  # started after the suspect: it must be settled by now
            record = backend.get_job(handles[1].id)
            assert record is not None
            if not record.state.finished:
                unsettled_at_start.append(f"{name} started before the suspect was settled")
        order.append(name)
        return name

    handles = [work.submit(name) for name in ("a", "suspect", "c")]
    held = backend.reserve(["default"], limit=3, lease=5.0, worker="dead")
    assert [d.job.args for d in held] == [("a",), ("suspect",), ("c",)]
    assert backend.mark_running(held[1:2]) == [True]  # the dead worker was running it
    backend.settle([Released(delivery=d) for d in (held[0], held[2])])
    clock.advance(6.0)

    settle, mark_running = backend.settle, backend.mark_running

    def slow_settle(outcomes: Sequence[Outcome]) -> list[SettleResult]:
        time.sleep(0.2)  # the settler lags behind the threads, as on a busy machine
        return settle(outcomes)

    def checked_mark_running(deliveries: Sequence[Delivery]) -> list[bool]:
        for h in handles:
            record = backend.get_job(h.id)
            assert record is not None
            if record.job.args[0] in order and not record.state.finished:
                unsettled_at_start.append(f"{record.job.args[0]} not settled when the suspect was marked")
        return mark_running(deliveries)

    monkeypatch.setattr(backend, "settle", slow_settle)
    monkeypatch.setattr(backend, "mark_running", checked_mark_running)
    start_worker(manual_app, concurrency=2, prefetch=3)
    assert [h.wait(timeout=5) for h in handles] == ["a", "suspect", "c"]
    assert order.index("a") < order.index("suspect") < order.index("c")
    assert unsettled_at_start == []
    assert manual_app.failed.list() == []


def test_buffered_job_whose_lease_was_reported_lost_never_starts(
    app: App, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefetched job whose extension the backend refused is dropped unstarted, and logged."""
    gate, started = threading.Event(), threading.Event()
    ran: list[str] = []

    @app.task
    def blocker() -> None:
        started.set()
        gate.wait(3)

    @app.task
    def queued(name: str) -> None:
        ran.append(name)

    blocked = blocker.submit()
    waiting = [queued.submit(f"q{i}") for i in range(3)]
    monkeypatch.setattr(app.backend, "extend", lambda deliveries, lease: [False] * len(deliveries))
    with structlog.testing.capture_logs() as logs:
        worker = start_worker(app, concurrency=1, prefetch=4, lease=0.3)
        assert started.wait(2)
        assert eventually(lambda: worker.held() == 1)  # the blocker only: the buffered jobs were dropped
        gate.set()
        assert eventually(lambda: blocked.status() != "running")
    dropped = [e for e in logs if e["event"] == "lease_expired_before_start"]
    assert sorted(j for e in dropped for j in e["job_ids"]) == sorted(h.id for h in waiting)
    assert ran == []


def test_buffered_job_past_its_lease_never_starts(
    app: App, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefetched job whose lease ran out while the worker could not extend it is dropped unstarted.

    Its job is delivered again (to this worker, here) and runs once, under the new lease.
    """
    gate, started = threading.Event(), threading.Event()
    ran: list[str] = []

    @app.task
    def blocker() -> None:
        started.set()
        gate.wait(3)

    @app.task
    def queued(name: str) -> None:
        ran.append(name)

    blocked = blocker.submit()
    waiting = [queued.submit(f"q{i}") for i in range(3)]

    def down(deliveries: object, lease: float) -> list[bool]:
        raise ConnectionError("the backend is away")

    monkeypatch.setattr(app.backend, "extend", down)
    with structlog.testing.capture_logs() as logs:
        worker = start_worker(app, concurrency=1, prefetch=4, lease=0.3)
        assert started.wait(2)
        assert eventually(lambda: worker.held() == 1)  # past 0.3s, with no extension: dropped
        gate.set()
        assert eventually(lambda: blocked.status() != "running")
        # the backend let them go when their leases ended: they run once, under a new delivery
        assert [h.wait(timeout=3) for h in waiting] == [None] * 3
    assert sorted(ran) == ["q0", "q1", "q2"]
    dropped = [e for e in logs if e["event"] == "lease_expired_before_start"]
    assert sorted(j for e in dropped for j in e["job_ids"]) == sorted(h.id for h in waiting)


# --- bad jobs -----------------------------------------------------------------------------------


def test_unknown_task_in_stored_job_is_failed_and_worker_goes_on(app: App, start_worker: StartWorker) -> None:
    """A stored job naming an unknown task goes to the failed queue, and the jobs after it still run."""

    @app.task
    def known(n: int) -> int:
        return n

    ghost = Job(id=new_id(), task="ghost", enqueued_at=app.clock.now())
    app.backend.enqueue([ghost])
    handles = [known.submit(n) for n in range(3)]
    start_worker(app, concurrency=1)
    assert [h.wait(timeout=2) for h in handles] == [0, 1, 2]
    entry = app.failed.show(ghost.id)
    assert entry is not None
    assert (entry.error.type, entry.error.message) == (
        "UnknownTaskError",
        "unknown task 'ghost'; known tasks: known",
    )


def _nested(depth: int) -> Any:
    """``[[...[0]...]]``: ``depth`` levels of lists."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"when": dt.datetime(2024, 1, 1)}, "result['when']: datetime"),
        ([1, {2, 3}], "result[1]: set"),
        ({1: "one"}, "result: key 1 of type int (keys must be str)"),
        (float("inf"), "result: inf (not finite)"),
        (["ok", "bad \ud800"], "result[1]: lone surrogate '\\ud800' at index 4 (not valid UTF-8)"),
        ({"k\udfff": 1}, "result: key with a lone surrogate '\\udfff' at index 1 (not valid UTF-8)"),
        (
            _nested(65),
            "result" + "[0]" * 14 + "…: nested too deeply (more than 64 levels of lists and objects)",
        ),
        (
            _nested(5000),
            "result" + "[0]" * 14 + "…: nested too deeply (more than 64 levels of lists and objects)",
        ),
    ],
    ids=["datetime", "set", "int-key", "inf", "surrogate", "surrogate-key", "65-deep", "5000-deep"],
)
def test_result_that_is_not_json_fails_the_job(
    app: App, start_worker: StartWorker, value: Any, where: str
) -> None:
    """A task returning a value JSON cannot carry fails, unretried, with the path of the bad value."""

    @app.task(retry=Retry(attempts=3, **FAST_RETRY))
    def produce() -> Any:
        return value

    handle = produce.submit()
    start_worker(app)
    with pytest.raises(JobFailedError):
        handle.wait(timeout=2)
    entry = app.failed.show(handle.id)
    assert entry is not None
    assert entry.error.type == "InvalidJobError"
    assert entry.error.message == f"task 'produce' returned a value JSON cannot carry: {where}"
    assert entry.job.attempt == 1


def test_expired_job_is_failed_unrun(manual_app: App, clock: ManualClock, start_worker: StartWorker) -> None:
    """A job not started within its task's expires= seconds goes to the failed queue without running."""
    calls: list[int] = []

    @manual_app.task(expires=10)
    def perishable() -> None:
        calls.append(1)

    handle = perishable.submit()
    clock.advance(11.0)
    start_worker(manual_app)
    with pytest.raises(JobFailedError, match="JobExpired"):
        handle.wait(timeout=2)
    assert calls == []


# --- events -------------------------------------------------------------------------------------


def test_events_fire_in_order_for_a_retried_job(app: App, start_worker: StartWorker) -> None:
    """Worker started, job started, retrying, started, succeeded and worker stopped fire in that order."""
    log = EventLog()
    app.plugins.register(log)
    runs: list[int] = []

    @app.task(retry=Retry(attempts=2, base=0.01, jitter=False))
    def flaky() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("once")
        return "fine"

    handle = flaky.submit()
    worker = start_worker(app, name="ev-1", concurrency=1)
    handle.wait(timeout=2)
    worker.stop()
    assert log.events == [
        ("worker_started", "ev-1"),
        ("job_started", "flaky", 1),
        ("job_retrying", "flaky", 1, "ConnectionError", 0.01),
        ("job_started", "flaky", 2),
        ("job_succeeded", "flaky", 2, "fine"),
        ("worker_stopped", "ev-1", 1),
    ]


def test_chain_events_follow_their_jobs(app: App, start_worker: StartWorker) -> None:
    """chain_completed fires after the last step succeeded, chain_halted after a step failed."""
    log = EventLog()
    app.plugins.register(log)

    @app.task
    def inc(x: int) -> int:
        return x + 1

    @app.task
    def refuse(x: int) -> None:
        raise Fail("no")

    good = (inc >> inc).submit(0)
    worker = start_worker(app, concurrency=1)
    good.wait(timeout=2)
    bad = (inc >> refuse >> inc).submit(0)
    with pytest.raises(ChainHaltedError):
        bad.wait(timeout=2)
    worker.stop()
    job_and_chain = [e for e in log.events if not e[0].startswith("worker")]
    assert job_and_chain == [
        ("job_started", "inc", 1),
        ("job_succeeded", "inc", 1, 1),
        ("job_started", "inc", 1),
        ("job_succeeded", "inc", 1, 2),
        ("chain_completed", "inc (succeeded) -> inc (succeeded)"),
        ("job_started", "inc", 1),
        ("job_succeeded", "inc", 1, 1),
        ("job_started", "refuse", 1),
        ("job_failed", "refuse", 1, "Fail"),
        ("chain_halted", "inc (succeeded) -> refuse (failed) -> inc (not executed)"),
    ]


# --- nothing a task does kills a pool thread ----------------------------------------------------


class Unprintable(Exception):
    """An exception whose str() raises another one of its kind."""

    def __str__(self) -> str:
        raise Unprintable()


class Unspeakable(Exception):
    """An exception whose str(), repr(), == and hash() all raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no ==")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class Shutdown(BaseException):
    """A BaseException subclass that is neither SystemExit nor KeyboardInterrupt."""


class BadNotes(Exception):
    """An exception that makes traceback formatting itself raise (its __notes__ cannot be read)."""

    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]
        raise RuntimeError("no notes")


class NoEquals:
    """A result whose == and hash() raise."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no ==")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class ExplodingList(list[int]):
    """A result that fails while it is being encoded."""

    def __iter__(self) -> Any:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        raise RuntimeError("no len")


def test_unprintable_exceptions_do_not_freeze_the_pool(app: App, start_worker: StartWorker) -> None:
    """Two unprintable failures with -j 2 leave both threads running jobs, each retried as its policy says.

    Regression: the second one killed a pool thread, its job stayed running and
    the worker kept reserving jobs it never ran.
    """

    @app.task(retry=Retry(attempts=2, **FAST_RETRY))
    def unprintable() -> None:
        raise Unprintable()

    @app.task
    def echo(n: int) -> int:
        return n

    bad = [unprintable.submit() for _ in range(2)]
    good = [echo.submit(n) for n in range(6)]
    worker = start_worker(app, concurrency=2)
    assert [h.wait(timeout=3) for h in good] == list(range(6))
    for handle in bad:
        with pytest.raises(JobFailedError):
            handle.wait(timeout=3)
        entry = app.failed.show(handle.id)
        assert entry is not None
        assert (entry.error.type, entry.error.message, entry.error.attempt) == (
            "Unprintable",
            "Unprintable()",
            2,
        )
        assert entry.error.traceback is not None
        assert "in unprintable" in entry.error.traceback
    assert all(t.is_alive() for t in worker._threads)
    assert worker.counters.threads_died == 0


@pytest.mark.parametrize(
    ("action", "error_type", "message"),
    [
        (lambda: sys.exit(3), "SystemExit", "3"),
        (lambda: sys.exit(), "SystemExit", ""),
        (lambda: (_ for _ in ()).throw(KeyboardInterrupt()), "KeyboardInterrupt", ""),
        (lambda: (_ for _ in ()).throw(Shutdown("down")), "Shutdown", "down"),
        (lambda: (_ for _ in ()).throw(Unspeakable()), "Unspeakable", "<unprintable Unspeakable>"),
        (lambda: (_ for _ in ()).throw(BadNotes("noted")), "BadNotes", "noted"),
        (
            lambda: NoEquals(),
            "InvalidJobError",
            "task 'act' returned a value JSON cannot carry: result: NoEquals",
        ),
        (
            lambda: ExplodingList(),
            "InvalidJobError",
            "task 'act' returned a value JSON cannot carry: "
            "result: ExplodingList (RuntimeError: cannot iterate)",
        ),
    ],
    ids=[
        "sys.exit(3)",
        "sys.exit()",
        "KeyboardInterrupt",
        "BaseException",
        "unspeakable",
        "bad-notes",
        "result-no-eq",
        "result-explodes",
    ],
)
def test_nothing_a_task_does_kills_its_thread(
    app: App, start_worker: StartWorker, action: Callable[[], Any], error_type: str, message: str
) -> None:
    """A task that exits, is interrupted, raises anything or returns anything fails; the thread runs on."""

    @app.task
    def act() -> Any:
        return action()

    @app.task
    def echo(n: int) -> int:
        return n

    bad = act.submit()
    after = echo.submit(1)
    worker = start_worker(app, concurrency=1)
    (thread,) = worker._threads
    assert after.wait(timeout=3) == 1
    with pytest.raises(JobFailedError):
        bad.wait(timeout=3)
    entry = app.failed.show(bad.id)
    assert entry is not None
    assert (entry.error.type, entry.error.message) == (error_type, message)
    assert worker._threads == [thread]
    assert thread.is_alive()
    assert worker.counters.threads_died == 0


def test_retry_policy_applies_to_base_exceptions(app: App, start_worker: StartWorker) -> None:
    """A task that calls sys.exit() is retried by its Retry policy like any other failure."""
    runs: list[int] = []

    @app.task(retry=Retry(attempts=3, **FAST_RETRY))
    def exits() -> str:
        runs.append(1)
        if len(runs) < 3:
            sys.exit("not yet")
        return "third time"

    handle = exits.submit()
    start_worker(app, concurrency=1)
    assert handle.wait(timeout=3) == "third time"
    assert len(runs) == 3


def test_dead_pool_thread_is_replaced_and_its_job_released(
    app: App, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool thread killed by a bug is replaced; its job is released (no attempt used) and runs again."""
    runs: list[int] = []

    @app.task(retry=Retry(attempts=1))
    def work(n: int) -> int:
        runs.append(n)
        return n

    handle = work.submit(7)
    crashed: list[threading.Thread] = []
    original = Worker._run_job

    def buggy(self: Worker, delivery: Any, slot: Any) -> Any:
        if not crashed:
            crashed.append(threading.current_thread())
            raise RuntimeError("a bug in the worker")
        return original(self, delivery, slot)

    monkeypatch.setattr(Worker, "_run_job", buggy)
    with structlog.testing.capture_logs() as logs:
        worker = start_worker(app, concurrency=1)
        assert handle.wait(timeout=3) == 7
    assert runs == [7]
    record = handle.record()
    assert record is not None
    assert record.job.attempt == 1
    assert worker.counters.threads_died == 1
    died = [e for e in logs if e["event"] == "worker_thread_died"]
    assert [(e["job_id"], e["log_level"], e["outcome"]) for e in died] == [(handle.id, "error", "Released")]
    (first,) = crashed
    first.join(1.0)  # it ends once it has started its replacement
    assert not first.is_alive()
    (replacement,) = worker._threads
    assert replacement is not first
    assert replacement.is_alive()


def test_job_that_kills_threads_twice_is_failed(
    app: App, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose run kills a pool thread twice in one worker is failed as WorkerThreadDied; others run."""

    @app.task
    def work(n: int) -> int:
        return n

    doomed = work.submit(0)
    others = [work.submit(n) for n in range(1, 4)]
    original = Worker._run_job

    def buggy(self: Worker, delivery: Any, slot: Any) -> Any:
        if delivery.job.id == doomed.id:
            raise RuntimeError("a bug that this job always hits")
        return original(self, delivery, slot)

    monkeypatch.setattr(Worker, "_run_job", buggy)
    worker = start_worker(app, concurrency=2)
    assert [h.wait(timeout=3) for h in others] == [1, 2, 3]
    with pytest.raises(JobFailedError, match="WorkerThreadDied"):
        doomed.wait(timeout=3)
    assert worker.counters.threads_died == 2
    assert sum(t.is_alive() for t in worker._threads) == 2


# --- bounded errors and results -----------------------------------------------------------------


@pytest.mark.parametrize(("options", "stored"), [({}, 64 * 1024), ({"max_error_bytes": 2000}, 2000)])
def test_huge_error_message_is_capped_in_the_record_and_the_log(
    plugins: Plugins, options: dict[str, Any], stored: int
) -> None:
    """A 10 MB exception message is stored cut to App(max_error_bytes) and logged cut to 4 KiB, marked."""
    app = App(MemoryBackend(), plugins=plugins, **options)
    plugins.register(JobLogger())

    @app.task
    def shout() -> None:
        raise ValueError("A" * 10_000_000)

    handle = shout.submit()
    with structlog.testing.capture_logs() as logs:
        worker = app.worker(concurrency=1, poll=0.02).start()
        try:
            with pytest.raises(JobFailedError):
                handle.wait(timeout=5)
        finally:
            worker.stop(timeout=5)
    entry = app.failed.show(handle.id)
    assert entry is not None
    assert entry.error.type == "ValueError"
    assert entry.error.traceback is not None
    for text in (entry.error.message, entry.error.traceback):
        assert stored - 100 <= len(text.encode()) <= stored
        assert re.search(r"… \[cut 9,9\d\d,\d{3} bytes\]", text)
    (line,) = [e for e in logs if e["event"] == "job_failed"]
    logged = line["message"]
    assert min(stored, 4096) - 100 <= len(logged.encode()) <= min(stored, 4096)
    assert logged.startswith("AAAA")
    assert re.search(r"… \[cut [\d,]+ bytes\]$", logged)
    app.close()


def test_result_over_the_payload_limit_fails_for_good_and_halts_its_chain(plugins: Plugins) -> None:
    """A result over App(max_payload) fails its job as ResultTooLarge, unretried; the chain halts."""
    app = App(MemoryBackend(), plugins=plugins, max_payload=1000)
    runs: list[int] = []

    @app.task(retry=Retry(attempts=3, **FAST_RETRY))
    def produce(n: int) -> str:
        runs.append(n)
        return "é" * n  # 2 bytes each in UTF-8, 6 in escaped JSON

    @app.task
    def consume(text: str) -> int:
        return len(text)

    fits = produce.submit(499)  # 1000 bytes with the quotes: at the limit
    halted = (produce.s(500) >> consume.s()).submit()
    worker = app.worker(concurrency=1, poll=0.02).start()
    try:
        assert fits.wait(timeout=3) == "é" * 499
        with pytest.raises(ChainHaltedError, match="ResultTooLarge"):
            halted.wait(timeout=3)
    finally:
        worker.stop(timeout=5)
    assert runs == [499, 500]
    record = halted.record()
    assert record is not None
    assert record.render() == "produce (failed) -> consume (not executed)"
    (entry,) = app.failed.list()
    assert (entry.error.type, entry.job.attempt) == ("ResultTooLarge", 1)
    assert entry.error.message == (
        "task 'produce' returned a result of 1002 bytes, over the limit of 1000 bytes "
        "(App(max_payload=...)); store large data elsewhere and return a reference"
    )
    app.close()


# --- one refused outcome never blocks the others ------------------------------------------------


class RefusingBackend(MemoryBackend):
    """The memory backend, refusing (as a whole) every settle batch that holds an outcome it refuses.

    ``refuse[job_id]`` names the outcome kinds refused for that job; ``error`` builds the exception
    (a refusal of the content, not an outage); ``times`` bounds how often it refuses (None: always).
    """

    def __init__(self, error: Callable[[str], Exception]) -> None:
        super().__init__()
        self.refuse: dict[str, set[str]] = {}
        self.error = error
        self.times: int | None = None
        self.refused: list[tuple[str, str, int]] = []

    def _check(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            kind = type(outcome).__name__
            if kind in self.refuse.get(outcome.delivery.job.id, ()):
                if self.times is not None:
                    if self.times <= 0:
                        continue
                    self.times -= 1
                self.refused.append((outcome.delivery.job.id, kind, len(outcomes)))
                raise self.error(outcome.delivery.job.id)

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        self._check(outcomes)
        return super().settle(outcomes)

    def settle_and_take(
        self, outcomes: Sequence[Outcome], *, worker: str, queues: Sequence[str], lease: float, limit: int
    ) -> tuple[list[SettleResult], list[Delivery]]:
        self._check(outcomes)
        return super().settle_and_take(outcomes, worker=worker, queues=queues, lease=lease, limit=limit)


def too_large(job_id: str) -> Exception:
    return InvalidJobError(f"the gateway refused the request: body too large (job {job_id})")


def completed_now(app: App, delivery: Delivery, result: Any) -> Completed:
    now = app.clock.now()
    return Completed(delivery=delivery, result=result, started_at=now, finished_at=now)


def test_a_refused_outcome_is_failed_and_the_rest_of_its_batch_settles(plugins: Plugins) -> None:
    """A batch refused for one outcome is settled one by one; the refused completion becomes a failure."""
    backend = RefusingBackend(too_large)
    app = App(backend, plugins=plugins)
    events = EventLog()
    plugins.register(events)

    @app.task
    def work(n: int) -> int:
        return n

    handles = [work.submit(n) for n in range(4)]
    worker = app.worker(concurrency=4, name="w1")
    deliveries = backend.reserve(["default"], limit=4, lease=30.0, worker="w1")
    assert [d.job.id for d in deliveries] == [h.id for h in handles]
    bad = handles[1].id
    backend.refuse[bad] = {"Completed"}
    worker._held.update({d.job.id: d for d in deliveries})
    worker._pending_add(completed_now(app, d, d.job.args[0]) for d in deliveries)
    flushed: list[bool] = []
    with structlog.testing.capture_logs() as logs:
        flusher = threading.Thread(target=lambda: flushed.append(worker._flush()), daemon=True)
        flusher.start()
        flusher.join(5.0)  # (before the fix it retried the batch forever)
    assert flushed == [True]
    assert [h.result() for h in handles if h.id != bad] == [0, 2, 3]
    assert backend.refused == [(bad, "Completed", 4), (bad, "Completed", 1)]
    entry = app.failed.show(bad)
    assert entry is not None
    assert (entry.error.type, entry.job.attempt) == ("SettleRefused", 1)
    assert entry.error.message == (
        "the backend refused this job's outcome (Completed): InvalidJobError: "
        f"the gateway refused the request: body too large (job {bad})"
    )
    assert worker.held() == 0
    assert (worker.counters.done, worker.counters.failed, worker.counters.refused) == (3, 1, 1)
    refused = [e for e in logs if e["event"] == "outcome_refused"]
    assert [(e["job_id"], e["outcome"], e["log_level"]) for e in refused] == [(bad, "Completed", "warning")]
    assert ("job_failed", "work", 1, "SettleRefused") in events.events
    app.close()


def test_an_outcome_refused_even_as_a_failure_is_left_for_lease_expiry(plugins: Plugins) -> None:
    """When even the failure is refused, the job is logged and let go (its lease expires); the rest settle."""
    backend = RefusingBackend(lambda job_id: BackendError(f"refused {job_id}"))
    app = App(backend, plugins=plugins)

    @app.task
    def work(n: int) -> int:
        return n

    handles = [work.submit(n) for n in range(3)]
    bad = handles[0].id
    backend.refuse[bad] = {"Completed", "Failed"}
    with structlog.testing.capture_logs() as logs:
        worker = app.worker(concurrency=2, poll=0.02, reconnect_base=0.001, reconnect_cap=0.005).start()
        try:
            assert [h.wait(timeout=3) for h in handles[1:]] == [1, 2]
            assert eventually(lambda: worker.held() == 0)
        finally:
            worker.stop(timeout=5)
    assert handles[0].status() == "running"  # until its lease expires and another worker runs it
    kinds = [kind for job_id, kind, _ in backend.refused if job_id == bad]
    tries = Worker.SETTLE_TRIES  # in its batch, then alone; then the failure made of it, alone
    assert kinds == ["Completed"] * (1 + tries) + ["Failed"] * tries
    dropped = [e for e in logs if e["event"] == "outcome_dropped"]
    assert [(e["job_id"], e["log_level"]) for e in dropped] == [(bad, "error")]
    assert worker.counters.refused == 1
    app.close()


def test_a_refusal_that_passes_is_retried_not_failed(plugins: Plugins) -> None:
    """An outcome refused a few times and then taken is settled as it was: no failure is made of it."""
    backend = RefusingBackend(lambda job_id: BackendError("Redis error: BUSY (injected)"))
    app = App(backend, plugins=plugins)

    @app.task
    def work(n: int) -> int:
        return n

    handles = [work.submit(n) for n in range(3)]
    backend.refuse[handles[0].id] = {"Completed"}
    backend.times = 4
    worker = app.worker(concurrency=2, poll=0.02, reconnect_base=0.001, reconnect_cap=0.005).start()
    try:
        assert [h.wait(timeout=3) for h in handles] == [0, 1, 2]
    finally:
        worker.stop(timeout=5)
    assert len(backend.refused) == 4
    assert worker.counters.refused == 0
    app.close()


class ExitingPlugin:
    """A plugin whose hooks call sys.exit() (a BaseException) on every job and chain event."""

    @hookimpl
    def jobchain_job_succeeded(self, job: Job) -> None:
        sys.exit("plugin quits")

    @hookimpl
    def jobchain_chain_completed(self, chain: ChainRecord) -> None:
        sys.exit("plugin quits")


def test_a_hook_raising_a_base_exception_kills_no_thread(app: App, start_worker: StartWorker) -> None:
    """A hook that raises SystemExit is logged like any failing hook; jobs, chains and threads go on."""
    app.plugins.register(ExitingPlugin())

    @app.task
    def inc(x: int) -> int:
        return x + 1

    with structlog.testing.capture_logs() as logs:
        worker = start_worker(app, concurrency=1)
        first = (inc >> inc).submit(0)
        assert first.wait(timeout=3) == 2
        second = (inc >> inc).submit(5)
        assert second.wait(timeout=3) == 7
        # the chain events fire on the settler thread just after the record says completed
        assert eventually(
            lambda: sum(e.get("hook") == "jobchain_chain_completed" for e in logs) == 2, timeout=3
        )
    assert worker._settler is not None
    assert worker._settler.is_alive()
    assert worker.counters.threads_died == 0
    hooks = {e["hook"] for e in logs if e["event"] == "hook_failed"}
    assert hooks == {"jobchain_job_succeeded", "jobchain_chain_completed"}


@pytest.mark.parametrize(
    ("options", "where"),
    [({"name": "box-\udcff"}, "name: lone surrogate"), ({"labels": {"zone": "\ud800"}}, "labels['zone']")],
    ids=["name", "label"],
)
def test_worker_name_and_labels_must_be_utf8(app: App, options: dict[str, Any], where: str) -> None:
    """A name or label no backend can store (undecodable command-line bytes) is refused at once."""
    with pytest.raises(ConfigurationError, match="valid UTF-8") as caught:
        app.worker(**options)
    assert where in str(caught.value)
