"""The typed facade the core emits events through.

Every event hook of :mod:`jobchain.hookspecs` has one method here, with the
hook's parameters as typed keywords: ``events.job_failed(job=..., error=...,
duration=..., worker=..., thread=...)`` calls every ``jobchain_job_failed``
implementation. The core never names a hook by a string; a hookspec without a
method here (or with other parameters) fails ``tests/test_events.py``.

Calls go through :meth:`Plugins.emit <jobchain.plugins.Plugins.emit>`, so the
error isolation is the same: an implementation that raises is logged with its
plugin's name and the others still run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from jobchain.model import ChainRecord, ErrorInfo, Job
    from jobchain.plugins import Plugins

__all__ = ["EventName", "Events"]

#: the name of an event: its hook's name without the ``jobchain_`` prefix
EventName = Literal[
    "worker_started",
    "worker_stopped",
    "job_started",
    "job_succeeded",
    "job_retrying",
    "job_failed",
    "job_cancelled",
    "chain_completed",
    "chain_halted",
    "progress",
]


class Events:
    """One typed method per event hook, over a plugin manager."""

    __slots__ = ("_emit", "plugins")

    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins
        self._emit = plugins.emit

    def has_listeners(self, event: EventName) -> bool:
        """True if some plugin implements the event (to skip building its arguments otherwise)."""
        return self.plugins.has_listeners("jobchain_" + event)

    def worker_started(self, *, worker: str, queues: tuple[str, ...], concurrency: int) -> None:
        self._emit("jobchain_worker_started", worker=worker, queues=queues, concurrency=concurrency)

    def worker_stopped(self, *, worker: str, processed: int) -> None:
        self._emit("jobchain_worker_stopped", worker=worker, processed=processed)

    def job_started(self, *, job: Job, worker: str, thread: str) -> None:
        self._emit("jobchain_job_started", job=job, worker=worker, thread=thread)

    def job_succeeded(self, *, job: Job, result: Any, duration: float, worker: str, thread: str) -> None:
        self._emit(
            "jobchain_job_succeeded", job=job, result=result, duration=duration, worker=worker, thread=thread
        )

    def job_retrying(
        self, *, job: Job, error: ErrorInfo, delay: float, duration: float, worker: str, thread: str
    ) -> None:
        self._emit(
            "jobchain_job_retrying",
            job=job,
            error=error,
            delay=delay,
            duration=duration,
            worker=worker,
            thread=thread,
        )

    def job_failed(self, *, job: Job, error: ErrorInfo, duration: float, worker: str, thread: str) -> None:
        self._emit(
            "jobchain_job_failed", job=job, error=error, duration=duration, worker=worker, thread=thread
        )

    def job_cancelled(self, *, job: Job, duration: float, worker: str, thread: str) -> None:
        self._emit("jobchain_job_cancelled", job=job, duration=duration, worker=worker, thread=thread)

    def chain_completed(self, *, chain: ChainRecord, worker: str) -> None:
        self._emit("jobchain_chain_completed", chain=chain, worker=worker)

    def chain_halted(self, *, chain: ChainRecord, worker: str) -> None:
        self._emit("jobchain_chain_halted", chain=chain, worker=worker)

    def progress(
        self, *, worker: str, total: int | None, done: int, failed: int, left: int | None, rate: float
    ) -> None:
        self._emit(
            "jobchain_progress", worker=worker, total=total, done=done, failed=failed, left=left, rate=rate
        )
