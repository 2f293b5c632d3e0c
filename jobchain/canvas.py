"""Signatures, chains and groups: the DSL for composing tasks.

``task.s(*args, **kwargs)`` binds arguments to a task (a *signature*);
``task.si(...)`` does the same but ignores the previous step's result
(immutable). ``chain(a, b, c)`` or ``a >> b >> c`` runs steps one after the
other, each step's result becoming the next one's first argument;
``group(a, b, c)`` runs its members in parallel and, inside a chain, feeds the
list of their results (in order) to the next step.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Union, cast

from attrs import evolve, field, frozen

from jobchain._values import json_tuple as _json_tuple
from jobchain.errors import InvalidJobError

if TYPE_CHECKING:
    from jobchain.app import Task
    from jobchain.handles import ChainHandle, JobHandle

__all__ = ["Chain", "Group", "Signature", "chain", "group"]

Stepish = Union["Task[..., Any]", "Signature", "Group", "Chain"]


class TaskBase:
    """The base class of :class:`jobchain.Task`: what the DSL recognises as a task.

    It lives here so that the DSL tells a task from anything else without
    importing the App (whose module imports this one).
    """

    __slots__ = ()


def _as_signature(item: Any, where: str) -> Signature:
    if isinstance(item, Signature):
        return item
    if isinstance(item, TaskBase):
        return Signature(task=cast("Task[..., Any]", item))
    raise InvalidJobError(
        f"{where} is {item!r} ({type(item).__name__}); expected a task declared with @app.task, "
        "a signature (task.s(...)) or a group"
    )


def _as_steps(items: tuple[Any, ...], what: str) -> tuple[Signature | Group, ...]:
    steps: list[Signature | Group] = []
    for index, item in enumerate(items, start=1):
        if isinstance(item, Chain):
            steps.extend(item.steps)
        elif isinstance(item, Group):
            steps.append(item)
        else:
            steps.append(_as_signature(item, f"{what} step {index}"))
    return tuple(steps)


@frozen(kw_only=True)
class Signature:
    """A task with bound arguments and options, ready to submit or to place in a chain."""

    task: Task[..., Any]
    args: tuple[Any, ...] = field(default=(), converter=_json_tuple)
    kwargs: Mapping[str, Any] = field(factory=dict, hash=False)
    immutable: bool = False
    queue: str | None = None
    priority: int | None = None
    delay: float | None = None
    #: the job's id, instead of a fresh one (see :func:`jobchain.submission.check_id`)
    job_id: str | None = None
    #: the job's uniqueness key, instead of the one its task derives (see :mod:`jobchain.uniqueness`)
    unique_key: str | None = None
    #: seconds the key is held from the submit, instead of until the job finishes
    unique_for: float | None = None

    @property
    def name(self) -> str:
        return self.task.name

    def set(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
    ) -> Signature:
        """The same signature with other options (queue, priority, delay in seconds, the job's id, its key).

        A job submitted under an id that exists already is not stored again:
        the handle returned is the existing job's. A job submitted with a
        ``unique_key`` held by a job of its queue is not stored either: the
        handle is the holder's (``unique_for``: hold the key that many seconds).
        """
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise InvalidJobError(f"priority must be an int, got {priority!r}")
        if delay is not None and (not isinstance(delay, int | float) or delay < 0):
            raise InvalidJobError(f"delay must be a number of seconds >= 0, got {delay!r}")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise InvalidJobError(f"queue must be a non-empty string, got {queue!r}")
        return evolve(
            self,
            queue=queue if queue is not None else self.queue,
            priority=priority if priority is not None else self.priority,
            delay=delay if delay is not None else self.delay,
            job_id=job_id if job_id is not None else self.job_id,
            unique_key=unique_key if unique_key is not None else self.unique_key,
            unique_for=unique_for if unique_for is not None else self.unique_for,
        )

    def submit(
        self,
        *args: Any,
        job_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> JobHandle:
        """Enqueue this task; extra arguments come after the bound ones. ``job_id``: see :meth:`set`.

        ``countdown`` (seconds) or ``eta`` (an aware datetime or epoch seconds)
        delays the job, instead of the signature's ``delay``.
        """
        target = self if job_id is None else evolve(self, job_id=job_id)
        app = self.task.app
        if countdown is None and eta is None:
            handle: JobHandle = app.submit(target, *args, **kwargs)
        else:
            handle = app.submit_later(target, args, kwargs, countdown=countdown, eta=eta)
        return handle

    async def submit_async(
        self,
        *args: Any,
        job_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> JobHandle:
        """:meth:`submit` for a coroutine (see :mod:`jobchain.aio`)."""
        target = self if job_id is None else evolve(self, job_id=job_id)
        handle: JobHandle = await self.task.app.submit_later_async(
            target, args, kwargs, countdown=countdown, eta=eta
        )
        return handle

    def __rshift__(self, other: Stepish) -> Chain:
        return chain(self, other)

    def __rrshift__(self, other: Stepish) -> Chain:
        return chain(other, self)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task.name}.{'si' if self.immutable else 's'}({', '.join(parts)})"


@frozen(kw_only=True)
class Group:
    """Tasks that run in parallel; in a chain, the next step gets their results as a list."""

    members: tuple[Signature, ...]

    @property
    def app(self) -> Any:
        return self.members[0].task.app

    def submit(
        self,
        *args: Any,
        chain_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> ChainHandle:
        """Run every member; each gets ``args``/``kwargs`` before its own bound arguments.

        ``chain_id``, ``countdown``, ``eta``: see :meth:`Chain.submit`.
        """
        return Chain(steps=(self,), kind="group").submit(
            *args, chain_id=chain_id, countdown=countdown, eta=eta, **kwargs
        )

    async def submit_async(
        self,
        *args: Any,
        chain_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> ChainHandle:
        """:meth:`submit` for a coroutine (see :mod:`jobchain.aio`)."""
        return await Chain(steps=(self,), kind="group").submit_async(
            *args, chain_id=chain_id, countdown=countdown, eta=eta, **kwargs
        )

    def __rshift__(self, other: Stepish) -> Chain:
        return chain(self, other)

    def __rrshift__(self, other: Stepish) -> Chain:
        return chain(other, self)

    def __len__(self) -> int:
        return len(self.members)


@frozen(kw_only=True)
class Chain:
    """Steps that run one after the other, halting at the first permanent failure."""

    steps: tuple[Signature | Group, ...]
    name: str | None = None
    kind: str = "chain"

    @property
    def app(self) -> Any:
        first = self.steps[0]
        return first.app if isinstance(first, Group) else first.task.app

    def submit(
        self,
        *args: Any,
        chain_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> ChainHandle:
        """Enqueue the first step with these arguments; returns a handle carrying the chain id.

        ``chain_id`` is the chain's id instead of a fresh one; its members' job
        ids are derived from it (``CHAIN.STEP.MEMBER``). A chain submitted under
        an id that exists already is not stored again: the handle returned is
        the existing chain's. ``countdown`` (seconds) or ``eta`` (an aware
        datetime or epoch seconds) delays the first step.
        """
        app = self.app
        if countdown is not None or eta is not None:
            later: ChainHandle = app.submit_later(
                self, args, kwargs, countdown=countdown, eta=eta, submit_id=chain_id
            )
            return later
        handle: ChainHandle = (
            app.submit(self, *args, **kwargs)
            if chain_id is None
            else app.submit_as(chain_id, self, *args, **kwargs)
        )
        return handle

    async def submit_async(
        self,
        *args: Any,
        chain_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> ChainHandle:
        """:meth:`submit` for a coroutine (see :mod:`jobchain.aio`): the loop never waits on the backend."""
        handle: ChainHandle = await self.app.submit_later_async(
            self, args, kwargs, countdown=countdown, eta=eta, submit_id=chain_id
        )
        return handle

    def __rshift__(self, other: Stepish) -> Chain:
        return chain(self, other, name=self.name)

    def __rrshift__(self, other: Stepish) -> Chain:
        return chain(other, self, name=self.name)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        parts = []
        for step in self.steps:
            if isinstance(step, Group):
                parts.append("group(" + ", ".join(m.task.name for m in step.members) + ")")
            else:
                parts.append(step.task.name)
        label = f"{self.name}: " if self.name else ""
        return f"<Chain {label}{' >> '.join(parts)}>"


def chain(*steps: Stepish, name: str | None = None) -> Chain:
    """Run ``steps`` in order: ``chain(download, parse, store, name="ingest")``."""
    if not steps:
        raise InvalidJobError("chain() needs at least one step")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidJobError(f"chain name must be a non-empty string, got {name!r}")
    built = _as_steps(steps, "chain()")
    apps = {id(s.app if isinstance(s, Group) else s.task.app) for s in built}
    if len(apps) > 1:
        raise InvalidJobError("chain() mixes tasks of different App instances")
    return Chain(steps=built, name=name)


def group(*members: Task[..., Any] | Signature) -> Group:
    """Run ``members`` in parallel: ``group(resize.s(1), resize.s(2))``."""
    if not members:
        raise InvalidJobError("group() needs at least one member")
    sigs = []
    for index, item in enumerate(members, start=1):
        if isinstance(item, Chain | Group):
            raise InvalidJobError(f"group() member {index} is a {type(item).__name__}; nest tasks only")
        sigs.append(_as_signature(item, f"group() member {index}"))
    return Group(members=tuple(sigs))
