"""JSON on the gateway's wire: decoding and checking bodies, encoding answers.

The shapes are the msgspec types of :mod:`jobchain_http.schema`; the values
are built by the core's ``from_wire`` (:mod:`jobchain.model`) from the checked
JSON. :func:`check` raises :class:`WireError` naming the JSON path of the
first bad value, which the gateway answers with 422 and the client treats as
a protocol error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from jobchain.model import Json

__all__ = ["WireError", "check", "decode", "dumps", "read", "value"]

T = TypeVar("T")


class WireError(ValueError):
    """A JSON value does not have the expected shape; ``path`` says where (``$.jobs[2].id``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = msgspec.json.Decoder()


def dumps(value: Json) -> bytes:
    """Compact UTF-8 JSON in which ``<``, ``>`` and ``&`` are escaped, so no reader sees markup."""
    text = _encoder.encode(value)
    if "<" in text or ">" in text or "&" in text:  # only possible inside strings: escaping is safe
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode()


def decode(raw: bytes) -> Any:
    """The JSON value of ``raw``; msgspec's DecodeError or ValidationError if it is not JSON it takes.

    Strings holding lone surrogates (``"\\ud800"``), numbers out of a float's
    range and invalid UTF-8 are refused.
    """
    return _decoder.decode(raw)


def check(data: Any, kind: type[Any], path: str = "$") -> Any:
    """``data`` itself, if it is of shape ``kind`` (a :mod:`jobchain_http.schema` type); else WireError."""
    try:
        msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        where, message = _explain(str(exc))
        raise WireError(path + where[1:], message) from None
    return data


def read(raw: bytes, kind: type[Any]) -> Any:
    """An answer's JSON, checked against ``kind``; WireError (a ValueError) if it is not well formed."""
    try:
        data = decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireError("$", f"the answer is not valid JSON: {exc}") from None
    return check(data, kind)


def value(build: Callable[[Any], T], data: Any, path: str) -> T:
    """``build(data)`` (a core ``from_wire``), with what it refuses as a WireError at ``path``."""
    try:
        return build(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise WireError(path, str(exc)) from None


# --- msgspec's messages, in the gateway's words ---------------------------------------------------

_AT = re.compile(r"^(?P<message>.*) - at `(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]*)`(?P<rest>.*)$", re.DOTALL)
_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "array": "an array",
    "object": "an object",
}


def _name(kinds: str) -> str:
    return " or ".join(_NAMES.get(k.strip(), k.strip()) for k in kinds.split("|"))


def _explain(error: str) -> tuple[str, str]:
    """The JSON path and the message of a msgspec ValidationError's text."""
    found = _AT.match(error)
    path, message = (found["path"], found["message"]) if found else ("$", error)
    path = path.replace("[...]", "")  # a dict's value: name the dict
    missing = _MISSING.match(message)
    if missing:
        return f"{path}.{missing['field']}", "is required"
    expected = _EXPECTED.match(message)
    if expected is None:
        return path, message[:1].lower() + message[1:]
    want, rest = expected["want"], expected["rest"]
    if rest == " of length >= 1" and want == "str":
        return path, "expected a non-empty string"
    got = re.match(r"^, got `(?P<got>[^`]*)`$", rest)
    if got:
        return path, f"expected {_name(want)}, got {_name(got['got'])}"
    bound = re.match(r"^ (?P<op>[<>]=?) (?P<n>\S+)$", rest)
    if bound:
        return path, f"must be {bound['op']} {bound['n']}"
    return path, f"expected {_name(want)}{rest}"


# --- the checkers the catalog's submission reader uses --------------------------------------------


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


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "an array"}.get(
        type(value), "an object" if isinstance(value, Mapping) else type(value).__name__
    )
