"""``async def`` tasks on a worker's event loop: concurrency, timeouts, cancel, context, blocking, stop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from structlog.testing import capture_logs

import jobchain
from jobchain import App, Fail, Retry, chain
from jobchain.errors import JobCancelledError, JobFailedError
from jobchain.ids import new_id
from jobchain.memory import MemoryBackend
from jobchain.testing.helpers import eventually
from jobchain.worker import Worker

StartWorker = Callable[..., Worker]


async def _until(event: threading.Event) -> None:
    """Wait for a gate the test opens from its own thread, without blocking the loop."""
    while not event.is_set():
        await asyncio.sleep(0.005)


def test_async_concurrency_bounds_the_coroutines_running(app: App, start_worker: StartWorker) -> None:
    """With async_concurrency=3, a fourth coroutine job waits until one of the three ends."""
    gate = threading.Event()
    started: list[int] = []

    @app.task
    async def hold(i: int) -> int:
        started.append(i)
        await _until(gate)
        return i

    handles = [hold.submit(i) for i in range(4)]
    worker = start_worker(app, async_concurrency=3)
    assert eventually(lambda: len(started) == 3 and worker.held() == 4)
    assert len(started) == 3  # the fourth is reserved, waiting for room on the loop
    gate.set()
    assert sorted(h.wait(10) for h in handles) == [0, 1, 2, 3]
    assert sorted(started) == [0, 1, 2, 3]


def test_one_worker_runs_plain_tasks_on_threads_and_async_ones_on_its_loop(
    app: App, start_worker: StartWorker
) -> None:
    """A mixed worker runs plain functions on its pool threads and coroutines on its one event loop."""

    @app.task
    def plain(x: int) -> str:
        return threading.current_thread().name

    @app.task
    async def coro(x: int) -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    plains = [plain.submit(i) for i in range(5)]
    coros = [coro.submit(i) for i in range(5)]
    start_worker(app)
    assert {h.wait(10) for h in coros} == {"jobchain-aio-loop"}
    assert all(name.startswith("jobchain-worker-") for name in (h.wait(10) for h in plains))


def test_a_chain_mixes_plain_and_async_steps(app: App, start_worker: StartWorker) -> None:
    """A coroutine step's result feeds the next step, plain or async, as any step's does."""

    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0.001)
        return x * 2

    @app.task
    def inc(x: int) -> int:
        return x + 1

    handle = chain(double, inc, double).submit(5)
    start_worker(app)
    handle.wait(10)
    assert app.chain(handle.id).result() == 22


def test_a_worker_without_async_tasks_runs_no_event_loop(app: App, start_worker: StartWorker) -> None:
    """The event loop starts only for async tasks (or when async_concurrency asks for it)."""

    @app.task
    def plain() -> int:
        return 1

    assert start_worker(app).runs_async is False
    assert start_worker(app, async_concurrency=5).runs_async is True


def test_timeout_cancels_the_coroutine(app: App, start_worker: StartWorker) -> None:
    """A coroutine past its task's timeout is cancelled and the job fails with JobTimeout, unretried here."""
    cancelled = threading.Event()

    @app.task(timeout=0.1)
    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    handle = slow.submit()
    start_worker(app)
    with pytest.raises(JobFailedError) as info:
        handle.wait(10)
    assert info.value.error is not None
    assert info.value.error.type == "JobTimeout"
    assert "ran past its timeout of 0.1s" in info.value.error.message
    assert cancelled.is_set()


def test_timeout_is_retried_by_the_task_policy(app: App, start_worker: StartWorker) -> None:
    """A timed-out coroutine job is retried like a timed-out thread job."""
    calls: list[int] = []

    @app.task(timeout=0.1, retry=Retry(attempts=2, base=0.01, jitter=False))
    async def slow_once() -> str:
        calls.append(jobchain.current_job().attempt)
        if len(calls) == 1:
            await asyncio.sleep(30)
        return "done"

    handle = slow_once.submit()
    start_worker(app)
    assert handle.wait(10) == "done"
    assert calls == [1, 2]


