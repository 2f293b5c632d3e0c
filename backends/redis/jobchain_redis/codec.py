"""The stored JSON form of chain records (the core gives jobs, errors and workers theirs), and reading text.

Kept here until the core grows ``ChainRecord.to_wire``; the format is plain
JSON with one version field so a reader can refuse what it does not know.

Bytes that are not UTF-8: the backends' clients decode with
``surrogateescape`` (see :func:`jobchain_redis.connection.decode_tolerantly`),
so a reply holding invalid UTF-8 reads as text with lone surrogates instead of
raising in the middle of a pipeline. :func:`loads` and :func:`check` refuse
such text with :class:`UndecodableError` (a ``ValueError``), which the backends
treat like any other unreadable data; :func:`keepable` turns it into what a
failed entry keeps (``base64:`` and the original bytes, capped).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from jobchain.model import ChainRecord, ChainState, ErrorInfo, Json, Step, StepMember, StepState

__all__ = [
    "RAW_LIMIT",
    "UndecodableError",
    "chain_from_json",
    "chain_to_json",
    "check",
    "decodable",
    "dumps",
    "keepable",
    "loads",
    "to_bytes",
]

_VERSION = 1

#: bytes of an unreadable job's stored data that its failed entry keeps (the rest is cut, with a marker)
RAW_LIMIT = 64 * 1024


class UndecodableError(ValueError):
    """Stored bytes that are not valid UTF-8 (read by the client as text with lone surrogates)."""


def decodable(text: str) -> bool:
    """False when ``text`` holds lone surrogates: bytes that were not valid UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check(text: str, what: str = "stored data") -> str:
    """``text`` itself, or :class:`UndecodableError` if it came from bytes that are not UTF-8."""
    if not decodable(text):
        raise UndecodableError(f"{what} is not valid UTF-8")
    return text


def to_bytes(text: str) -> bytes:
    """The bytes a reply decoded with ``surrogateescape`` came from (to name a key or member exactly)."""
    return text.encode("utf-8", "surrogateescape")


def keepable(raw: str, limit: int = RAW_LIMIT) -> str:
    """What a failed entry keeps of unreadable stored data: text as found, capped at ``limit`` bytes.

    Valid UTF-8 is kept as text; anything else as ``base64:`` and the base64
    of the original bytes. Data over ``limit`` bytes keeps its first ``limit``
    bytes, followed by a line ``[cut: first N of M bytes kept]``.
    """
    data = to_bytes(raw)
    kept = data[:limit]
    marker = f"\n[cut: first {len(kept)} of {len(data)} bytes kept]" if len(data) > len(kept) else ""
    if decodable(raw):
        return kept.decode("utf-8", "ignore") + marker  # "ignore": a character cut in two at the limit
    return "base64:" + base64.b64encode(kept).decode("ascii") + marker


def dumps(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> Json:
    """Parse stored JSON; :class:`UndecodableError` if the stored bytes were not UTF-8."""
    return json.loads(check(text, "the stored JSON"))


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
