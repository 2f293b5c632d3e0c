"""jobchain.current_job(), the Cancelled signal and workflow.apply_cancelled, without a backend's rules."""

from __future__ import annotations

import pytest

import jobchain
from jobchain import App, Cancelled, Plugins, Retry, chain
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRef, ChainState, StepState
from jobchain.workflow import apply_cancelled


def test_current_job_outside_a_task_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="only available inside a task"):
        jobchain.current_job()


def test_current_job_inside_a_task_in_test_mode() -> None:
    app = App(backend=MemoryBackend(), eager=True, plugins=Plugins(entry_points=False))
    seen: list[tuple[str, int, bool]] = []

    @app.task
    def probe() -> None:
        job = jobchain.current_job()
        job.raise_if_cancelled()  # not cancelled: returns
        seen.append((job.id, job.attempt, job.cancel_requested))

    handle = probe.submit()
    assert seen == [(handle.id, 1, False)]


def test_cancelled_is_never_retried() -> None:
    assert not Retry(attempts=5).should_retry(Cancelled("stop"), 1)


def test_apply_cancelled_ends_the_chain_once() -> None:
    app = App(backend=MemoryBackend(), plugins=Plugins(entry_points=False))
    a, b, c = (app.task(name=n)(lambda *args: None) for n in "abc")
    handle = chain(a, b, c).submit()
    record = app.backend.get_chain(handle.id)
    assert record is not None
    ref = ChainRef(chain_id=record.id, step=1)
    ended = apply_cancelled(record, ref, now=5.0)
    assert ended.state is ChainState.CANCELLED
    assert [s.state for s in ended.steps] == [StepState.PENDING, StepState.CANCELLED, StepState.NOT_EXECUTED]
    assert ended.render() == "a (pending) -> b (cancelled) -> c (not executed)"
    assert apply_cancelled(ended, ref, now=9.0) is ended  # idempotent
    assert apply_cancelled(ended, ChainRef(chain_id=record.id, step=0), now=9.0) is ended  # ended already
