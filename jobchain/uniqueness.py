"""Uniqueness keys: how a task derives one from its arguments, and the rules every backend shares.

A job submitted with a uniqueness key is stored only if no live job holds
that key in its queue; otherwise nothing is stored and the submit returns the
holder's handle (see :class:`jobchain.capabilities.Uniqueness`). A key is held

* **while its job is unfinished** (the default): from the submit until the
  job reaches a final state (succeeded, failed to the failed queue,
  cancelled). The job carries the key (:attr:`jobchain.model.Job.unique`), so
  the settlement that finishes it releases the key in the same atomic step;
  a retry, a release and a lease that runs out (a crash) keep it with the
  same job;
* **or for a time** (``unique_for=`` seconds): from the submit, whatever the
  job does meanwhile; the job does not carry the key.

Pieces:

* :func:`derive_key` - the key of a task declared ``@app.task(unique=...)``
  for one call: ``True`` (every argument), a tuple of argument names, or a
  callable ``(*args, **kwargs) -> str``.
* :func:`check_key` - a key given per submit: a non-empty printable str of at
  most :data:`MAX_KEY_LENGTH` characters.
* :func:`check_batch`, :data:`FINAL_STATES`, :func:`holder_is_live` - what a
  backend's :meth:`~jobchain.capabilities.Uniqueness.enqueue_unique` checks.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from jobchain.errors import ConfigurationError, InvalidJobError
from jobchain.model import Job, JobState

__all__ = [
    "FINAL_STATES",
    "MAX_KEY_LENGTH",
    "UniqueBy",
    "check_batch",
    "check_key",
    "check_unique_by",
    "derive_key",
    "holder_is_live",
    "unique_of",
]

#: the longest uniqueness key accepted, in characters
MAX_KEY_LENGTH = 200

#: a derived key longer than this is replaced by a digest of the arguments
_READABLE = 120

#: what ``@app.task(unique=...)`` accepts: every argument, some by name, or a function of the call
UniqueBy: TypeAlias = bool | tuple[str, ...] | Callable[..., str]

#: the states that end a job, so release its key (cancelled too, where the state exists)
FINAL_STATES: frozenset[JobState] = frozenset(
    state for state in JobState if state.value in ("succeeded", "failed", "cancelled")
)


class UniqueTask(Protocol):
    """What :func:`unique_of` reads of a task (a :class:`jobchain.Task`)."""

    @property
    def name(self) -> str: ...
    @property
    def fn(self) -> Callable[..., Any]: ...
    @property
    def unique(self) -> UniqueBy | None: ...
    @property
    def unique_for(self) -> float | None: ...


class Keyed(Protocol):
    """What :func:`unique_of` reads of a signature (a :class:`jobchain.canvas.Signature`)."""

    @property
    def task(self) -> UniqueTask: ...
    @property
    def unique_key(self) -> str | None: ...
    @property
    def unique_for(self) -> float | None: ...


def check_key(value: object, what: str = "unique key") -> str:
    """``value`` if it can be a uniqueness key; :class:`InvalidJobError` saying why not otherwise."""
    if not isinstance(value, str):
        raise InvalidJobError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidJobError(f"{what} must not be empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidJobError(f"{what} is {len(value)} characters long; at most {MAX_KEY_LENGTH} are allowed")
    if not value.isprintable():
        raise InvalidJobError(f"{what} {value!r} has an unprintable character")
    return value


def check_hold(value: object) -> float | None:
    """``unique_for``: None, or a number of seconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidJobError(f"unique_for must be a number of seconds > 0, got {value!r}")
    return float(value)


def check_unique_by(value: object, fn: Callable[..., Any], task: str) -> UniqueBy | None:
    """What ``@app.task(unique=...)`` was given, checked against the task's parameters."""
    if value is None or value is False:
        return None
    if value is True or callable(value):
        return value
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(n, str) for n in value):
        params = inspect.signature(fn).parameters
        unknown = [n for n in value if n not in params]
        if unknown:
            raise ConfigurationError(
                f"task {task!r}: unique= names {', '.join(unknown)}, which it does not take "
                f"(its parameters: {', '.join(params) or 'none'})"
            )
        return tuple(value)
    raise ConfigurationError(
        f"task {task!r}: unique= must be True, a tuple of argument names or a function "
        f"(*args, **kwargs) -> str, got {value!r}"
    )


def derive_key(
    by: UniqueBy, task: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> str:
    """The key of one call of ``task``: ``TASK:JSON`` of the arguments chosen (a digest when long)."""
    if callable(by):
        return check_key(by(*args, **kwargs), f"the key task {task!r}'s unique= function returned")
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidJobError(f"task {task!r} cannot take these arguments: {exc}") from None
    bound.apply_defaults()
    chosen = dict(bound.arguments) if isinstance(by, bool) else {name: bound.arguments[name] for name in by}
    text = json.dumps(chosen, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = f"{task}:{text}"
    if len(key) > _READABLE or not key.isprintable():
        key = f"{task}:sha256:{hashlib.sha256(text.encode()).hexdigest()[:40]}"
    return key


def unique_of(sig: Keyed, job: Job) -> tuple[str | None, float | None]:
    """The key and hold of a submit of ``sig`` as ``job``: the submit's, else the task's (None: not unique).

    A ``unique_for`` with no key (neither given nor declared by the task) is an error.
    """
    task = sig.task
    hold = check_hold(sig.unique_for if sig.unique_for is not None else task.unique_for)
    if sig.unique_key is not None:
        return check_key(sig.unique_key), hold
    if task.unique is not None:
        return derive_key(task.unique, task.name, task.fn, job.args, job.kwargs), hold
    if sig.unique_for is not None:
        raise InvalidJobError(
            f"unique_for={sig.unique_for!r} needs a unique_key (task {task.name!r} declares none)"
        )
    return None, None


def check_batch(jobs: Sequence[Job], keys: Sequence[str], hold: float | None) -> None:
    """What every ``enqueue_unique`` checks first: one key per job, carried by the job unless ``hold``."""
    if len(jobs) != len(keys):
        raise ValueError(f"enqueue_unique needs one key per job: {len(jobs)} jobs, {len(keys)} keys")
    if hold is not None and hold <= 0:
        raise ValueError(f"hold must be > 0 seconds or None, got {hold!r}")
    for job, key in zip(jobs, keys, strict=True):
        check_key(key)
        expected = key if hold is None else None
        if job.unique != expected:
            raise ValueError(
                f"job {job.id}: unique={job.unique!r}, expected {expected!r} "
                "(a job carries its key when it holds it until it finishes, not when held for a time)"
            )


def holder_is_live(state: JobState | None) -> bool:
    """Whether a job in ``state`` (None: unknown to the backend) still holds a key taken until it finishes."""
    return state is not None and state not in FINAL_STATES
