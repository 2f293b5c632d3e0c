"""The values jobchain stores and passes around.

Values are frozen attrs classes, validated when built and changed by building
a new one with :func:`attrs.evolve`. Every value that crosses a process
boundary has one ``to_wire``/``from_wire`` pair here (chain records in
:mod:`jobchain._chains`, errors in :mod:`jobchain._values`, both re-exported):
its JSON form, plain JSON-compatible dicts, the same for what a backend stores
and what the HTTP gateway sends. ``from_wire`` trusts what it reads to have
the right types (a store it wrote, or a message checked against a schema) and
fills in the fields a writer left out; it raises ValueError, TypeError or
KeyError (a job: :class:`InvalidJobError`) for what it cannot read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from attrs import Factory, evolve, field, frozen
from attrs import validators as v

from jobchain._chains import CHAIN_WIRE_VERSION, ChainRecord, Step, StepMember
from jobchain._values import (
    MAX_KEPT_ERRORS,
    ChainState,
    ErrorInfo,
    JobState,
    Json,
    StepState,
    error_tuple,
    errors_from_wire,
    json_tuple,
    kept_errors,
    opt_text,
    wire_object,
)
from jobchain.errors import InvalidJobError

__all__ = [
    "CHAIN_WIRE_VERSION",
    "MAX_KEPT_ERRORS",
    "UNREADABLE_TASK",
    "WIRE_VERSION",
    "Aborted",
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
    "errors_from_wire",
    "kept_errors",
    "outcome_from_wire",
]

#: The version of a job's stored form (``"v"`` in :meth:`Job.to_wire`); others are refused.
WIRE_VERSION = 1

#: The task name of the placeholder job a backend files in the failed queue for a job it could not read.
UNREADABLE_TASK = "jobchain.unreadable"


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _int_not_bool(_inst: object, attribute: Any, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(f"{attribute.name} must be an int, got {value!r}")


def _opt_number(_inst: object, attribute: Any, value: float | None) -> None:
    if value is not None and not isinstance(value, int | float):
        raise InvalidJobError(f"{attribute.name} must be a number of seconds, not {value!r}")


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
    args: tuple[Json, ...] = field(default=(), converter=json_tuple)
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
    #: the uniqueness key this job holds until it finishes (:class:`jobchain.capabilities.Uniqueness`)
    unique: str | None = None

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
        if self.unique is not None:
            raw["unique"] = self.unique
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
                sig=opt_text(raw.get("sig"), "sig"),
                psig=opt_text(raw.get("psig"), "psig"),
                unique=opt_text(raw.get("unique"), "unique"),
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

    def to_wire(self) -> dict[str, Json]:
        return {
            "job": self.job.to_wire(),
            "token": self.token,
            "lease_until": self.lease_until,
            "worker": self.worker,
            "delivery_count": self.delivery_count,
            "crashes": self.crashes,
        }

    @classmethod
    def from_wire(cls, raw: Json) -> Delivery:
        data = wire_object(raw, "delivery")
        return cls.from_ref(data, Job.from_wire(data["job"]))

    def ref_to_wire(self) -> dict[str, Json]:
        """What names this delivery to whoever handed it out: the job's id and the token, with the lease."""
        return {
            "job_id": self.job.id,
            "token": self.token,
            "worker": self.worker,
            "lease_until": self.lease_until,
            "delivery_count": self.delivery_count,
            "crashes": self.crashes,
        }

    @classmethod
    def from_ref(cls, raw: Mapping[str, Json], job: Job) -> Delivery:
        """The delivery of ``job`` that ``raw`` (a :meth:`ref_to_wire` or :meth:`to_wire` form) names."""
        crashes = raw.get("crashes")
        return cls(
            job=job,
            token=raw["token"],
            lease_until=float(raw.get("lease_until", 0.0)),
            worker=str(raw.get("worker", "")),
            delivery_count=raw.get("delivery_count", 1),
            **({} if crashes is None else {"crashes": crashes}),
        )


