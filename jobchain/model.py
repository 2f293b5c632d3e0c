"""The values jobchain stores and passes around.

Values are frozen attrs classes, validated when built and changed by building
a new one with :func:`attrs.evolve`. ``to_wire``/``from_wire`` spell out the
stored format (plain JSON-compatible dicts) for backends that serialise.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from attrs import Factory, evolve, field, frozen
from attrs import validators as v

from jobchain.errors import InvalidJobError
from jobchain.errortext import DEFAULT_MAX_ERROR_BYTES, cap, describe, format_traceback, type_name

__all__ = [
    "UNREADABLE_TASK",
    "WIRE_VERSION",
    "ChainRecord",
    "ChainRef",
    "ChainState",
    "Completed",
    "Delivery",
    "ErrorInfo",
    "Failed",
    "FailedEntry",
    "Job",
    "JobRecord",
    "JobState",
    "Json",
    "Outcome",
    "QueueStats",
    "Released",
    "Retried",
    "SettleResult",
    "Step",
    "StepMember",
    "StepState",
    "WorkerInfo",
]

#: A JSON-compatible value: None, bool, int, float, str, list or dict with str keys.
Json: TypeAlias = Any

#: The version of a job's stored form (``"v"`` in :meth:`Job.to_wire`); others are refused.
WIRE_VERSION = 1

#: The task name of the placeholder job a backend files in the failed queue for a job it could not read.
UNREADABLE_TASK = "jobchain.unreadable"


class JobState(enum.StrEnum):
    """Where a job is in its life.

    ``BUFFERED`` is never stored: a handle reports it while its job waits in the
    client's submit buffer for an unreachable backend (see :mod:`jobchain.buffer`).
    """

    BUFFERED = "buffered"
    QUEUED = "queued"
    DELAYED = "delayed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


class StepState(enum.StrEnum):
    """The state of one step (or one member of a group step) of a chain."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    NOT_EXECUTED = "not_executed"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class ChainState(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    HALTED = "halted"


def _json_tuple(value: Iterable[Json]) -> tuple[Json, ...]:
    return tuple(value)


def _members(value: Iterable[StepMember]) -> tuple[StepMember, ...]:
    return tuple(value)


def _steps(value: Iterable[Step]) -> tuple[Step, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _int_not_bool(_inst: object, attribute: Any, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(f"{attribute.name} must be an int, got {value!r}")


def _opt_number(_inst: object, attribute: Any, value: float | None) -> None:
    if value is not None and not isinstance(value, int | float):
        raise InvalidJobError(f"{attribute.name} must be a number of seconds, not {value!r}")


def _opt_text(value: Json, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


@frozen(kw_only=True)
class ErrorInfo:
    """Why a job failed: the exception's type name, message and traceback."""

    type: str
    message: str
    traceback: str | None = None
    attempt: int = 1
    at: float = 0.0

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, attempt: int, at: float, max_bytes: int = DEFAULT_MAX_ERROR_BYTES
    ) -> ErrorInfo:
        """The record of ``exc``; never raises, whatever the exception's own methods do.

        The message is ``str(exc)``, else ``repr(exc)``, else ``<unprintable ExcType>``.
        Message and traceback are capped at ``max_bytes`` UTF-8 bytes each, with a
        marker saying how much was cut (see :func:`jobchain.errortext.cap`).
        """
        return cls(
            type=type_name(exc),
            message=cap(describe(exc), max_bytes),
            traceback=cap(format_traceback(exc), max_bytes, keep_tail=True),
            attempt=attempt,
            at=at,
        )

    def to_wire(self) -> dict[str, Json]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": self.attempt,
            "at": self.at,
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json]) -> ErrorInfo:
        return cls(
            type=str(raw["type"]),
            message=str(raw["message"]),
            traceback=raw.get("traceback"),
            attempt=int(raw.get("attempt", 1)),
            at=float(raw.get("at", 0.0)),
        )


@frozen(kw_only=True)
class ChainRef:
    """Where a job sits in a chain: the chain's id, the step and the member of that step."""

    chain_id: str
    step: int = field(validator=v.ge(0))
    member: int = field(default=0, validator=v.ge(0))


