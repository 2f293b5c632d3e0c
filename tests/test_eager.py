"""Test mode: a submit runs its jobs to completion in the calling thread, with the worker's semantics."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobchain import App, ChainRecord, Fail, Job, Plugins, Retry, chain, group, hookimpl
from jobchain.errors import ConfigurationError
from jobchain.memory import MemoryBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from minimal_backend import MinimalBackend


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    def jobchain_job_succeeded(self, job: Job, result: Any) -> None:
        self.seen.append(("succeeded", job.task))

    @hookimpl
    def jobchain_job_retrying(self, job: Job, delay: float) -> None:
        self.seen.append(("retrying", delay))

    @hookimpl
    def jobchain_job_failed(self, job: Job) -> None:
        self.seen.append(("failed", job.task))

    @hookimpl
    def jobchain_chain_completed(self, chain: ChainRecord) -> None:
        self.seen.append(("chain_completed", chain.id))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(recorder: Recorder) -> App:
    plugins = Plugins(entry_points=False)
    plugins.register(recorder, name="recorder")
    return App(MemoryBackend(), plugins=plugins, eager=True)


def test_a_task_runs_before_submit_returns(app: App, recorder: Recorder) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.submit(1, 2)
    assert handle.status() == "succeeded"
    assert handle.result() == 3
    assert ("succeeded", add.name) in recorder.seen


def test_a_chain_runs_every_step(app: App, recorder: Recorder) -> None:
    @app.task
    def inc(x: int) -> int:
        return x + 1

    handle = chain(inc, inc, inc).submit(1)
    assert handle.result() == 4
    assert ("chain_completed", handle.id) in recorder.seen


def test_a_group_fans_in(app: App) -> None:
    @app.task
    def square(x: int) -> int:
        return x * x

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    handle = chain(group(square.s(2), square.s(3)), total).submit()
    assert handle.result() == 13


def test_a_retry_succeeds_on_the_third_attempt_without_sleeping(app: App, recorder: Recorder) -> None:
    attempts: list[int] = []

    @app.task(retry=Retry(attempts=5, base=30.0, jitter=False))
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "ok"

    began = time.monotonic()
    handle = flaky.submit()
    assert time.monotonic() - began < 5  # two 30 s and 60 s backoffs skipped
    assert handle.result() == "ok"
    assert len(attempts) == 3
    assert [e for e in recorder.seen if e[0] == "retrying"] == [("retrying", 30.0), ("retrying", 60.0)]


def test_a_failure_lands_in_the_failed_queue(app: App, recorder: Recorder) -> None:
    @app.task
    def boom() -> None:
        raise Fail("no")

    handle = boom.submit()
    assert handle.status() == "failed"
    assert [entry.job.id for entry in app.failed.list()] == [handle.id]
    assert ("failed", boom.name) in recorder.seen


def test_jobs_submitted_by_a_task_and_delayed_jobs_run_too(app: App) -> None:
    ran: list[int] = []

    @app.task
    def step(n: int) -> None:
        ran.append(n)
        if n:
            step.submit(n - 1)

    step.submit(3)
    assert ran == [3, 2, 1, 0]


def test_the_eager_block_and_a_backend_that_is_not_memory() -> None:
    plain = App(MemoryBackend(), plugins=Plugins(entry_points=False))

    @plain.task
    def one() -> int:
        return 1

    queued = one.submit()
    assert queued.status() == "queued"
    with plain.eager():
        assert queued.status() == "succeeded"  # what was queued before runs when the block starts
        assert one.submit().result() == 1
    assert one.submit().status() == "queued"
    other = App(MinimalBackend(), plugins=Plugins(entry_points=False))
    with pytest.raises(ConfigurationError, match="memory backend"), other.eager():
        pass


def test_a_delayed_job_runs_without_waiting(app: App) -> None:
    ran: list[str] = []

    @app.task
    def note(x: str) -> None:
        ran.append(x)

    began = time.monotonic()
    later = app.submit(note.s("later").set(delay=3600))
    assert later.status() == "succeeded"
    assert time.monotonic() - began < 5
    assert ran == ["later"]


def test_a_unique_job_runs_inline_and_frees_its_key(app: App) -> None:
    """In test mode a unique submit runs at once; its key is freed, so the next submit runs again."""
    runs: list[int] = []

    @app.task(unique=True)
    def tally(x: int) -> int:
        runs.append(x)
        return x

    first = tally.submit(1)
    assert first.result() == 1
    second = tally.submit(1)
    assert second.id != first.id
    assert second.result() == 1
    assert runs == [1, 1]
