"""The JSON form of jobchain's values on the gateway's wire, both ways.

Jobs, errors and workers use the core's ``to_wire``/``from_wire``; the rest
(deliveries, records, chains, stats, outcomes) are spelt out here. Decoders
raise :class:`WireError` naming the JSON path of the first bad value, which
the gateway answers with 422 and the client treats as a protocol error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from jobchain.errors import InvalidJobError
from jobchain.model import (
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    ErrorInfo,
    Failed,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    Json,
    Outcome,
    QueueStats,
    Released,
    Retried,
    SettleResult,
    Step,
    StepMember,
    StepState,
    WorkerInfo,
)

__all__ = [
    "WireError",
    "chain_from_wire",
    "chain_to_wire",
    "counts",
    "delivery_from_wire",
    "delivery_to_wire",
    "dumps",
    "error_from_wire",
    "failed_from_wire",
    "failed_to_wire",
    "job_from_wire",
    "record_from_wire",
    "record_to_wire",
    "settle_result_from_wire",
    "settle_result_to_wire",
    "stats_from_wire",
    "stats_to_wire",
    "worker_from_wire",
]


class WireError(ValueError):
    """A JSON value does not have the expected shape; ``path`` says where (``$.jobs[2].id``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Json) -> bytes:
    """Compact UTF-8 JSON in which ``<``, ``>`` and ``&`` are escaped, so no reader sees markup."""
    text = _encoder.encode(value)
    if "<" in text or ">" in text or "&" in text:  # only possible inside strings: escaping is safe
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode()


# --- small checkers ----------------------------------------------------------------


def obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WireError(path, f"expected an object, got {_kind(value)}")
    return value


