"""What ``jobchain run`` submits: the reference workload, or a config's target N times.

The reference workload is seeded sleeps, optionally chained and failing.

Every random choice is drawn up front from ``--seed``, so a run is
reproducible however the threads interleave: each step's sleep (10-60 ms)
and how many of its runs fail. With ``--fail-rate F`` each step fails with
probability F; a failing step fails on its first ``n`` attempts, ``n`` drawn
uniformly from 1 to ``--attempts``. When ``n`` is every attempt the step fails
for good: its chain halts and the job lands in the failed queue; otherwise a
retry recovers it. Steps that do not fail touch nothing but ``time.sleep``.
A step learns its attempt from the job itself (see :class:`_Attempts`), not
from a counter in this process, so the same seed injects the same failures
whichever process (``jobchain run --processes``) runs each attempt.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from attrs import define, evolve, field

from jobchain.app import App, Task
from jobchain.canvas import Chain, Group, Signature, chain
from jobchain.cli.config import Target, describe_target, target_jobs
from jobchain.cli.output import plural
from jobchain.hookspecs import hookimpl
from jobchain.model import Job
from jobchain.retry import Retry

__all__ = ["InjectedFailure", "Workload", "build_reference", "config_workload", "workload_queues"]

MIN_SLEEP = 0.010
MAX_SLEEP = 0.060

#: the reference tasks' queue: apart from an application's own queues on a shared backend
QUEUE = "jobchain-run"


class InjectedFailure(Exception):  # noqa: N818 - shown as the error type in the report
    """A failure injected by ``--fail-rate``."""


@define
class Workload:
    """What to submit and what to expect of it."""

    targets: list[Signature | Chain]
    jobs_total: int
    description: str
    #: seconds of work planned (every run, failed runs included), when known in advance
    planned_busy: float | None = None
    task_names: list[str] = field(factory=list)


class _Attempts:
    """The attempt of the job each worker thread is running, from the ``jobchain_job_started`` event.

    The worker emits the event on the thread that is about to run the job, so a
    thread-local keeps it for the task function to read.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        self._local.attempt = job.attempt

    def current(self) -> int:
        attempt: int = getattr(self._local, "attempt", 1)
        return attempt


def _step_function(attempts: _Attempts) -> Any:
    def step(*previous: float, seconds: float, fails: int = 0, key: str = "") -> float:
        """Sleep ``seconds``; fail on the first ``fails`` attempts; return the chain's total sleep so far."""
        time.sleep(seconds)
        if fails:
            attempt = attempts.current()
            if attempt <= fails:
                raise InjectedFailure(f"injected failure on attempt {attempt} of step {key} (--fail-rate)")
        return round((previous[0] if previous else 0.0) + seconds, 6)

    return step


def sleep_durations(count: int, seed: int) -> list[float]:
    """``count`` seeded sleeps of 10-60 ms, drawn as the benchmark draws them."""
    rng = random.Random(seed)
    return [rng.uniform(MIN_SLEEP, MAX_SLEEP) for _ in range(count)]


def build_reference(
    app: App, *, iterations: int, chain_length: int, fail_rate: float, attempts: int, seed: int
) -> Workload:
    """Declare the reference tasks on ``app`` and plan ``iterations`` jobs or chains."""
    retry = Retry(attempts=attempts, base=0.05, factor=2.0, cap=1.0) if attempts > 1 else Retry.never()
    tracker = _Attempts()
    if fail_rate > 0:
        app.plugins.register(tracker, name="jobchain-run-attempts")
    names = ["sleep"] if chain_length == 1 else [f"step{i + 1}" for i in range(chain_length)]
    tasks: list[Task[Any, Any]] = [
        app.task(name=name, retry=retry, queue=QUEUE)(_step_function(tracker)) for name in names
    ]
    sleeps = sleep_durations(iterations * chain_length, seed)
    fail_rng = random.Random(f"{seed}/fail-rate")
    targets: list[Signature | Chain] = []
    planned = 0.0
    for i in range(iterations):
        steps: list[Signature] = []
        halted = False
        for s, task in enumerate(tasks):
            seconds = sleeps[i * chain_length + s]
            fails = fail_rng.randint(1, attempts) if fail_rate > 0 and fail_rng.random() < fail_rate else 0
            if fails:
                steps.append(task.s(seconds=seconds, fails=fails, key=f"{i + 1}.{s + 1}"))
            else:
                steps.append(task.s(seconds=seconds))
            if not halted:
                planned += seconds * min(fails + 1, attempts)
                halted = fails >= attempts
        targets.append(steps[0] if chain_length == 1 else chain(*steps, name=f"chain-{i + 1}"))
    if chain_length == 1:
        what = f"{plural(iterations, 'sleep job')} (10-60 ms, seed {seed})"
    else:
        per_chain = plural(chain_length, "sleep step")
        what = f"{plural(iterations, 'chain')} of {per_chain} (10-60 ms, seed {seed})"
    if fail_rate > 0:
        what += f", fail rate {fail_rate:g} per step, {attempts} attempts"
    return Workload(
        targets=targets,
        jobs_total=iterations * chain_length,
        description=what,
        planned_busy=planned,
        task_names=names,
    )


def config_workload(
    target: Target, name: str, iterations: int, arguments: tuple[tuple[Any, ...], dict[str, Any]]
) -> Workload:
    """``iterations`` submissions of a config's target, each with ``arguments`` bound."""
    args, kwargs = arguments
    prepared = _with_args(target, args, kwargs)
    return Workload(
        targets=[prepared] * iterations,
        jobs_total=iterations * target_jobs(target),
        description=f"{iterations} x {describe_target(target, name)}",
    )


def _with_args(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Signature | Chain:
    """The target with ``args`` bound the way ``app.submit(target, *args, **kwargs)`` would bind them."""
    if isinstance(target, Task):
        return target.s(*args, **kwargs)
    if isinstance(target, Signature):
        return evolve(target, args=target.args + args, kwargs={**target.kwargs, **kwargs})
    steps = target.steps if isinstance(target, Chain) else (target,)
    kind = target.kind if isinstance(target, Chain) else "group"
    name = target.name if isinstance(target, Chain) else None
    if not args and not kwargs:
        return Chain(steps=steps, name=name, kind=kind)
    first = steps[0]

    def bind(sig: Signature) -> Signature:
        if sig.immutable:
            return sig
        return evolve(sig, args=args + sig.args, kwargs={**sig.kwargs, **kwargs})

    bound = Group(members=tuple(bind(m) for m in first.members)) if isinstance(first, Group) else bind(first)
    return Chain(steps=(bound, *steps[1:]), name=name, kind=kind)


def workload_queues(app: App, targets: Sequence[Signature | Chain]) -> tuple[str, ...]:
    """The queues the workload's jobs go to: the only ones the run's worker serves."""
    seen: dict[str, None] = {}
    for item in {id(t): t for t in targets}.values():
        steps = item.steps if isinstance(item, Chain) else (item,)
        for step in steps:
            for sig in step.members if isinstance(step, Group) else (step,):
                seen[sig.queue or sig.task.queue] = None
    return tuple(seen) or app.queues
