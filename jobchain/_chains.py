"""Chain records: :class:`ChainRecord`, its :class:`Step` and their :class:`StepMember` s.

Import them from :mod:`jobchain.model`. ``to_wire``/``from_wire`` spell out
the one JSON form of a chain record: what the Redis and SQLite backends store
and what the HTTP gateway sends. The Redis backends store it as compact JSON,
so its key order is part of the format::

    {"v": 1, "id", "name", "kind", "state",
     "steps": [{"kind", "members": [{"job_id", "task", "args", "kwargs", "queue",
                                      "priority", "immutable", "expires", ["sig"],
                                      ["result_sig"], "state", "result", "error",
                                      "started_at", "finished_at"}]}],
     "created_at", "finished_at"}

``sig`` and ``result_sig`` are written only when set. A record without
``"v"`` is read as version 1; another version is refused with ValueError.
Readers are lenient about what a writer may leave out (a default fills it)
and raise ValueError, TypeError or KeyError for what they cannot read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from attrs import field, frozen
from attrs import validators as v

from jobchain._values import ChainState, ErrorInfo, Json, StepState, json_tuple, wire_object

__all__ = ["CHAIN_WIRE_VERSION", "ChainRecord", "Step", "StepMember"]

#: The version of a chain record's stored form (``"v"`` in :meth:`ChainRecord.to_wire`).
CHAIN_WIRE_VERSION = 1


def _members(value: Iterable[StepMember]) -> tuple[StepMember, ...]:
    return tuple(value)


def _steps(value: Iterable[Step]) -> tuple[Step, ...]:
    return tuple(value)


@frozen(kw_only=True)
class StepMember:
    """One job of a chain step: what to run and what happened to it."""

    job_id: str
    task: str
    args: tuple[Json, ...] = field(default=(), converter=json_tuple)
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

    def to_wire(self) -> dict[str, Json]:
        raw: dict[str, Json] = {
            "job_id": self.job_id,
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "queue": self.queue,
            "priority": self.priority,
            "immutable": self.immutable,
            "expires": self.expires,
        }
        if self.sig is not None:
            raw["sig"] = self.sig
        if self.result_sig is not None:
            raw["result_sig"] = self.result_sig
        raw["state"] = self.state.value
        raw["result"] = self.result
        raw["error"] = None if self.error is None else self.error.to_wire()
        raw["started_at"] = self.started_at
        raw["finished_at"] = self.finished_at
        return raw

    @classmethod
    def from_wire(cls, raw: Json) -> StepMember:
        data = wire_object(raw, "step member")
        return cls(
            job_id=data["job_id"],
            task=data["task"],
            args=data.get("args", []),
            kwargs=data.get("kwargs", {}),
            queue=data.get("queue", "default"),
            priority=data.get("priority", 0),
            immutable=data.get("immutable", False),
            expires=data.get("expires"),
            sig=data.get("sig"),
            result_sig=data.get("result_sig"),
            state=StepState(data.get("state", "pending")),
            result=data.get("result"),
            error=ErrorInfo.maybe(data.get("error")),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
        )


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
        if StepState.CANCELLED in states:
            return StepState.CANCELLED
        if states == {StepState.SUCCEEDED}:
            return StepState.SUCCEEDED
        if states == {StepState.NOT_EXECUTED}:
            return StepState.NOT_EXECUTED
        if StepState.RUNNING in states or StepState.SUCCEEDED in states:
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

    def to_wire(self) -> dict[str, Json]:
        return {"kind": self.kind, "members": [m.to_wire() for m in self.members]}

    @classmethod
    def from_wire(cls, raw: Json) -> Step:
        data = wire_object(raw, "chain step")
        return cls(kind=data.get("kind", "task"), members=[StepMember.from_wire(m) for m in data["members"]])


@frozen(kw_only=True)
class ChainRecord:
    """A chain (or a group submitted on its own) and the state of every step."""

    id: str
    name: str | None = None
    kind: str = field(default="chain", validator=v.in_(("chain", "group")))
    #: ``pending`` until a settlement first touches the chain (see :class:`ChainState`)
    state: ChainState = ChainState.PENDING
    steps: tuple[Step, ...] = field(converter=_steps, validator=v.min_len(1))
    created_at: float
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def result(self) -> Json:
        """The last step's result (a list for a group step); None until the chain succeeded."""
        if self.state is not ChainState.SUCCEEDED:
            return None
        return self.steps[-1].result

    def failed_step(self) -> tuple[int, StepMember] | None:
        for index, step in enumerate(self.steps):
            for member in step.members:
                if member.state is StepState.FAILED:
                    return index, member
        return None

    def render(self) -> str:
        """``A (succeeded) -> B (failed) -> C (not executed)``."""
        return " -> ".join(f"{s.label} ({s.state.label})" for s in self.steps)

    def to_wire(self) -> dict[str, Json]:
        return {
            "v": CHAIN_WIRE_VERSION,
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "state": self.state.value,
            "steps": [s.to_wire() for s in self.steps],
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_wire(cls, raw: Json) -> ChainRecord:
        data = wire_object(raw, "chain record")
        version = data.get("v", CHAIN_WIRE_VERSION)
        if type(version) is not int or version != CHAIN_WIRE_VERSION:
            raise ValueError(f"chain record of unknown version {version!r}")
        return cls(
            id=data["id"],
            name=data.get("name"),
            kind=data.get("kind", "chain"),
            state=ChainState(data.get("state", "pending")),
            steps=[Step.from_wire(s) for s in data["steps"]],
            created_at=float(data["created_at"]),
            finished_at=data.get("finished_at"),
        )