@frozen(kw_only=True)
class Job:
    """One unit of work: a task name and JSON arguments, plus scheduling facts."""

    id: str = field(validator=v.min_len(1))
    task: str = field(validator=v.min_len(1))
    args: tuple[Json, ...] = field(default=(), converter=_json_tuple)
    kwargs: Mapping[str, Json] = field(factory=dict, hash=False)
    queue: str = field(default="default", validator=v.min_len(1))
    priority: int = field(default=0, validator=_int_not_bool)
    attempt: int = field(default=1, validator=v.ge(1))
    enqueued_at: float
    not_before: float | None = field(default=None, validator=_opt_number)
    expires_at: float | None = field(default=None, validator=_opt_number)
    chain: ChainRef | None = None
    #: the job's signature (:mod:`jobchain.signing`); None when it was submitted without signing keys
    sig: str | None = None
    #: a chain step's signatures of the previous step's results (``"t:SIG"`` or ``"g:SIG,SIG"``)
    psig: str | None = None

    def retried(self, not_before: float) -> Job:
        """The next attempt of this job; ``enqueued_at`` is kept, so aging still counts."""
        return evolve(self, attempt=self.attempt + 1, not_before=not_before)

    def to_wire(self) -> dict[str, Json]:
        raw: dict[str, Json] = {
            "v": WIRE_VERSION,
            "id": self.id,
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "queue": self.queue,
            "priority": self.priority,
            "attempt": self.attempt,
            "enqueued_at": self.enqueued_at,
        }
        if self.not_before is not None:
            raw["not_before"] = self.not_before
        if self.expires_at is not None:
            raw["expires_at"] = self.expires_at
        if self.chain is not None:
            raw["chain"] = [self.chain.chain_id, self.chain.step, self.chain.member]
        if self.sig is not None:
            raw["sig"] = self.sig
        if self.psig is not None:
            raw["psig"] = self.psig
        return raw

    @classmethod
    def from_wire(cls, raw: Json) -> Job:
        """Build a job from its stored form; :class:`InvalidJobError` says what is malformed."""
        if not isinstance(raw, Mapping):
            raise InvalidJobError(f"malformed job payload: expected an object, got {type(raw).__name__}")
        version = raw.get("v", 1)
        if type(version) is not int or version != WIRE_VERSION:
            raise InvalidJobError(
                f"job payload version {version!r} is not known to this jobchain "
                f"(it reads version {WIRE_VERSION})"
            )
        try:
            chain = raw.get("chain")
            ref = ChainRef(chain_id=chain[0], step=chain[1], member=chain[2]) if chain else None
            args = raw.get("args", [])
            kwargs = raw.get("kwargs", {})
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("args must be a list and kwargs an object")
            return cls(
                id=raw["id"],
                task=raw["task"],
                args=args,
                kwargs=kwargs,
                queue=raw.get("queue", "default"),
                priority=raw.get("priority", 0),
                attempt=raw.get("attempt", 1),
                enqueued_at=float(raw["enqueued_at"]),
                not_before=raw.get("not_before"),
                expires_at=raw.get("expires_at"),
                chain=ref,
                sig=_opt_text(raw.get("sig"), "sig"),
                psig=_opt_text(raw.get("psig"), "psig"),
            )
        except InvalidJobError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InvalidJobError(f"malformed job payload: {type(exc).__name__}: {exc}") from exc


@frozen(kw_only=True)
class Delivery:
    """A job handed to a worker under a lease; ``token`` proves which delivery it is.

    ``delivery_count`` counts the deliveries of this attempt, this one
    included. ``crashes`` counts the leases of this attempt lost while the job
    was marked running (:meth:`jobchain.backend.Backend.mark_running`): the
    deaths it may have caused. A backend that does not track it leaves the
    default, ``delivery_count - 1`` (every lost lease counts).
    """

    job: Job
    token: str
    lease_until: float
    worker: str
    delivery_count: int = 1
    crashes: int = field(default=Factory(lambda self: self.delivery_count - 1, takes_self=True))

    @property
    def suspect(self) -> bool:
        """Delivered before in this attempt: its last worker may have died running it."""
        return self.delivery_count > 1


@frozen(kw_only=True)
class JobRecord:
    """What a backend knows about one job: its state, result or error, and timings."""

    job: Job
    state: JobState
    result: Json = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None


@frozen(kw_only=True)
class StepMember:
    """One job of a chain step: what to run and what happened to it."""

    job_id: str
    task: str
    args: tuple[Json, ...] = field(default=(), converter=_json_tuple)
    kwargs: Mapping[str, Json] = field(factory=dict, hash=False)
    queue: str = "default"
    priority: int = 0
    immutable: bool = False
    expires: float | None = None
    #: the signature of the member's static part (:func:`jobchain.signing.sign_member`), or None
    sig: str | None = None
    #: the signature of its result, made by the worker that returned it, or None
    result_sig: str | None = None
    state: StepState = StepState.PENDING
    result: Json = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None