def test_cancel_request_cancels_a_running_coroutine(app: App, start_worker: StartWorker) -> None:
    """app.cancel() on a running coroutine job cancels it; the job is cancelled, never retried or failed."""
    running = threading.Event()
    seen: list[bool] = []

    @app.task(retry=Retry(attempts=3, base=0.01))
    async def long() -> None:
        running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(jobchain.current_job().cancel_requested)
            raise

    handle = long.submit()
    worker = start_worker(app)
    assert running.wait(10)
    app.cancel([handle.id])
    with pytest.raises(JobCancelledError):
        handle.wait(10)
    assert seen == [True]
    assert handle.status() == "cancelled"
    assert len(app.failed) == 0
    assert eventually(lambda: worker.counters.cancelled == 1)


def test_raise_if_cancelled_inside_a_coroutine(app: App, start_worker: StartWorker) -> None:
    """A coroutine that catches the cancel and checks in itself with raise_if_cancelled is cancelled too."""
    running = threading.Event()

    @app.task
    async def stubborn() -> None:
        running.set()
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # ignores the cancel: the checkpoint stops it
                await asyncio.sleep(0.01)
            jobchain.current_job().raise_if_cancelled()

    handle = stubborn.submit()
    start_worker(app)
    assert running.wait(10)
    app.cancel([handle.id])
    with pytest.raises(JobCancelledError):
        handle.wait(10)


def test_current_job_is_each_coroutines_own(app: App, start_worker: StartWorker) -> None:
    """Coroutines running at once each see their own job in current_job()."""

    @app.task
    async def whoami(i: int) -> list[Any]:
        first = jobchain.current_job().id
        await asyncio.sleep(0.02)  # the others run meanwhile
        return [i, first, jobchain.current_job().id, jobchain.current_job().attempt]

    handles = [whoami.submit(i) for i in range(20)]
    start_worker(app, async_concurrency=20)
    for i, handle in enumerate(handles):
        assert handle.wait(10) == [i, handle.id, handle.id, 1]


def test_a_coroutine_blocking_the_loop_is_logged_once_with_its_task_and_job(
    app: App, start_worker: StartWorker
) -> None:
    """A coroutine that blocks the loop past the threshold is logged once, naming its task and job."""

    @app.task
    async def blocker() -> None:
        time.sleep(0.5)  # the mistake: a blocking call inside a coroutine

    @app.task
    async def polite() -> None:
        await asyncio.sleep(0.2)

    with capture_logs() as logs:
        handle = blocker.submit()
        fine = polite.submit()
        start_worker(app, loop_block_threshold=0.1)
        handle.wait(10)
        fine.wait(10)
        assert eventually(lambda: any(e["event"] == "event_loop_unblocked" for e in logs))
    blocked = [e for e in logs if e["event"] == "event_loop_blocked"]
    assert len(blocked) == 1
    assert blocked[0]["task"] == "blocker"
    assert blocked[0]["job_id"] == handle.id
    assert blocked[0]["log_level"] == "warning"
    assert blocked[0]["blocked_for"] >= 0.1


def test_exceptions_are_retried_by_policy_and_fail_skips_retries(app: App, start_worker: StartWorker) -> None:
    """A coroutine's exception is retried by the task's policy; Fail goes to the failed queue at once."""
    attempts: list[int] = []

    @app.task(retry=Retry(attempts=3, base=0.01, jitter=False))
    async def flaky() -> str:
        attempts.append(jobchain.current_job().attempt)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @app.task(retry=Retry(attempts=3, base=0.01))
    async def refuses() -> None:
        raise Fail("bad input")

    ok = flaky.submit()
    bad = refuses.submit()
    start_worker(app)
    assert ok.wait(10) == "ok"
    assert attempts == [1, 2, 3]
    with pytest.raises(JobFailedError) as info:
        bad.wait(10)
    assert info.value.error is not None
    assert (info.value.error.type, info.value.error.attempt) == ("Fail", 1)
    assert [e.job.id for e in app.failed.list()] == [bad.id]


def test_a_non_json_result_fails_the_job(app: App, start_worker: StartWorker) -> None:
    """A coroutine returning a value JSON cannot carry fails unretried, saying where the value is."""

    @app.task(retry=Retry(attempts=3, base=0.01))
    async def odd() -> Any:
        return {"when": object()}

    handle = odd.submit()
    start_worker(app)
    with pytest.raises(JobFailedError) as info:
        handle.wait(10)
    assert info.value.error is not None
    assert (info.value.error.type, info.value.error.attempt) == ("InvalidJobError", 1)
    assert "returned a value JSON cannot carry" in info.value.error.message


