"""What a worker runs on: the narrow runtime it is given instead of the whole App."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from attrs import field, frozen

from jobchain.errortext import DEFAULT_MAX_ERROR_BYTES
from jobchain.limits import Limits
from jobchain.payload import DEFAULT_MAX_PAYLOAD

if TYPE_CHECKING:
    from jobchain.backend import Backend
    from jobchain.clock import Clock
    from jobchain.events import Events
    from jobchain.retry import Retry
    from jobchain.signing import Signer

__all__ = ["RunnableTask", "Runtime", "SupportsRuntime"]


class RunnableTask(Protocol):
    """What the worker needs of a task (an ``@app.task`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def timeout(self) -> float | None:
        """Seconds one run may take, or None for no limit."""

    @property
    def retry(self) -> Retry:
        """The retry policy (the App's default when the task declared none)."""


def _queues(value: Any) -> tuple[str, ...]:
    return tuple(value)


@frozen(kw_only=True)
class Runtime:
    """Everything a :class:`~jobchain.worker.Worker` uses, and nothing else.

    ``tasks`` maps task names to the tasks a job may run (a live mapping: a task
    declared later is found too). ``queues`` are the queues a worker takes jobs
    from when it is given none. ``max_payload`` bounds a task's result (UTF-8
    bytes of its JSON), ``max_error_bytes`` the message and the traceback of a
    recorded error, each; ``signer`` checks the jobs' signatures and signs the
    results (None: signing is off). :meth:`App.runtime <jobchain.App.runtime>`
    builds one from an App.
    """

    tasks: Mapping[str, RunnableTask]
    backend: Backend
    events: Events
    clock: Clock
    queues: tuple[str, ...] = field(converter=_queues)
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_error_bytes: int = DEFAULT_MAX_ERROR_BYTES
    signer: Signer | None = None
    #: queue -> the limits on its jobs (``App.limit_queue``)
    queue_limits: Mapping[str, Limits] = field(factory=dict)


class SupportsRuntime(Protocol):
    """Anything that builds a :class:`Runtime` (an App): ``Worker(app)`` is ``Worker(app.runtime())``."""

    def runtime(self) -> Runtime: ...
