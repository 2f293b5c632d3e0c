"""The worker-level rules again, with ``async def`` tasks on the worker's event loop.

:class:`AsyncWorkerRuns` runs today's Worker on the backend under test with
coroutine tasks: chains and groups, halting, expiry, unknown tasks, each
attempt's error, a cancel request (where the backend declares Cancel), a
graceful stop, and a worker running plain and async tasks side by side. The
same backend calls serve both kinds of task; these rules show that the loop's
path (its buffer, its feeder, its outcomes) keeps every guarantee the threads'
path does.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from jobchain.app import App
from jobchain.canvas import chain, group
from jobchain.capabilities import Cancel, FailedQueue, supports
from jobchain.clock import ManualClock
from jobchain.context import current_job
from jobchain.errors import Fail, JobCancelledError
from jobchain.model import ChainState, JobState
from jobchain.retry import Retry
from jobchain.testing.helpers import MakeJob, eventually, run_worker
from jobchain.testing.suite._base import ConformanceBase, FullBackend
from jobchain.worker import Worker

__all__ = ["AsyncWorkerRuns"]


async def _until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.005)


class AsyncWorkerRuns(ConformanceBase):
    """A real Worker running ``async def`` tasks on this backend keeps the threads' guarantees."""

    def test_async_worker_runs_a_chain_with_a_group(self, app: App) -> None:
        """Coroutine steps run a chain with a fan-out and fan-in to completion."""

        @app.task
        async def split(n: int) -> int:
            await asyncio.sleep(0)
            return n

        @app.task
        async def power(n: int, exponent: int) -> int:
            await asyncio.sleep(0.001 * exponent)
            return int(n**exponent)

        @app.task
        async def total(values: list[int]) -> int:
            return sum(values)

        handle = chain(split, group(power.s(1), power.s(2), power.s(3)), total).submit(2)
        run_worker(app)
        assert handle.result() == 2 + 4 + 8

    def test_async_worker_halts_a_chain_at_a_permanent_failure(self, app: App) -> None:
        """A coroutine step that raises Fail halts its chain, and lands in the failed queue."""

        @app.task
        async def fetch(url: str) -> str:
            return f"body of {url}"

        @app.task
        async def parse(body: str) -> str:
            raise Fail(f"cannot parse {body!r}")

        @app.task
        async def store(doc: str) -> None:
            raise AssertionError("a step after a failure must not run")

        handle = chain(fetch, parse, store).submit("u")
        run_worker(app)
        assert handle.status() == ChainState.HALTED.value
        assert handle.render() == "fetch (succeeded) -> parse (failed) -> store (not executed)"
        [entry] = app.failed.list()
        assert (entry.job.task, entry.error.type) == ("parse", "Fail")

    def test_async_worker_fails_an_expired_job_as_job_expired(
        self, app: App, backend: FullBackend, clock: ManualClock
    ) -> None:
        """A coroutine job not started before its expiry goes to the failed queue as JobExpired, unrun."""
        ran: list[int] = []

        @app.task(expires=5.0)
        async def report() -> None:
            ran.append(1)

        handle = report.submit()
        clock.advance(10.0)
        run_worker(app)
        entry = backend.get_failed(handle.id)
        assert entry is not None
        assert entry.error.type == "JobExpired"
        assert ran == []

    def test_async_worker_fails_an_unknown_task_and_keeps_going(
        self, app: App, backend: FullBackend, make_job: MakeJob
    ) -> None:
        """Beside coroutine jobs, a stored job of an unknown task fails as UnknownTaskError."""

        @app.task
        async def known() -> str:
            await asyncio.sleep(0)
            return "ok"

        bad = make_job("no_such_task")
        backend.enqueue([bad])
        good = known.submit()
        run_worker(app, concurrency=1)
        entry = backend.get_failed(bad.id)
        assert entry is not None
        assert entry.error.type == "UnknownTaskError"
        assert good.result() == "ok"

    def test_async_worker_records_each_attempt_of_a_retried_task(self, app: App, clock: ManualClock) -> None:
        """A coroutine that fails twice, then succeeds, leaves both real errors on its record."""
        runs: list[int] = []

        @app.task(retry=Retry(attempts=3, base=2.0, factor=3.0, jitter=False))
        async def flaky() -> str:
            runs.append(current_job().attempt)
            await asyncio.sleep(0)
            if len(runs) == 1:
                raise ConnectionError("refused")
            if len(runs) == 2:
                raise TimeoutError("timed out")
            return "done"

        handle = flaky.submit()
        worker = Worker(app, concurrency=1, poll=0.01)
        worker.start()
        try:

            def finished() -> bool:
                record = app.backend.get_job(handle.id)
                if record is not None and record.state is JobState.DELAYED:
                    clock.advance(1.0)  # the backoff passes on the test's clock, never a lease
                return record is not None and record.state is JobState.SUCCEEDED

            assert eventually(finished), "the task did not succeed on its third run"
        finally:
            assert worker.stop(timeout=5.0)
        record = app.backend.get_job(handle.id)
        assert record is not None
        assert [(e.type, e.message, e.attempt) for e in record.errors] == [
            ("ConnectionError", "refused", 1),
            ("TimeoutError", "timed out", 2),
        ]
        assert runs == [1, 2, 3]

    def test_async_worker_cancels_a_running_coroutine(self, app: App, backend: FullBackend) -> None:
        """A cancel request cancels a running coroutine: the job is cancelled, not failed; others go on."""
        if not supports(backend, Cancel):
            pytest.skip(f"{type(backend).__name__} does not declare Cancel")
        started = threading.Event()

        @app.task(retry=Retry(attempts=3, base=0.01))
        async def endless() -> None:
            started.set()
            await asyncio.sleep(60)

        @app.task
        async def quick(x: int) -> int:
            return x * 2

        worker = Worker(app, concurrency=1, poll=0.02, lease=5.0)
        worker.start()
        try:
            handle = endless.submit()
            assert started.wait(10)
            assert handle.cancel().requested == (handle.id,)
            with pytest.raises(JobCancelledError):
                handle.wait(10)
            assert quick.submit(21).wait(10) == 42
        finally:
            assert worker.stop(timeout=5.0)
        assert worker.counters.cancelled == 1
        if isinstance(backend, FailedQueue):
            assert backend.get_failed(handle.id) is None

    def test_async_worker_stops_gracefully(self, app: App) -> None:
        """stop() lets running coroutines finish and gives the unstarted ones back: none lost, none twice."""
        gate = threading.Event()
        started: list[int] = []

        @app.task
        async def hold(i: int) -> int:
            started.append(i)
            await _until(gate)
            return i

        handles = [hold.submit(i) for i in range(6)]
        worker = Worker(app, concurrency=1, async_concurrency=2, poll=0.02)
        worker.start()
        try:
            assert eventually(lambda: len(started) == 2)
            worker.request_stop()
            gate.set()
        finally:
            assert worker.stop(timeout=10.0)
        assert worker.held() == 0
        done = [h for h in handles if h.status() == JobState.SUCCEEDED.value]
        assert len(done) == 2
        run_worker(app, async_concurrency=4)
        assert sorted(h.result() for h in handles) == list(range(6))
        assert sorted(started) == list(range(6))  # each ran once

    def test_one_worker_runs_plain_and_async_tasks(self, app: App) -> None:
        """A worker runs plain functions on threads and coroutines on its loop, from the same queue."""

        @app.task
        def plain(x: int) -> int:
            return x + 1

        @app.task
        async def coro(x: int) -> int:
            await asyncio.sleep(0.001)
            return x * 10

        plains = [plain.submit(i) for i in range(10)]
        coros = [coro.submit(i) for i in range(10)]
        worker = run_worker(app, async_concurrency=5)
        assert [h.result() for h in plains] == [i + 1 for i in range(10)]
        assert [h.result() for h in coros] == [i * 10 for i in range(10)]
        assert worker.async_slot.succeeded == 10