def test_graceful_stop_finishes_running_coroutines_and_releases_the_rest(app: App) -> None:
    """stop() lets running coroutines finish, gives back the unstarted ones unrun, and loses nothing."""
    running = threading.Event()
    finished: list[int] = []

    @app.task
    async def work(i: int) -> int:
        running.set()
        await asyncio.sleep(0.3)
        finished.append(i)
        return i

    handles = [work.submit(i) for i in range(10)]
    worker = app.worker(concurrency=1, async_concurrency=4, poll=0.02).start()
    assert running.wait(10)
    assert worker.stop(timeout=10) is True
    assert 1 <= len(finished) <= 4
    states = [h.status() for h in handles]
    assert states.count("succeeded") == len(finished)
    assert states.count("queued") == 10 - len(finished)  # the rest went back to the queue, unrun
    assert worker.runs_async is True
    again = app.worker(concurrency=1, async_concurrency=10, poll=0.02).start()
    try:
        assert sorted(h.wait(10) for h in handles) == list(range(10))
    finally:
        again.stop(timeout=5)


def test_a_limited_coroutine_waits_without_blocking_the_loop(app: App, start_worker: StartWorker) -> None:
    """A concurrency limit holds coroutine jobs one at a time while others run on the same loop."""
    inside: list[int] = []
    most: list[int] = [0]

    @app.task(concurrency=1)
    async def one_at_a_time(i: int) -> int:
        inside.append(i)
        most[0] = max(most[0], len(inside))
        await asyncio.sleep(0.02)
        inside.remove(i)
        return i

    @app.task
    async def free(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    limited = [one_at_a_time.submit(i) for i in range(4)]
    others = [free.submit(i) for i in range(4)]
    start_worker(app, async_concurrency=10)
    assert [h.wait(10) for h in others] == [0, 1, 2, 3]
    assert sorted(h.wait(10) for h in limited) == [0, 1, 2, 3]
    assert most == [1]


def test_async_concurrency_is_validated(app: App) -> None:
    """async_concurrency is an int from 1 to 10000; loop_block_threshold a positive number of seconds."""
    for bad in (0, 10001, 2.5, True):
        with pytest.raises(ValueError, match="async_concurrency must be an int from 1 to 10000"):
            app.worker(async_concurrency=bad)
    with pytest.raises(ValueError, match="loop_block_threshold must be > 0 seconds"):
        app.worker(loop_block_threshold=0)


def test_eager_mode_runs_a_coroutine_task_to_completion(plugins: jobchain.Plugins) -> None:
    """In test mode a coroutine task runs with asyncio.run; its own submits run in the same drain."""
    app = App(MemoryBackend(), eager=True, plugins=plugins)

    @app.task
    async def leaf(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @app.task
    async def parent(x: int) -> str:
        child = leaf.submit(x)
        return child.id

    assert leaf.submit(1).result() == 2
    child_id = parent.submit(1).result()
    assert app.job(child_id).result() == 2


def test_eager_mode_inside_a_running_loop(plugins: jobchain.Plugins) -> None:
    """Submitting in test mode from async code runs the coroutine on a helper thread's loop, to the end."""
    app = App(MemoryBackend(), eager=True, plugins=plugins)

    @app.task
    async def leaf(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @app.task
    async def parent(x: int) -> str:
        return leaf.submit(x).id

    async def handler() -> tuple[int, int]:
        child_id = parent.submit(41).result()
        return leaf.submit(1).result(), app.job(child_id).result()

    assert asyncio.run(handler()) == (2, 42)


def test_an_async_task_declared_after_a_loopless_worker_started_still_runs(
    app: App, start_worker: StartWorker
) -> None:
    """A worker started without a loop runs a later async task on a pool thread, with asyncio.run."""

    @app.task
    def plain() -> int:
        return 1

    worker = start_worker(app)
    assert worker.runs_async is False

    @app.task
    async def late() -> str:
        await asyncio.sleep(0)
        return jobchain.current_job().id

    handle = late.submit()
    assert handle.wait(10) == handle.id


def test_coroutine_jobs_reserved_ahead_of_a_full_loop_go_back_when_they_wait(
    app: App, start_worker: StartWorker
) -> None:
    """A job reserved ahead of a loop that stays full goes back to its queue, unrun, for other workers."""
    gate = threading.Event()

    @app.task
    async def hold(i: int) -> int:
        await _until(gate)
        return i

    handles = [hold.submit(i) for i in range(6)]
    with capture_logs() as logs:
        worker = start_worker(app, async_concurrency=4)
        assert eventually(lambda: worker.held() == 5)  # four running, one reserved ahead
        assert eventually(lambda: any(e["event"] == "prefetched_jobs_given_back" for e in logs))
        assert eventually(lambda: worker.held() == 4)
        assert [h.status() for h in handles].count("queued") == 2
    gate.set()
    assert sorted(h.wait(10) for h in handles) == list(range(6))


class _EventRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    @jobchain.hookimpl
    def jobchain_job_started(self, job: jobchain.Job, thread: str) -> None:
        self.seen.append(("started", job.task, thread))

    @jobchain.hookimpl
    def jobchain_job_succeeded(self, job: jobchain.Job, thread: str) -> None:
        self.seen.append(("succeeded", job.task, thread))

    @jobchain.hookimpl
    def jobchain_job_retrying(self, job: jobchain.Job, thread: str) -> None:
        self.seen.append(("retrying", job.task, thread))

    @jobchain.hookimpl
    def jobchain_job_failed(self, job: jobchain.Job, thread: str) -> None:
        self.seen.append(("failed", job.task, thread))


def test_coroutine_jobs_emit_the_job_events(app: App, start_worker: StartWorker) -> None:
    """A coroutine job emits job_started, then job_retrying/succeeded/failed, from the loop's row."""
    recorder = _EventRecorder()
    app.plugins.register(recorder)
    tries: list[int] = []

    @app.task(retry=Retry(attempts=2, base=0.01, jitter=False))
    async def once_more() -> None:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("again")

    @app.task
    async def broken() -> None:
        raise Fail("no")

    retried, failing = once_more.submit(), broken.submit()
    start_worker(app)
    retried.wait(10)
    with pytest.raises(JobFailedError):
        failing.wait(10)
    assert eventually(lambda: len(recorder.seen) == 6)
    assert sorted(recorder.seen) == sorted(
        [
            ("started", "once_more", "async"),
            ("retrying", "once_more", "async"),
            ("started", "once_more", "async"),
            ("succeeded", "once_more", "async"),
            ("started", "broken", "async"),
            ("failed", "broken", "async"),
        ]
    )


def test_a_forged_coroutine_job_never_runs(plugins: jobchain.Plugins, start_worker: StartWorker) -> None:
    """With signing on, a coroutine job whose arguments were rewritten in the store fails, unrun."""
    backend = MemoryBackend()
    app = App(backend, plugins=plugins, signing_keys=["k" * 32])
    ran: list[str] = []

    @app.task
    async def echo(text: str) -> str:
        ran.append(text)
        return text

    good = echo.submit("hello")
    stored = backend.get_job(good.id)
    assert stored is not None
    forged = attrs.evolve(stored.job, id=new_id(), args=("rm -rf /",))
    backend.enqueue([forged])
    worker = start_worker(app)
    assert worker.drain(timeout=10)
    assert ran == ["hello"]
    assert {e.job.id: e.error.type for e in app.failed.iter()} == {forged.id: "BadSignature"}
    app.close()


def test_a_coroutine_running_past_its_lease_keeps_it(app: App, start_worker: StartWorker) -> None:
    """The monitor extends the lease of a running coroutine job: it runs once, however long it takes."""
    runs: list[int] = []

    @app.task
    async def long_one() -> int:
        runs.append(jobchain.current_job().attempt)
        await asyncio.sleep(1.5)  # more than twice the lease
        return 1

    handle = long_one.submit()
    with capture_logs() as logs:
        start_worker(app, lease=0.6, concurrency=1)
        assert handle.wait(10) == 1
    assert runs == [1]
    assert not [e for e in logs if e["event"] in ("leases_lost", "lease_expired_before_start")]
