"""The DSL: declaring tasks, composing chains and groups, submitting and the handles."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from jobchain import (
    App,
    Chain,
    ChainHaltedError,
    ChainHandle,
    ConfigurationError,
    Fail,
    Group,
    InvalidJobError,
    Job,
    JobFailedError,
    JobHandle,
    NotReadyError,
    Retry,
    Signature,
    WaitTimeoutError,
    Worker,
    chain,
    group,
)
from jobchain.model import Completed, ErrorInfo, Failed


def run_next(app: App) -> Job:
    """Reserve one job, run its task here and settle the outcome: a one-step worker."""
    (delivery,) = app.backend.reserve(app.queues, limit=1, lease=60.0, worker="test")
    job = delivery.job
    try:
        result = app.tasks[job.task].fn(*job.args, **job.kwargs)
    except Exception as exc:
        error = ErrorInfo.from_exception(exc, attempt=job.attempt, at=0.0)
        app.backend.settle([Failed(delivery=delivery, error=error)])
    else:
        app.backend.settle([Completed(delivery=delivery, result=result, started_at=0.0, finished_at=0.0)])
    return job


# --- declaring tasks -------------------------------------------------------------------


def test_bare_decorator_declares_task_with_defaults(app: App) -> None:
    """@app.task without arguments names the task after the function and uses the defaults."""

    @app.task
    def resize(width: int) -> int:
        return width // 2

    assert (resize.name, resize.queue, resize.priority) == ("resize", "default", 0)
    assert resize.retry == Retry.never()
    assert app.tasks["resize"] is resize


def test_decorator_with_options_records_them(app: App) -> None:
    """@app.task(...) keeps its name, queue, priority, retry, timeout and expiry."""
    policy = Retry(attempts=4)

    @app.task(name="img.resize", queue="images", priority=3, retry=policy, timeout=2.5, expires=60)
    def resize(width: int) -> int:
        return width

    assert (resize.name, resize.queue, resize.priority) == ("img.resize", "images", 3)
    assert (resize.retry, resize.timeout, resize.expires) == (policy, 2.5, 60)
    assert app.get_task("img.resize") is resize
    assert "images" in app.queues


def test_task_without_policy_uses_the_app_default(plugins: Any) -> None:
    """A task that declares no retry policy gets the App's."""
    from jobchain.memory import MemoryBackend

    policy = Retry(attempts=7)
    configured = App(MemoryBackend(), retry=policy, plugins=plugins)

    @configured.task
    def work() -> None:
        return None

    assert work.retry is policy


def test_calling_a_task_runs_the_function_now(app: App) -> None:
    """Calling a declared task calls the function directly, without a backend."""

    @app.task
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    assert app.stats() == []


def test_duplicate_task_name_is_rejected(app: App) -> None:
    """Declaring two tasks with one name is an error that names the task."""

    @app.task
    def fetch() -> None:
        return None

    with pytest.raises(ConfigurationError, match="'fetch' is declared twice"):

        @app.task(name="fetch")
        def other() -> None:
            return None


class AsyncCallable:
    async def __call__(self) -> int:
        return 1


async def coroutine_task() -> int:
    return 1


async def async_generator_task() -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize(
    "function",
    [coroutine_task, AsyncCallable(), functools.partial(coroutine_task)],
    ids=["async def", "async __call__", "partial of async def"],
)
def test_async_tasks_are_declared_async(app: App, function: Callable[..., Any]) -> None:
    """An async def (or an object whose __call__ is one) is a task a worker runs on its event loop."""
    declared = app.task(name="fetch")(function)
    assert declared.is_async is True
    assert app.tasks == {"fetch": declared}


def test_plain_tasks_are_not_async(app: App) -> None:
    """A plain function is a task the worker's threads run."""

    @app.task
    def plain() -> int:
        return 1

    assert plain.is_async is False


