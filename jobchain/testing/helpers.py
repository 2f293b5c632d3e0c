"""Small builders the conformance suite (and any backend's own tests) use.

They build jobs and outcomes with times taken from an injected clock, and
wrap the batch calls of :class:`jobchain.Backend` for the one-job cases a
test usually needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from jobchain.capabilities import Stats, require
from jobchain.ids import new_id
from jobchain.model import (
    ChainRef,
    Completed,
    Delivery,
    ErrorInfo,
    Failed,
    Job,
    Json,
    QueueStats,
    Released,
    Retried,
)

if TYPE_CHECKING:
    from jobchain.app import App
    from jobchain.backend import Backend
    from jobchain.clock import Clock
    from jobchain.worker import Worker

T = TypeVar("T")

__all__ = [
    "MakeJob",
    "completed",
    "failed",
    "make_job",
    "queue_stats",
    "released",
    "reserve",
    "reserve_one",
    "retried",
    "run_worker",
    "wait_until",
]


class MakeJob(Protocol):
    """The ``make_job`` fixture: :func:`make_job` with the clock already given."""

    def __call__(
        self,
        task: str = "noop",
        *,
        args: Sequence[Json] = (),
        kwargs: Mapping[str, Json] | None = None,
        queue: str = "default",
        priority: int = 0,
        attempt: int = 1,
        enqueued_at: float | None = None,
        not_before: float | None = None,
        expires_at: float | None = None,
        chain: ChainRef | None = None,
        id: str | None = None,
    ) -> Job: ...


def make_job(
    clock: Clock,
    task: str = "noop",
    *,
    args: Sequence[Json] = (),
    kwargs: Mapping[str, Json] | None = None,
    queue: str = "default",
    priority: int = 0,
    attempt: int = 1,
    enqueued_at: float | None = None,
    not_before: float | None = None,
    expires_at: float | None = None,
    chain: ChainRef | None = None,
    id: str | None = None,
) -> Job:
    """A job as a client would submit it now: a fresh id, ``enqueued_at`` from ``clock``."""
    return Job(
        id=id or new_id(),
        task=task,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        queue=queue,
        priority=priority,
        attempt=attempt,
        enqueued_at=clock.now() if enqueued_at is None else enqueued_at,
        not_before=not_before,
        expires_at=expires_at,
        chain=chain,
    )


def reserve(
    backend: Backend,
    queues: Sequence[str] = ("default",),
    *,
    limit: int = 100,
    lease: float = 30.0,
    worker: str = "worker-a",
) -> list[Delivery]:
    """Reserve without blocking."""
    return backend.reserve(queues, limit=limit, lease=lease, worker=worker, wait=0.0)


def reserve_one(
    backend: Backend,
    queues: Sequence[str] = ("default",),
    *,
    lease: float = 30.0,
    worker: str = "worker-a",
) -> Delivery:
    """Reserve exactly one job; fails the test if none is ready."""
    got = reserve(backend, queues, limit=1, lease=lease, worker=worker)
    assert len(got) == 1, f"expected one ready job in {list(queues)}, got {len(got)}"
    return got[0]


def completed(delivery: Delivery, result: Json = None, *, clock: Clock) -> Completed:
    """The delivery's job ran now and returned ``result``."""
    now = clock.now()
    return Completed(delivery=delivery, result=result, started_at=now, finished_at=now)


def _error(delivery: Delivery, error_type: str, message: str, clock: Clock) -> ErrorInfo:
    return ErrorInfo(
        type=error_type,
        message=message,
        traceback=f"Traceback (most recent call last):\n{error_type}: {message}\n",
        attempt=delivery.job.attempt,
        at=clock.now(),
    )


def failed(
    delivery: Delivery, message: str = "boom", *, clock: Clock, error_type: str = "RuntimeError"
) -> Failed:
    """The delivery's job failed for good with ``error_type: message``."""
    return Failed(delivery=delivery, error=_error(delivery, error_type, message, clock))


def retried(
    delivery: Delivery,
    delay: float,
    message: str = "try again",
    *,
    clock: Clock,
    error_type: str = "RuntimeError",
) -> Retried:
    """The delivery's job failed and runs again after ``delay`` seconds."""
    return Retried(delivery=delivery, error=_error(delivery, error_type, message, clock), delay=delay)


def released(delivery: Delivery) -> Released:
    """The worker hands the job back unrun."""
    return Released(delivery=delivery)


def queue_stats(backend: Backend, queue: str = "default") -> QueueStats:
    """The stats of one queue (all zero if the backend has not seen it); the backend needs ``Stats``."""
    for stats in require(backend, Stats).stats():
        if stats.queue == queue:
            return stats
    return QueueStats(queue=queue)


def run_worker(app: App, *, timeout: float = 10.0, **options: Any) -> Worker:
    """Start a worker on ``app``, wait until its queues are empty, stop it and return it."""
    from jobchain.worker import Worker

    options.setdefault("concurrency", 2)
    options.setdefault("poll", 0.02)
    worker = Worker(app, **options)
    worker.start()
    try:
        drained = worker.drain(timeout)
    finally:
        stopped = worker.stop(timeout=5.0)
    assert drained, f"the worker did not empty its queues within {timeout}s"
    assert stopped, "the worker did not stop within 5s"
    return worker


def eventually(check: Callable[[], object], timeout: float = 10.0, *, interval: float = 0.005) -> bool:
    """Poll ``check`` until it answers true or ``timeout`` seconds passed; whether it did."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(
    check: Callable[[], T], timeout: float = 10.0, what: str = "the condition", *, interval: float = 0.05
) -> T:
    """Poll ``check`` until it answers something true and return that; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
