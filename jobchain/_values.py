"""The leaf values of :mod:`jobchain.model`: states, the JSON alias, :class:`ErrorInfo` and its history.

They import nothing else of the model, so the modules that build on them
(:mod:`jobchain._chains`, :mod:`jobchain.model`) import them without a cycle.
Import them from :mod:`jobchain.model`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from attrs import frozen

from jobchain.errortext import DEFAULT_MAX_ERROR_BYTES, cap, describe, format_traceback, type_name

__all__ = [
    "MAX_KEPT_ERRORS",
    "ChainState",
    "ErrorInfo",
    "JobState",
    "Json",
    "StepState",
    "error_tuple",
    "errors_from_wire",
    "json_tuple",
    "kept_errors",
    "opt_text",
    "wire_object",
]

#: A JSON-compatible value: None, bool, int, float, str, list or dict with str keys.
Json: TypeAlias = Any


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
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class StepState(enum.StrEnum):
    """The state of one step (or one member of a group step) of a chain.

    ``COMPLETED`` is an alias of ``SUCCEEDED``, and the word ``"completed"``
    (stored before the states shared one vocabulary) reads as ``SUCCEEDED``.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_EXECUTED = "not_executed"
    COMPLETED = "succeeded"

    @classmethod
    def _missing_(cls, value: object) -> StepState | None:
        return cls.SUCCEEDED if value == "completed" else None

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class ChainState(enum.StrEnum):
    """The state of a chain (or of a group submitted on its own).

    ``PENDING`` until a settlement first touches it (:meth:`jobchain.handles.ChainHandle.status`
    says ``running`` as soon as one of its jobs runs), then ``RUNNING``; it ends
    ``SUCCEEDED`` (its last step succeeded) or ``FAILED`` (a step failed and the
    chain halted). ``COMPLETED`` and ``HALTED`` are aliases of ``SUCCEEDED`` and
    ``FAILED``, and the words ``"completed"`` and ``"halted"`` (stored before the
    states shared one vocabulary) read as them.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPLETED = "succeeded"
    HALTED = "failed"

    @classmethod
    def _missing_(cls, value: object) -> ChainState | None:
        return _OLD_CHAIN_WORDS.get(value) if isinstance(value, str) else None

    @property
    def finished(self) -> bool:
        return self not in (ChainState.PENDING, ChainState.RUNNING)


#: the words stored for a chain's state before one vocabulary served jobs, steps and chains
_OLD_CHAIN_WORDS = {"completed": ChainState.SUCCEEDED, "halted": ChainState.FAILED}


def json_tuple(value: Iterable[Json]) -> tuple[Json, ...]:
    return tuple(value)


def opt_text(value: Json, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def wire_object(raw: Json, what: str) -> Mapping[str, Json]:
    """``raw`` if it is a JSON object; TypeError naming ``what`` otherwise (a stored list, a string)."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"malformed {what}: expected an object, got {type(raw).__name__}")
    return raw


@frozen(kw_only=True)
class ErrorInfo:
    """Why an attempt of a job failed: the exception's type name, message and traceback.

    ``retry_in`` is the backoff the retry policy chose after this attempt, in
    seconds (the job ran again that long after ``at``); None for an attempt
    that was not retried (the job failed for good), and for errors recorded
    before it was kept. ``ran`` is how long the attempt ran before it failed,
    in seconds (it started ``ran`` before ``at``); None when the task never
    started (an unknown task, a bad signature, an expired job) or the error
    was recorded before it was kept.
    """

    type: str
    message: str
    traceback: str | None = None
    attempt: int = 1
    at: float = 0.0
    retry_in: float | None = None
    ran: float | None = None

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        attempt: int,
        at: float,
        max_bytes: int = DEFAULT_MAX_ERROR_BYTES,
        ran: float | None = None,
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
            ran=ran,
        )

    def to_wire(self) -> dict[str, Json]:
        """``retry_in`` and ``ran`` are written only when set, so older readers see the form they know."""
        wire: dict[str, Json] = {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": self.attempt,
            "at": self.at,
        }
        if self.retry_in is not None:
            wire["retry_in"] = self.retry_in
        if self.ran is not None:
            wire["ran"] = self.ran
        return wire

    @classmethod
    def from_wire(cls, raw: Mapping[str, Json]) -> ErrorInfo:
        retry_in = raw.get("retry_in")
        ran = raw.get("ran")
        return cls(
            type=str(raw["type"]),
            message=str(raw["message"]),
            traceback=raw.get("traceback"),
            attempt=int(raw.get("attempt", 1)),
            at=float(raw.get("at", 0.0)),
            retry_in=None if retry_in is None else float(retry_in),
            ran=None if ran is None else float(ran),
        )

    @classmethod
    def maybe(cls, raw: Mapping[str, Json] | None) -> ErrorInfo | None:
        """:meth:`from_wire`, or None for a missing (null) error."""
        return None if raw is None else cls.from_wire(raw)


#: The most attempts' errors a job's record keeps (the latest ones): a job allowed
#: ``attempts=1000`` keeps its last 20 errors, each capped by :mod:`jobchain.errortext`.
MAX_KEPT_ERRORS = 20


def error_tuple(value: Iterable[ErrorInfo]) -> tuple[ErrorInfo, ...]:
    """The converter of an error history field."""
    return tuple(value)


def kept_errors(history: Sequence[ErrorInfo], error: ErrorInfo) -> tuple[ErrorInfo, ...]:
    """``history`` with ``error`` appended, cut to the last :data:`MAX_KEPT_ERRORS`."""
    return (*history[-(MAX_KEPT_ERRORS - 1) :], error)


def errors_from_wire(raw: Json, error: ErrorInfo | None) -> tuple[ErrorInfo, ...]:
    """A record's error history from its wire list; ``raw`` None (a record from before): ``error`` alone."""
    if raw is None:
        return () if error is None else (error,)
    if not isinstance(raw, list):
        raise TypeError(f"malformed error history: expected a list, got {type(raw).__name__}")
    return tuple(ErrorInfo.from_wire(wire_object(item, "error")) for item in raw[-MAX_KEPT_ERRORS:])