def test_async_generators_are_refused_at_declaration(app: App) -> None:
    """An async generator is refused when declared, with what to do instead, not failed when it runs."""
    with pytest.raises(ConfigurationError) as info:
        app.task(name="fetch")(async_generator_task)
    assert str(info.value) == (
        "task 'fetch' is an async generator: a task returns one value; "
        "declare it `async def` and return a list"
    )
    assert app.tasks == {}


def test_task_returning_a_coroutine_fails_without_a_warning(app: App) -> None:
    """A plain function that returns a coroutine fails unretried, and the coroutine is closed unrun."""

    @app.task(retry=Retry(attempts=3, base=0.01))
    def sneaky() -> Any:
        return coroutine_task()

    handle = sneaky.submit()
    worker = app.worker(concurrency=1, poll=0.02).start()
    try:
        with pytest.raises(JobFailedError) as info:
            handle.wait(timeout=3)
    finally:
        worker.stop(timeout=5)
    assert info.value.error is not None
    assert (info.value.error.type, info.value.error.attempt) == ("InvalidJobError", 1)
    assert info.value.error.message == (
        "task 'sneaky' returned a coroutine from a plain function: declare it "
        "`async def` (the worker then awaits it on its event loop)"
    )


def test_lambda_needs_a_name(app: App) -> None:
    """A lambda has no usable name, so it must be given one."""
    with pytest.raises(ConfigurationError, match=r"@app.task\(name=...\)"):
        app.task(lambda: None)
    assert app.task(name="noop")(lambda: None).name == "noop"


# --- composing ---------------------------------------------------------------------------


@pytest.fixture
def abc(app: App) -> tuple[Any, Any, Any]:
    @app.task(name="A")
    def a(x: int) -> int:
        return x + 1

    @app.task(name="B")
    def b(x: int) -> int:
        return x * 10

    @app.task(name="C")
    def c(x: int, suffix: str = "") -> str:
        return f"{x}{suffix}"

    return a, b, c


def names(spec: Chain) -> list[str]:
    return [
        "group(" + ",".join(m.name for m in s.members) + ")" if isinstance(s, Group) else s.name
        for s in spec.steps
    ]


def test_chain_function_orders_steps(abc: tuple[Any, Any, Any]) -> None:
    """chain(a, b, c) runs a, then b, then c, and keeps its name."""
    a, b, c = abc
    spec = chain(a, b, c, name="pipeline")
    assert names(spec) == ["A", "B", "C"]
    assert spec.name == "pipeline"


def test_rshift_builds_the_same_chain(abc: tuple[Any, Any, Any]) -> None:
    """a >> b >> c is chain(a, b, c), from tasks, signatures or chains on either side."""
    a, b, c = abc
    assert names(a >> b >> c) == ["A", "B", "C"]
    assert names(a.s() >> (b >> c)) == ["A", "B", "C"]
    assert names((a >> b) >> c.s(suffix="!")) == ["A", "B", "C"]


def test_nested_chains_flatten(abc: tuple[Any, Any, Any]) -> None:
    """A chain given as a step of another chain contributes its steps in place."""
    a, b, c = abc
    assert names(chain(chain(a, b), c, chain(a))) == ["A", "B", "C", "A"]


def test_group_in_a_chain_is_one_step(abc: tuple[Any, Any, Any]) -> None:
    """group(...) inside a chain is a single fan-out step."""
    a, b, c = abc
    spec = a >> group(b.s(), b.s()) >> c
    assert names(spec) == ["A", "group(B,B)", "C"]


def test_chain_data_flows_from_step_to_step(app: App, abc: tuple[Any, Any, Any]) -> None:
    """Each step gets the previous result first, then its own bound arguments."""
    a, b, c = abc
    handle = chain(a, b, c.s(suffix="!")).submit(1)
    assert [run_next(app).args for _ in range(3)] == [(1,), (2,), (20,)]
    assert handle.result() == "20!"