@frozen(kw_only=True)
class JobRecord:
    """What a backend knows about one job: its state, result or error, its attempts' errors, and timings.

    ``error`` is the error of a job that is failed or waiting to be retried
    (None once it succeeds or is re-driven). ``errors`` is the history: the
    error of every attempt that failed, oldest first, each retried one with
    the backoff chosen (:attr:`ErrorInfo.retry_in`), the last
    :data:`MAX_KEPT_ERRORS` of them. It outlives success and re-drive (the
    attempts after a re-drive are appended). A lease that ran out (a worker
    that died) is not an attempt's error: it shows in the delivery's crash
    count, not here. A record written before histories were kept reads with
    its ``error`` alone.
    """

    job: Job
    state: JobState
    result: Json = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: the worker holding a running job (set by the backends that know it), else None
    worker: str | None = None
    errors: tuple[ErrorInfo, ...] = field(default=(), converter=error_tuple)

    def to_wire(self) -> dict[str, Json]:
        """``worker`` is written only when set."""
        wire: dict[str, Json] = {
            "job": self.job.to_wire(),
            "state": self.state.value,
            "result": self.result,
            "error": None if self.error is None else self.error.to_wire(),
            "errors": [e.to_wire() for e in self.errors],
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.worker is not None:
            wire["worker"] = self.worker
        return wire

    @classmethod
    def from_wire(cls, raw: Json) -> JobRecord:
        data = wire_object(raw, "job record")
        error = ErrorInfo.maybe(data.get("error"))
        return cls(
            job=Job.from_wire(data["job"]),
            state=JobState(data["state"]),
            result=data.get("result"),
            error=error,
            errors=errors_from_wire(data.get("errors"), error),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            worker=opt_text(data.get("worker"), "worker"),
        )


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

    def to_wire(self) -> dict[str, Json]:
        """``raw`` is written only when set (an unreadable job's stored text)."""
        wire: dict[str, Json] = {
            "job": self.job.to_wire(),
            "error": self.error.to_wire(),
            "failed_at": self.failed_at,
        }
        if self.raw is not None:
            wire["raw"] = self.raw
        return wire

    @classmethod
    def from_wire(cls, raw: Json) -> FailedEntry:
        data = wire_object(raw, "failed entry")
        return cls(
            job=Job.from_wire(data["job"]),
            error=ErrorInfo.from_wire(data["error"]),
            failed_at=float(data["failed_at"]),
            raw=opt_text(data.get("raw"), "raw"),
        )


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
    #: jobs this worker holds because a rate or concurrency limit does not admit them yet
    held: int = 0

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
            "held": self.held,
        }

    @classmethod
    def from_wire(cls, raw: Json) -> WorkerInfo:
        data = wire_object(raw, "worker")
        return cls(
            name=data["name"],
            host=data.get("host", ""),
            pid=data.get("pid", 0),
            queues=data.get("queues", ()),
            labels=data.get("labels", {}),
            concurrency=data.get("concurrency", 1),
            started_at=data["started_at"],
            heartbeat_at=data["heartbeat_at"],
            state=data.get("state", "running"),
            instance=data.get("instance", ""),
            held=data.get("held", 0),
        )


@frozen(kw_only=True)
class QueueStats:
    """How many jobs of one queue are in each place."""

    queue: str
    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    failed: int = 0

    def to_wire(self) -> dict[str, Json]:
        return {
            "queue": self.queue,
            "ready": self.ready,
            "delayed": self.delayed,
            "in_flight": self.in_flight,
            "failed": self.failed,
        }

    @classmethod
    def from_wire(cls, raw: Json) -> QueueStats:
        data = wire_object(raw, "queue stats")
        return cls(
            queue=data["queue"],
            ready=data.get("ready", 0),
            delayed=data.get("delayed", 0),
            in_flight=data.get("in_flight", 0),
            failed=data.get("failed", 0),
        )


# --- outcomes a worker reports back with Backend.settle() ------------------------
#
# On the wire an outcome is its delivery's reference (Delivery.ref_to_wire), the
# kind ("outcome": completed, retried, failed or released) and the kind's fields;
# it is read back against the delivery it names (outcome_from_wire).


@frozen(kw_only=True)
class Completed:
    """The job ran and returned ``result``: ack, store it, enqueue the next chain step."""

    delivery: Delivery
    result: Json = None
    started_at: float
    finished_at: float
    #: for a chain step with signing on, the worker's signature of ``result`` (:mod:`jobchain.signing`)
    result_sig: str | None = None

    def to_wire(self) -> dict[str, Json]:
        wire = self.delivery.ref_to_wire()
        wire.update(
            outcome="completed", result=self.result, started_at=self.started_at, finished_at=self.finished_at
        )
        if self.result_sig is not None:
            wire["result_sig"] = self.result_sig
        return wire

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json], delivery: Delivery) -> Completed:
        return cls(
            delivery=delivery,
            result=raw.get("result"),
            started_at=float(raw["started_at"]),
            finished_at=float(raw["finished_at"]),
            result_sig=opt_text(raw.get("result_sig"), "result_sig"),
        )