@frozen(kw_only=True)
class Step:
    """A step of a chain: one task, or a group of tasks run in parallel."""

    kind: str = field(validator=v.in_(("task", "group")))
    members: tuple[StepMember, ...] = field(converter=_members, validator=v.min_len(1))

    @property
    def state(self) -> StepState:
        states = {m.state for m in self.members}
        if StepState.FAILED in states:
            return StepState.FAILED
        if states == {StepState.COMPLETED}:
            return StepState.COMPLETED
        if states == {StepState.NOT_EXECUTED}:
            return StepState.NOT_EXECUTED
        if StepState.RUNNING in states or StepState.COMPLETED in states:
            return StepState.RUNNING
        return StepState.PENDING

    @property
    def label(self) -> str:
        names = ", ".join(m.task for m in self.members)
        return names if self.kind == "task" else f"group({names})"

    @property
    def result(self) -> Json:
        if self.kind == "task":
            return self.members[0].result
        return [m.result for m in self.members]


@frozen(kw_only=True)
class ChainRecord:
    """A chain (or a group submitted on its own) and the state of every step."""

    id: str
    name: str | None = None
    kind: str = field(default="chain", validator=v.in_(("chain", "group")))
    state: ChainState = ChainState.RUNNING
    steps: tuple[Step, ...] = field(converter=_steps, validator=v.min_len(1))
    created_at: float
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state is not ChainState.RUNNING

    @property
    def result(self) -> Json:
        """The last step's result (a list for a group step); None until completed."""
        if self.state is not ChainState.COMPLETED:
            return None
        return self.steps[-1].result

    def failed_step(self) -> tuple[int, StepMember] | None:
        for index, step in enumerate(self.steps):
            for member in step.members:
                if member.state is StepState.FAILED:
                    return index, member
        return None

    def render(self) -> str:
        """``A (completed) -> B (failed) -> C (not executed)``."""
        return " -> ".join(f"{s.label} ({s.state.label})" for s in self.steps)


@frozen(kw_only=True)
class FailedEntry:
    """A job in the failed queue, with the error that put it there.

    ``raw`` is set for a job the backend could not read (garbage bytes, a
    payload of an unknown version, a record missing fields): it holds the
    stored text as found, and ``job`` is a placeholder with the task name
    :data:`UNREADABLE_TASK`. Such an entry cannot be re-driven. Bytes that
    are not UTF-8 are kept as ``base64:`` and their base64; a backend may cap
    what it keeps (the Redis backends: 64 KiB, then a ``[cut: …]`` line).
    """

    job: Job
    error: ErrorInfo
    failed_at: float
    raw: str | None = None


@frozen(kw_only=True)
class WorkerInfo:
    """A live worker as it registers itself with the backend."""

    name: str
    host: str
    pid: int
    queues: tuple[str, ...] = field(converter=_strings)
    labels: Mapping[str, str] = field(factory=dict, hash=False)
    concurrency: int = 1
    started_at: float
    heartbeat_at: float
    state: str = "running"
    #: random per Worker object: tells a live re-heartbeat of this worker from another one of the same name
    instance: str = ""

    def to_wire(self) -> dict[str, Json]:
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "labels": dict(self.labels),
            "concurrency": self.concurrency,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
            "state": self.state,
            "instance": self.instance,
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json]) -> WorkerInfo:
        return cls(**raw)


@frozen(kw_only=True)
class QueueStats:
    """How many jobs of one queue are in each place."""

    queue: str
    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    failed: int = 0


# --- outcomes a worker reports back with Backend.settle() ------------------------


@frozen(kw_only=True)
class Completed:
    """The job ran and returned ``result``: ack, store it, enqueue the next chain step."""

    delivery: Delivery
    result: Json = None
    started_at: float
    finished_at: float
    #: for a chain step with signing on, the worker's signature of ``result`` (:mod:`jobchain.signing`)
    result_sig: str | None = None


@frozen(kw_only=True)
class Retried:
    """The job failed and will run again after ``delay`` seconds (a new attempt)."""

    delivery: Delivery
    error: ErrorInfo
    delay: float = field(validator=v.ge(0))


@frozen(kw_only=True)
class Failed:
    """The job failed for good: ack, append to the failed queue, halt its chain."""

    delivery: Delivery
    error: ErrorInfo


@frozen(kw_only=True)
class Released:
    """The worker gives the job back unrun (it is stopping); the attempt is not used up."""

    delivery: Delivery


Outcome: TypeAlias = Completed | Retried | Failed | Released


@frozen(kw_only=True)
class SettleResult:
    """What :meth:`Backend.settle` did with one outcome.

    ``accepted`` is False when the delivery's lease had expired and another
    delivery now holds the job (a stale worker): nothing was changed.
    ``chain`` is the chain record when this outcome completed or halted its chain.
    """

    accepted: bool
    chain: ChainRecord | None = None