def test_immutable_step_ignores_previous_result(app: App, abc: tuple[Any, Any, Any]) -> None:
    """A step made with .si() gets only its own arguments, not the previous step's result."""
    a, b, _ = abc
    handle = chain(a, b.si(5)).submit(1)
    first, second = run_next(app), run_next(app)
    assert (first.args, second.args) == ((1,), (5,))
    assert handle.result() == 50


def test_group_results_feed_next_step_in_order(app: App, abc: tuple[Any, Any, Any]) -> None:
    """The step after a group gets the list of the group's results in member order."""
    a, b, c = abc
    handle = chain(group(a.s(1), b.s(2), a.s(3)), c).submit()
    first_three = sorted(run_next(app).task for _ in range(3))
    assert first_three == ["A", "A", "B"]
    assert run_next(app).args == ([2, 20, 4],)
    assert handle.result() == "[2, 20, 4]"


def test_group_alone_returns_member_results(app: App, abc: tuple[Any, Any, Any]) -> None:
    """A group submitted on its own results in the list of its members' results."""
    a, b, _ = abc
    handle = group(a, b).submit(3)
    assert isinstance(handle, ChainHandle)
    run_next(app)
    run_next(app)
    assert handle.result() == [4, 30]


def test_signature_set_changes_options(app: App, abc: tuple[Any, Any, Any]) -> None:
    """.set(queue=, priority=, delay=) applies to the submitted job and nothing else."""
    a, _, _ = abc
    sig = a.s(1).set(queue="urgent", priority=9, delay=30)
    record = sig.submit().record()
    assert record is not None
    assert (record.job.queue, record.job.priority, record.state.value) == ("urgent", 9, "delayed")
    assert record.job.not_before == pytest.approx(record.job.enqueued_at + 30)
    assert a.s(1) == Signature(task=a, args=(1,))


@pytest.mark.parametrize("bad", [42, "B", print, None])
def test_non_callable_in_chain_names_the_step(abc: tuple[Any, Any, Any], bad: Any) -> None:
    """Something other than a task in chain() is an InvalidJobError naming the step and the value."""
    a, _, c = abc
    with pytest.raises(InvalidJobError, match=r"chain\(\) step 2 is ") as info:
        chain(a, bad, c)
    assert repr(bad) in str(info.value)
    assert "@app.task" in str(info.value)


def test_rshift_with_non_task_names_the_step(abc: tuple[Any, Any, Any]) -> None:
    """a >> 42 fails the same way chain(a, 42) does."""
    a, _, _ = abc
    with pytest.raises(InvalidJobError, match=r"chain\(\) step 2 is 42 \(int\)"):
        a >> 42


def test_empty_chain_and_group_are_rejected() -> None:
    """chain() and group() need at least one step."""
    with pytest.raises(InvalidJobError, match="at least one step"):
        chain()
    with pytest.raises(InvalidJobError, match="at least one member"):
        group()


def test_group_rejects_nested_chains(abc: tuple[Any, Any, Any]) -> None:
    """A group's members are tasks or signatures, not chains or groups."""
    a, b, _ = abc
    with pytest.raises(InvalidJobError, match="group\\(\\) member 2 is a Chain"):
        group(a, a >> b)


def test_chain_of_two_apps_is_rejected(app: App, abc: tuple[Any, Any, Any], plugins: Any) -> None:
    """Tasks of different Apps cannot be chained."""
    from jobchain.memory import MemoryBackend

    other = App(MemoryBackend(), plugins=plugins)

    @other.task
    def foreign(x: int) -> int:
        return x

    a, _, _ = abc
    with pytest.raises(InvalidJobError, match="different App"):
        chain(a, foreign)


# --- submitting and handles --------------------------------------------------------------