@frozen(kw_only=True)
class Retried:
    """The job failed and will run again after ``delay`` seconds (a new attempt)."""

    delivery: Delivery
    error: ErrorInfo
    delay: float = field(validator=v.ge(0))

    @property
    def recorded_error(self) -> ErrorInfo:
        """The error as a backend records it: with the backoff (``retry_in``) set to ``delay``."""
        return evolve(self.error, retry_in=self.delay)

    def to_wire(self) -> dict[str, Json]:
        wire = self.delivery.ref_to_wire()
        wire.update(outcome="retried", error=self.error.to_wire(), delay=self.delay)
        return wire

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json], delivery: Delivery) -> Retried:
        return cls(delivery=delivery, error=ErrorInfo.from_wire(raw["error"]), delay=float(raw["delay"]))


@frozen(kw_only=True)
class Failed:
    """The job failed for good: ack, append to the failed queue, halt its chain."""

    delivery: Delivery
    error: ErrorInfo

    @property
    def recorded_error(self) -> ErrorInfo:
        """The error as a backend records it: the last attempt, no backoff (``retry_in`` None)."""
        return self.error if self.error.retry_in is None else evolve(self.error, retry_in=None)

    def to_wire(self) -> dict[str, Json]:
        wire = self.delivery.ref_to_wire()
        wire.update(outcome="failed", error=self.error.to_wire())
        return wire

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json], delivery: Delivery) -> Failed:
        return cls(delivery=delivery, error=ErrorInfo.from_wire(raw["error"]))


@frozen(kw_only=True)
class Released:
    """The worker gives the job back unrun (it is stopping); the attempt is not used up."""

    delivery: Delivery

    def to_wire(self) -> dict[str, Json]:
        wire = self.delivery.ref_to_wire()
        wire["outcome"] = "released"
        return wire

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json], delivery: Delivery) -> Released:
        return cls(delivery=delivery)


@frozen(kw_only=True)
class Aborted:
    """The job stopped at a cancel request: ack, record it cancelled, end its chain (never retried).

    A worker reports it only to a backend that declares
    :class:`~jobchain.capabilities.Cancel`, for a job the backend asked to stop.
    """

    delivery: Delivery
    started_at: float
    finished_at: float

    def to_wire(self) -> dict[str, Json]:
        wire = self.delivery.ref_to_wire()
        wire.update(outcome="aborted", started_at=self.started_at, finished_at=self.finished_at)
        return wire

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json], delivery: Delivery) -> Aborted:
        return cls(
            delivery=delivery, started_at=float(raw["started_at"]), finished_at=float(raw["finished_at"])
        )


Outcome: TypeAlias = Completed | Retried | Failed | Released | Aborted

_OUTCOMES: dict[str, type[Completed] | type[Retried] | type[Failed] | type[Released] | type[Aborted]] = {
    "completed": Completed,
    "retried": Retried,
    "failed": Failed,
    "released": Released,
    "aborted": Aborted,
}


def outcome_from_wire(raw: Json, delivery: Delivery) -> Outcome:
    """The outcome ``raw`` (an outcome's ``to_wire``) describes, applied to ``delivery``, the one it names."""
    data = wire_object(raw, "outcome")
    kind = _OUTCOMES.get(data.get("outcome"))  # type: ignore[arg-type]
    if kind is None:
        raise ValueError(f"unknown outcome {data.get('outcome')!r}: expected {', '.join(_OUTCOMES)}")
    return kind.from_wire(data, delivery)


@frozen(kw_only=True)
class SettleResult:
    """What :meth:`Backend.settle` did with one outcome.

    ``accepted`` is False when the delivery's lease had expired and another
    delivery now holds the job (a stale worker): nothing was changed.
    ``chain`` is the chain record when this outcome completed, halted or cancelled its chain.
    """

    accepted: bool
    chain: ChainRecord | None = None

    def to_wire(self) -> dict[str, Json]:
        return {"accepted": self.accepted, "chain": None if self.chain is None else self.chain.to_wire()}

    @classmethod
    def from_wire(cls, raw: Json) -> SettleResult:
        data = wire_object(raw, "settle result")
        chain = data.get("chain")
        return cls(
            accepted=data.get("accepted") is True,
            chain=None if chain is None else ChainRecord.from_wire(chain),
        )