def arr(value: Any, path: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise WireError(path, f"expected an array, got {_kind(value)}")
    return value


def text(value: Any, path: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise WireError(path, f"expected a non-empty string, got {_kind(value)}")
    return value


def number(value: Any, path: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WireError(path, f"expected a number, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise WireError(path, f"must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise WireError(path, f"must be <= {maximum:g}, got {value!r}")
    return float(value)


def integer(value: Any, path: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(path, f"expected an integer, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise WireError(path, f"must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise WireError(path, f"must be <= {maximum}, got {value!r}")
    return value


def opt_number(value: Any, path: str) -> float | None:
    return None if value is None else number(value, path)


def _opt_text(value: Any, path: str) -> str | None:
    return None if value is None else text(value, path)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "an array"}.get(
        type(value), "an object" if isinstance(value, Mapping) else type(value).__name__
    )


# --- values ------------------------------------------------------------------------


def job_from_wire(raw: Any, path: str) -> Job:
    """A job from its wire form, every field's type checked (the core's ``from_wire`` trusts its store)."""
    data = obj(raw, path)
    text(data.get("id"), f"{path}.id")
    text(data.get("task"), f"{path}.task")
    text(data.get("queue", "default"), f"{path}.queue")
    arr(data.get("args", []), f"{path}.args")
    obj(data.get("kwargs", {}), f"{path}.kwargs")
    integer(data.get("priority", 0), f"{path}.priority")
    integer(data.get("attempt", 1), f"{path}.attempt", minimum=1)
    number(data.get("enqueued_at"), f"{path}.enqueued_at")
    opt_number(data.get("not_before"), f"{path}.not_before")
    opt_number(data.get("expires_at"), f"{path}.expires_at")
    _opt_text(data.get("sig"), f"{path}.sig")
    _opt_text(data.get("psig"), f"{path}.psig")
    chain = data.get("chain")
    if chain is not None:
        ref = arr(chain, f"{path}.chain")
        if len(ref) != 3:
            raise WireError(f"{path}.chain", "expected [chain_id, step, member]")
        text(ref[0], f"{path}.chain[0]")
        integer(ref[1], f"{path}.chain[1]", minimum=0)
        integer(ref[2], f"{path}.chain[2]", minimum=0)
    try:
        return Job.from_wire(data)
    except InvalidJobError as exc:
        raise WireError(path, str(exc)) from None


def error_from_wire(raw: Any, path: str) -> ErrorInfo:
    data = obj(raw, path)
    trace = data.get("traceback")
    if trace is not None and not isinstance(trace, str):
        raise WireError(f"{path}.traceback", f"expected a string or null, got {_kind(trace)}")
    return ErrorInfo(
        type=text(data.get("type"), f"{path}.type"),
        message=text(data.get("message", ""), f"{path}.message", empty=True),
        traceback=trace,
        attempt=integer(data.get("attempt", 1), f"{path}.attempt", minimum=1),
        at=number(data.get("at", 0.0), f"{path}.at"),
    )


def delivery_to_wire(delivery: Delivery) -> dict[str, Json]:
    return {
        "job": delivery.job.to_wire(),
        "token": delivery.token,
        "lease_until": delivery.lease_until,
        "worker": delivery.worker,
        "delivery_count": delivery.delivery_count,
        "crashes": delivery.crashes,
    }


def delivery_from_wire(raw: Any, path: str = "$") -> Delivery:
    data = obj(raw, path)
    return Delivery(
        job=job_from_wire(data.get("job"), f"{path}.job"),
        token=text(data.get("token"), f"{path}.token"),
        lease_until=number(data.get("lease_until"), f"{path}.lease_until"),
        worker=text(data.get("worker"), f"{path}.worker", empty=True),
        **counts(data, path),
    )


def counts(data: Mapping[str, Any], path: str) -> dict[str, int]:
    """``delivery_count`` and ``crashes`` of a delivery or a reference to one (crashes when given)."""
    found = {"delivery_count": integer(data.get("delivery_count", 1), f"{path}.delivery_count", minimum=1)}
    if data.get("crashes") is not None:
        found["crashes"] = integer(data["crashes"], f"{path}.crashes", minimum=0)
    return found


def record_to_wire(record: JobRecord) -> dict[str, Json]:
    return {
        "job": record.job.to_wire(),
        "state": record.state.value,
        "result": record.result,
        "error": None if record.error is None else record.error.to_wire(),
        "started_at": record.started_at,
        "finished_at": record.finished_at,
    }


def record_from_wire(raw: Any, path: str = "$") -> JobRecord:
    data = obj(raw, path)
    error = data.get("error")
    try:
        state = JobState(str(data.get("state")))
    except ValueError:
        raise WireError(f"{path}.state", f"unknown job state {data.get('state')!r}") from None
    return JobRecord(
        job=job_from_wire(data.get("job"), f"{path}.job"),
        state=state,
        result=data.get("result"),
        error=None if error is None else error_from_wire(error, f"{path}.error"),
        started_at=opt_number(data.get("started_at"), f"{path}.started_at"),
        finished_at=opt_number(data.get("finished_at"), f"{path}.finished_at"),
    )


def _member_to_wire(m: StepMember) -> dict[str, Json]:
    return {
        "job_id": m.job_id,
        "task": m.task,
        "args": list(m.args),
        "kwargs": dict(m.kwargs),
        "queue": m.queue,
        "priority": m.priority,
        "immutable": m.immutable,
        "expires": m.expires,
        **({} if m.sig is None else {"sig": m.sig}),
        **({} if m.result_sig is None else {"result_sig": m.result_sig}),
        "state": m.state.value,
        "result": m.result,
        "error": None if m.error is None else m.error.to_wire(),
        "started_at": m.started_at,
        "finished_at": m.finished_at,
    }


def _member_from_wire(raw: Any, path: str) -> StepMember:
    data = obj(raw, path)
    error = data.get("error")
    try:
        state = StepState(data.get("state", "pending"))
    except ValueError:
        raise WireError(f"{path}.state", f"unknown step state {data.get('state')!r}") from None
    kwargs = obj(data.get("kwargs", {}), f"{path}.kwargs")
    return StepMember(
        job_id=text(data.get("job_id"), f"{path}.job_id"),
        task=text(data.get("task"), f"{path}.task"),
        args=arr(data.get("args", []), f"{path}.args"),
        kwargs=dict(kwargs),
        queue=text(data.get("queue", "default"), f"{path}.queue"),
        priority=integer(data.get("priority", 0), f"{path}.priority"),
        immutable=data.get("immutable") is True,
        expires=opt_number(data.get("expires"), f"{path}.expires"),
        sig=_opt_text(data.get("sig"), f"{path}.sig"),
        result_sig=_opt_text(data.get("result_sig"), f"{path}.result_sig"),
        state=state,
        result=data.get("result"),
        error=None if error is None else error_from_wire(error, f"{path}.error"),
        started_at=opt_number(data.get("started_at"), f"{path}.started_at"),
        finished_at=opt_number(data.get("finished_at"), f"{path}.finished_at"),
    )


def chain_to_wire(record: ChainRecord) -> dict[str, Json]:
    return {
        "id": record.id,
        "name": record.name,
        "kind": record.kind,
        "state": record.state.value,
        "steps": [
            {"kind": step.kind, "members": [_member_to_wire(m) for m in step.members]}
            for step in record.steps
        ],
        "created_at": record.created_at,
        "finished_at": record.finished_at,
    }


def chain_from_wire(raw: Any, path: str = "$") -> ChainRecord:
    data = obj(raw, path)
    steps: list[Step] = []
    for i, step_raw in enumerate(arr(data.get("steps"), f"{path}.steps")):
        where = f"{path}.steps[{i}]"
        step = obj(step_raw, where)
        kind = step.get("kind", "task")
        if kind not in ("task", "group"):
            raise WireError(f"{where}.kind", f"expected 'task' or 'group', got {kind!r}")
        members = arr(step.get("members"), f"{where}.members")
        if not members:
            raise WireError(f"{where}.members", "a step needs at least one member")
        steps.append(
            Step(
                kind=kind,
                members=[_member_from_wire(m, f"{where}.members[{j}]") for j, m in enumerate(members)],
            )
        )
    if not steps:
        raise WireError(f"{path}.steps", "a chain needs at least one step")
    kind = data.get("kind", "chain")
    if kind not in ("chain", "group"):
        raise WireError(f"{path}.kind", f"expected 'chain' or 'group', got {kind!r}")
    try:
        state = ChainState(data.get("state", "running"))
    except ValueError:
        raise WireError(f"{path}.state", f"unknown chain state {data.get('state')!r}") from None
    name = data.get("name")
    if name is not None:
        name = text(name, f"{path}.name")
    return ChainRecord(
        id=text(data.get("id"), f"{path}.id"),
        name=name,
        kind=kind,
        state=state,
        steps=steps,
        created_at=number(data.get("created_at"), f"{path}.created_at"),
        finished_at=opt_number(data.get("finished_at"), f"{path}.finished_at"),
    )


def failed_to_wire(entry: FailedEntry) -> dict[str, Json]:
    return {"job": entry.job.to_wire(), "error": entry.error.to_wire(), "failed_at": entry.failed_at}


def failed_from_wire(raw: Any, path: str = "$") -> FailedEntry:
    data = obj(raw, path)
    return FailedEntry(
        job=job_from_wire(data.get("job"), f"{path}.job"),
        error=error_from_wire(data.get("error"), f"{path}.error"),
        failed_at=number(data.get("failed_at"), f"{path}.failed_at"),
    )


def stats_to_wire(stats: QueueStats) -> dict[str, Json]:
    return {
        "queue": stats.queue,
        "ready": stats.ready,
        "delayed": stats.delayed,
        "in_flight": stats.in_flight,
        "failed": stats.failed,
    }


def stats_from_wire(raw: Any, path: str = "$") -> QueueStats:
    data = obj(raw, path)
    return QueueStats(
        queue=text(data.get("queue"), f"{path}.queue"),
        **{
            k: integer(data.get(k, 0), f"{path}.{k}", minimum=0)
            for k in ("ready", "delayed", "in_flight", "failed")
        },
    )


def worker_from_wire(raw: Any, path: str = "$") -> WorkerInfo:
    data = obj(raw, path)
    labels = obj(data.get("labels", {}), f"{path}.labels")
    if not all(isinstance(v, str) for v in labels.values()):
        raise WireError(f"{path}.labels", "label values must be strings")
    queues = arr(data.get("queues", []), f"{path}.queues")
    return WorkerInfo(
        name=text(data.get("name"), f"{path}.name"),
        host=text(data.get("host", ""), f"{path}.host", empty=True),
        pid=integer(data.get("pid", 0), f"{path}.pid"),
        queues=[text(q, f"{path}.queues[{i}]") for i, q in enumerate(queues)],
        labels=dict(labels),
        concurrency=integer(data.get("concurrency", 1), f"{path}.concurrency", minimum=1),
        started_at=number(data.get("started_at"), f"{path}.started_at"),
        heartbeat_at=number(data.get("heartbeat_at"), f"{path}.heartbeat_at"),
        state=text(data.get("state", "running"), f"{path}.state"),
        instance=text(data.get("instance", ""), f"{path}.instance", empty=True),
    )


# --- outcomes: the client sends the delivery's identity and what happened --------------


def outcome_to_wire(outcome: Outcome) -> dict[str, Json]:
    d = outcome.delivery
    raw: dict[str, Json] = {
        "job_id": d.job.id,
        "token": d.token,
        "worker": d.worker,
        "lease_until": d.lease_until,
        "delivery_count": d.delivery_count,
        "crashes": d.crashes,
    }
    if isinstance(outcome, Completed):
        raw.update(
            outcome="completed",
            result=outcome.result,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
        )
        if outcome.result_sig is not None:
            raw["result_sig"] = outcome.result_sig
    elif isinstance(outcome, Retried):
        raw.update(outcome="retried", error=outcome.error.to_wire(), delay=outcome.delay)
    elif isinstance(outcome, Failed):
        raw.update(outcome="failed", error=outcome.error.to_wire())
    else:
        raw["outcome"] = "released"
    return raw


def outcome_from_wire(raw: Mapping[str, Any], delivery: Delivery, path: str) -> Outcome:
    """The outcome ``raw`` describes, applied to ``delivery`` (the gateway's copy of it)."""
    kind = raw.get("outcome")
    if kind == "completed":
        return Completed(
            delivery=delivery,
            result=raw.get("result"),
            started_at=number(raw.get("started_at"), f"{path}.started_at"),
            finished_at=number(raw.get("finished_at"), f"{path}.finished_at"),
            result_sig=_opt_text(raw.get("result_sig"), f"{path}.result_sig"),
        )
    if kind == "retried":
        return Retried(
            delivery=delivery,
            error=error_from_wire(raw.get("error"), f"{path}.error"),
            delay=number(raw.get("delay"), f"{path}.delay", minimum=0, maximum=10 * 365 * 86400),
        )
    if kind == "failed":
        return Failed(delivery=delivery, error=error_from_wire(raw.get("error"), f"{path}.error"))
    if kind == "released":
        return Released(delivery=delivery)
    raise WireError(f"{path}.outcome", f"expected completed, retried, failed or released, got {kind!r}")


def settle_result_to_wire(result: SettleResult) -> dict[str, Json]:
    return {
        "accepted": result.accepted,
        "chain": None if result.chain is None else chain_to_wire(result.chain),
    }


def settle_result_from_wire(raw: Any, path: str = "$") -> SettleResult:
    data = obj(raw, path)
    chain = data.get("chain")
    return SettleResult(
        accepted=data.get("accepted") is True,
        chain=None if chain is None else chain_from_wire(chain, f"{path}.chain"),
    )