def test_submit_returns_a_job_handle(app: App, abc: tuple[Any, Any, Any]) -> None:
    """task.submit() enqueues one job and returns a handle with its id and status."""
    a, _, _ = abc
    handle = a.submit(1)
    assert isinstance(handle, JobHandle)
    assert handle.status() == "queued"
    record = handle.record()
    assert record is not None
    assert (record.job.id, record.job.task, record.job.args) == (handle.id, "A", (1,))


def test_submit_by_name(app: App, abc: tuple[Any, Any, Any]) -> None:
    """app.submit accepts a task's name."""
    handle = app.submit("B", 4)
    run_next(app)
    assert handle.result() == 40


def test_result_before_finish_is_not_ready(app: App, abc: tuple[Any, Any, Any]) -> None:
    """.result() on an unfinished job raises NotReadyError, and .wait() gives up after its timeout."""
    a, _, _ = abc
    handle = a.submit(1)
    with pytest.raises(NotReadyError, match="queued"):
        handle.result()
    with pytest.raises(WaitTimeoutError):
        handle.wait(timeout=0.05)


def test_handle_status_follows_the_job(app: App, abc: tuple[Any, Any, Any]) -> None:
    """A job handle's status moves from queued to succeeded, and unknown ids say so."""
    a, _, _ = abc
    handle = a.submit(1)
    run_next(app)
    assert (handle.status(), handle.result()) == ("succeeded", 2)
    assert app.job("no-such-job").status() == "unknown"


def test_submit_many_returns_handles_in_order(app: App, abc: tuple[Any, Any, Any]) -> None:
    """submit_many enqueues every item and returns one handle per item, in order."""
    a, b, c = abc
    handles = app.submit_many([a.s(1), b.s(3) >> c, b.s(2), a.s(5)])
    assert [type(h) for h in handles] == [JobHandle, ChainHandle, JobHandle, JobHandle]
    assert len({h.id for h in handles}) == 4
    records = [h.record() for h in handles if isinstance(h, JobHandle)]
    assert [r.job.task for r in records if r is not None] == ["A", "B", "A"]


def test_task_submit_many_makes_one_job_per_call(app: App, abc: tuple[Any, Any, Any]) -> None:
    """task.submit_many(calls) makes one job per argument tuple."""
    _, b, _ = abc
    handles = b.submit_many([(1,), (2,), (3,)])
    for _ in handles:
        run_next(app)
    assert [h.result() for h in handles] == [10, 20, 30]


def test_chain_handle_carries_the_chain_id(app: App, abc: tuple[Any, Any, Any]) -> None:
    """A chain's handle has the chain record's id and lists the job id of every step."""
    a, b, c = abc
    handle = (a >> b >> c).submit(1)
    record = app.backend.get_chain(handle.id)
    assert record is not None
    assert handle.job_ids() == [[m.job_id for m in s.members] for s in record.steps]
    assert handle.status() == "pending"  # no worker has touched it yet


def test_chain_render_shows_running_and_pending_steps(app: App, abc: tuple[Any, Any, Any]) -> None:
    """While step 2 is held by a worker the chain renders it as running and step 3 as pending."""
    a, b, c = abc
    handle = chain(a, b, c).submit(1)
    run_next(app)
    app.backend.reserve(app.queues, limit=1, lease=60.0, worker="test")
    assert handle.render() == "A (succeeded) -> B (running) -> C (pending)"


def test_halted_chain_renders_not_executed_steps(app: App, start_worker: Callable[..., Worker]) -> None:
    """A chain whose middle step fails renders as `A (succeeded) -> B (failed) -> C (not executed)`."""

    @app.task(name="A")
    def a() -> int:
        return 1

    @app.task(name="B")
    def b(x: int) -> int:
        raise Fail("no")

    @app.task(name="C")
    def c(x: int) -> int:
        return x

    handle = chain(a, b, c).submit()
    start_worker(app)
    with pytest.raises(ChainHaltedError, match="halted at step 2: Fail: no"):
        handle.wait(timeout=2)
    assert handle.render() == "A (succeeded) -> B (failed) -> C (not executed)"
