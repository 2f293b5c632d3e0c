"""The worker runs on a narrow runtime (tasks, backend, events, clock, settings), not on the App."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from attrs import field, frozen

from jobchain import App, Job, Plugins, Retry, SystemClock, Worker, hookimpl
from jobchain.events import Events
from jobchain.memory import MemoryBackend
from jobchain.model import JobState
from jobchain.worker import Runtime


@frozen
class PlainTask:
    """A task that is not an ``@app.task``: the worker needs only these four attributes."""

    name: str
    fn: Callable[..., Any]
    timeout: float | None = None
    retry: Retry = field(factory=Retry.never)


def test_a_worker_runs_jobs_on_a_runtime_built_without_an_app() -> None:
    backend = MemoryBackend()
    seen: list[tuple[str, Any]] = []

    class Listener:
        @hookimpl
        def jobchain_job_succeeded(self, job: Job, result: Any) -> None:
            seen.append((job.task, result))

    runtime = Runtime(
        tasks={"double": PlainTask(name="double", fn=lambda x: 2 * x)},
        backend=backend,
        events=Events(Plugins(entry_points=False, plugins=[Listener()])),
        clock=SystemClock(),
        queues=["default"],
    )
    backend.enqueue_new([Job(id="j1", task="double", args=(21,), enqueued_at=time.time())], [])
    with Worker(runtime, concurrency=1, poll=0.01) as worker:
        assert worker.drain(timeout=10)
    record = backend.get_job("j1")
    assert record is not None
    assert (record.state, record.result) == (JobState.SUCCEEDED, 42)
    assert seen == [("double", 42)]


def test_app_runtime_hands_the_worker_what_the_app_has(app: App) -> None:
    @app.task(queue="db")
    def store(x: int) -> int:
        return x

    runtime = app.runtime()
    assert runtime.backend is app.backend
    assert runtime.clock is app.clock
    assert runtime.tasks["store"] is store
    assert runtime.queues == app.queues == ("db", "default")
    assert (runtime.max_payload, runtime.max_error_bytes, runtime.signer) == (
        app.max_payload,
        app.max_error_bytes,
        app.signer,
    )
    assert runtime.events.plugins is app.plugins
    worker = Worker(app, concurrency=1)  # Worker(app) is Worker(app.runtime())
    assert worker.runtime.backend is app.backend
    assert worker.queues == ("db", "default")


def test_a_task_declared_after_the_runtime_is_found(app: App) -> None:
    runtime = app.runtime()

    @app.task
    def late() -> None: ...

    assert runtime.tasks.get("late") is late


def test_a_worker_needs_a_runtime() -> None:
    with pytest.raises(TypeError, match=r"a jobchain\.worker\.Runtime or an App"):
        Worker(object(), concurrency=1)  # type: ignore[arg-type]
