"""Stored JSON as text: compact dumps, checked loads, and chain records through the core's wire form.

The format of every stored value is the core's ``to_wire``/``from_wire``
(:mod:`jobchain.model`); this module only turns it into and out of the text
Redis holds. :func:`chain_to_json` is ``ChainRecord.to_wire`` as compact JSON,
byte for byte what earlier versions stored.

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

from jobchain.model import ChainRecord, Json

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


def chain_to_json(record: ChainRecord) -> str:
    return dumps(record.to_wire())


def chain_from_json(text: str) -> ChainRecord:
    """The stored chain record; ValueError, TypeError or KeyError when it cannot be read."""
    return ChainRecord.from_wire(loads(text))
