"""The stored JSON form of chain records (the core gives jobs, errors and workers theirs).

Kept here until the core grows ``ChainRecord.to_wire``; the format is plain
JSON with one version field so a reader can refuse what it does not know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobchain.model import ChainRecord, ChainState, ErrorInfo, Json, Step, StepMember, StepState

__all__ = ["chain_from_json", "chain_to_json", "dumps", "loads"]

_VERSION = 1


def dumps(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> Json:
    return json.loads(text)


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


def _member_from_wire(raw: Mapping[str, Any]) -> StepMember:
    error = raw.get("error")
    return StepMember(
        job_id=raw["job_id"],
        task=raw["task"],
        args=raw.get("args", []),
        kwargs=raw.get("kwargs", {}),
        queue=raw.get("queue", "default"),
        priority=raw.get("priority", 0),
        immutable=raw.get("immutable", False),
        expires=raw.get("expires"),
        sig=raw.get("sig"),
        result_sig=raw.get("result_sig"),
        state=StepState(raw.get("state", "pending")),
        result=raw.get("result"),
        error=None if error is None else ErrorInfo.from_wire(error),
        started_at=raw.get("started_at"),
        finished_at=raw.get("finished_at"),
    )


def chain_to_json(record: ChainRecord) -> str:
    return dumps(
        {
            "v": _VERSION,
            "id": record.id,
            "name": record.name,
            "kind": record.kind,
            "state": record.state.value,
            "steps": [
                {"kind": s.kind, "members": [_member_to_wire(m) for m in s.members]} for s in record.steps
            ],
            "created_at": record.created_at,
            "finished_at": record.finished_at,
        }
    )


def chain_from_json(text: str) -> ChainRecord:
    raw = loads(text)
    if raw.get("v") != _VERSION:
        raise ValueError(f"chain record of unknown version {raw.get('v')!r}")
    return ChainRecord(
        id=raw["id"],
        name=raw.get("name"),
        kind=raw.get("kind", "chain"),
        state=ChainState(raw["state"]),
        steps=[
            Step(kind=s["kind"], members=[_member_from_wire(m) for m in s["members"]]) for s in raw["steps"]
        ],
        created_at=float(raw["created_at"]),
        finished_at=raw.get("finished_at"),
    )
