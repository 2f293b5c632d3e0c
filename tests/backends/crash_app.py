"""The tasks test_crash_recovery runs in real worker processes (``jobchain worker --config`` this file).

With ``$CRASH_RECORDS`` set, each worker process appends lines to a file of
its own, ``<pid>.log`` in that directory, through one ``O_APPEND`` descriptor
and one ``os.write`` per line (a SIGKILL cannot tear a line). Executions are
thus counted outside the Redis under test:

    S <job id> <chain id|-> <step|-> <pid> <monotonic> <wall>     a run starts
    E <job id> <chain id|-> <step|-> <pid> <monotonic> <wall>     that run ends (before it is settled)
    P <job id> <outcome> <pid> <monotonic>                        its outcome is about to be settled
    C <job id> <outcome> <accepted 0|1> <pid> <monotonic before> <monotonic after>
                                                                  the backend's answer to that settlement

``P`` and ``C`` lines come from wrapping the backend's ``settle`` in the
worker process (installed when the worker starts): a job a process started
and has no accepted ``C`` line for was still held by that process, unless
the process died between the backend's answer and its ``C`` line (it then
has a ``P`` line, and nobody runs the job again). A run learns its job
(id, chain, step) from :func:`jobchain.current_job`, on a pool thread or in
a coroutine alike. ``time.monotonic`` is the
system-wide ``CLOCK_MONOTONIC`` on Linux, so times compare across processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from jobchain import App, current_job, hookimpl
from jobchain.model import Delivery, Job, Outcome, SettleResult

QUEUE = "crash"


class Recorder:
    """Writes the S/E/C lines of this process."""

    def __init__(self, directory: str, app: App) -> None:
        self.app = app
        self.pid = os.getpid()
        self.fd = os.open(
            os.path.join(directory, f"{self.pid}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        self.wrapped = False

    def write(self, *fields: object) -> None:
        os.write(self.fd, (" ".join(str(f) for f in fields) + "\n").encode())

    def run(self, kind: str) -> None:
        job: Job = current_job().job
        chain_id, step = ("-", "-") if job.chain is None else (job.chain.chain_id, job.chain.step)
        self.write(kind, job.id, chain_id, step, self.pid, repr(time.monotonic()), repr(time.time()))

    @hookimpl
    def jobchain_worker_started(self) -> None:
        if self.wrapped:
            return
        self.wrapped = True
        backend = self.app.backend
        settle, settle_and_take = backend.settle, backend.settle_and_take

        def recorded_settle(outcomes: Sequence[Outcome]) -> list[SettleResult]:
            return record(outcomes, lambda: (settle(outcomes), []))[0]

        def recorded_settle_and_take(
            outcomes: Sequence[Outcome], **options: Any
        ) -> tuple[list[SettleResult], list[Delivery]]:
            # the Redis backends settle without going through settle() here (a hand-off takes the next step)
            return record(outcomes, lambda: settle_and_take(outcomes, **options))

        def record(
            outcomes: Sequence[Outcome], call: Callable[[], tuple[list[SettleResult], list[Delivery]]]
        ) -> tuple[list[SettleResult], list[Delivery]]:
            before = time.monotonic()
            for outcome in outcomes:
                self.write("P", outcome.delivery.job.id, type(outcome).__name__, self.pid, repr(before))
            results, taken = call()
            after = time.monotonic()
            for outcome, result in zip(outcomes, results, strict=True):
                self.write(
                    "C",
                    outcome.delivery.job.id,
                    type(outcome).__name__,
                    int(result.accepted),
                    self.pid,
                    repr(before),
                    repr(after),
                )
            return results, taken

        backend.settle = recorded_settle  # type: ignore[method-assign]
        backend.settle_and_take = recorded_settle_and_take  # type: ignore[method-assign]


def make_app(backend: str | None = None, *, kind: str | None = None) -> App:
    """An App with the test's tasks: ``job(n, ms)`` and the chain steps ``step1``, ``step2``, ``step3``.

    ``kind`` (default ``$CRASH_TASKS``): ``threads`` declares them plain functions
    that sleep, ``async`` coroutines that await ``asyncio.sleep``.
    """
    app = App(backend)
    directory = os.environ.get("CRASH_RECORDS")
    recorder = Recorder(directory, app) if directory else None
    if recorder is not None:
        app.plugins.register(recorder, name="crash-recorder")
    if (kind or os.environ.get("CRASH_TASKS", "threads")) == "async":
        _declare_async(app, recorder)
    else:
        _declare_plain(app, recorder)
    return app


def _declare_plain(app: App, recorder: Recorder | None) -> None:

    def work(ms: float) -> None:
        if recorder is not None:
            recorder.run("S")
        time.sleep(ms / 1000.0)
        if recorder is not None:
            recorder.run("E")

    @app.task(name="job", queue=QUEUE)
    def job(n: int, ms: float) -> int:
        work(ms)
        return n

    @app.task(name="step1", queue=QUEUE)
    def step1(n: int, ms: float) -> int:
        work(ms)
        return n

    @app.task(name="step2", queue=QUEUE)
    def step2(previous: int, ms: float) -> int:
        work(ms)
        return previous + 1

    @app.task(name="step3", queue=QUEUE)
    def step3(previous: int, ms: float) -> int:
        work(ms)
        return previous + 1


def _declare_async(app: App, recorder: Recorder | None) -> None:
    async def work(ms: float) -> None:
        if recorder is not None:
            recorder.run("S")
        await asyncio.sleep(ms / 1000.0)
        if recorder is not None:
            recorder.run("E")

    @app.task(name="job", queue=QUEUE)
    async def job(n: int, ms: float) -> int:
        await work(ms)
        return n

    @app.task(name="step1", queue=QUEUE)
    async def step1(n: int, ms: float) -> int:
        await work(ms)
        return n

    @app.task(name="step2", queue=QUEUE)
    async def step2(previous: int, ms: float) -> int:
        await work(ms)
        return previous + 1

    @app.task(name="step3", queue=QUEUE)
    async def step3(previous: int, ms: float) -> int:
        await work(ms)
        return previous + 1


app = make_app()
