"""The job a task is running for: :func:`current_job`, and its cancel request.

The worker sets it around each task call (in a :class:`contextvars.ContextVar`,
so each pool thread sees its own job), and so does the test mode
(``App(eager=True)``). A task that can stop early checks it at its own
checkpoints::

    @app.task
    def crunch(rows: list[int]) -> int:
        total = 0
        for row in rows:
            jobchain.current_job().raise_if_cancelled()   # stops here once cancelled
            total += row
        return total

A running job learns of a cancel request (:meth:`jobchain.App.cancel`) within
about a second: the worker's monitor asks the backend, in one call for every
job it holds, while it runs jobs. A task that then raises
:class:`~jobchain.errors.Cancelled` (or returns) is recorded ``cancelled``,
never retried and never in the failed queue.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from contextvars import ContextVar, Token

from jobchain.errors import Cancelled
from jobchain.model import Job

__all__ = ["CurrentJob", "current_job"]


class CurrentJob:
    """The job the calling task runs for: ``id``, ``attempt``, ``job``, and whether to stop."""

    __slots__ = ("_asked", "job")

    def __init__(self, job: Job, asked: Container[str] = frozenset()) -> None:
        self.job = job
        #: the ids of the jobs its worker was asked to stop (shared, updated by the worker's monitor)
        self._asked = asked

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def cancel_requested(self) -> bool:
        """True once the job was cancelled while it ran: stop at the next checkpoint."""
        return self.job.id in self._asked

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~jobchain.errors.Cancelled` if the job was cancelled; return otherwise."""
        if self.job.id in self._asked:
            raise Cancelled(f"job {self.job.id} was cancelled")

    def __repr__(self) -> str:
        asked = self.cancel_requested
        return f"<CurrentJob {self.job.id} attempt={self.job.attempt} cancel_requested={asked}>"


_current: ContextVar[CurrentJob | None] = ContextVar("jobchain_current_job", default=None)


def current_job() -> CurrentJob:
    """The job the calling task runs for; RuntimeError outside a task run by jobchain."""
    job = _current.get()
    if job is None:
        raise RuntimeError("jobchain.current_job() is only available inside a task run by a jobchain worker")
    return job


def run_as(job: CurrentJob, fn: Callable[[], object]) -> object:
    """Call ``fn()`` with ``job`` as the current job (the worker and the test mode use it)."""
    token: Token[CurrentJob | None] = _current.set(job)
    try:
        return fn()
    finally:
        _current.reset(token)
