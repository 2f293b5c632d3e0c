"""JSON payload checks: every argument must be JSON every backend can store, and a job must not be too big.

Beyond what :mod:`json` refuses (sets, objects, NaN, keys that are not
strings), a value is refused if it holds a *lone surrogate* (a str such as
``"\\ud800"``, which no backend can encode as UTF-8) or is nested more than
:data:`MAX_DEPTH` levels deep (each argument, and a task's result, counted
on its own: ``[[1]]`` is two levels).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from jobchain.errors import InvalidJobError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "MAX_DEPTH",
    "check_payload",
    "find_non_json",
    "has_non_str_key",
    "has_unstorable",
]

DEFAULT_MAX_PAYLOAD = 1024 * 1024
#: the deepest nesting of lists and objects accepted in one argument or one result
MAX_DEPTH = 64

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (not encodable as UTF-8), or None."""
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def find_non_json(value: Any, path: str, *, max_depth: int = MAX_DEPTH) -> str | None:
    """The path and a description of the first value that JSON or a backend cannot carry, or None.

    That is a value of another type, a float that is not finite, a key that
    is not a str, a lone surrogate in a str, or nesting deeper than
    ``max_depth`` (``value`` itself is level 1 if it is a list or dict).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        at = _surrogate(value)
        return None if at is None else f"{path}: lone surrogate {value[at]!r} at index {at} (not valid UTF-8)"
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: {value!r} (not finite)"
    if isinstance(value, list | tuple | Mapping) and max_depth < 1:
        shown = path if len(path) <= 48 else path[:48] + "…"
        return f"{shown}: nested too deeply (more than {MAX_DEPTH} levels of lists and objects)"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_non_json(item, f"{path}[{index}]", max_depth=max_depth - 1)
            if found:
                return found
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: key {key!r} of type {type(key).__name__} (keys must be str)"
            at = _surrogate(key)
            if at is not None:
                return f"{path}: key with a lone surrogate {key[at]!r} at index {at} (not valid UTF-8)"
            found = find_non_json(item, f"{path}[{key!r}]", max_depth=max_depth - 1)
            if found:
                return found
        return None
    return f"{path}: {type(value).__name__}"


def has_unstorable(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """True if ``value`` (JSON-encodable) has a non-str key, a lone surrogate or nesting over ``max_depth``.

    Iterative, so no nesting makes it raise :class:`RecursionError`;
    :func:`find_non_json` then says where.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _surrogate(item) is not None:
                return True
            continue
        if isinstance(item, dict):  # json encodes no other mapping
            for key in item:
                if type(key) is not str or _surrogate(key) is not None:
                    return True
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):  # the tuple form is faster than list | tuple
            children = item
        else:
            continue
        if depth >= max_depth:
            return True
        for child in children:
            if isinstance(child, (str, dict, list, tuple)):
                stack.append((child, depth + 1))
    return False


def has_non_str_key(value: Any) -> bool:
    """True if some dict inside ``value`` has a key that is not a str."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):  # json encodes no other mapping
            for key in item:
                if type(key) is not str:
                    return True
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):  # the tuple form is faster than list | tuple
            stack.extend(item)
    return False


def check_payload(
    args: Sequence[Any], kwargs: Mapping[str, Any], *, limit: int = DEFAULT_MAX_PAYLOAD, what: str = "job"
) -> int:
    """Check that arguments are JSON every backend can store, within ``limit`` bytes; return their size.

    Raises :class:`InvalidJobError` naming the first bad value's path
    (``args[0]``, ``kwargs['x'][3]``): not JSON, a lone surrogate, nested
    deeper than :data:`MAX_DEPTH`, or over ``limit``.
    """
    try:
        encoded = _encoder.encode([args, kwargs])
        # a lone surrogate makes encode() raise (UnicodeEncodeError is a ValueError)
        size = len(encoded.encode()) if not encoded.isascii() else len(encoded)
        # json would turn {1: x} into {"1": x}: the task would see other keys on other backends;
        # args and kwargs are two levels of the tuple: each argument may nest MAX_DEPTH levels
        if has_unstorable((args, kwargs), MAX_DEPTH + 2):
            raise TypeError("keys must be str")
    except (TypeError, ValueError, RecursionError):
        found = find_non_json(list(args), "args", max_depth=MAX_DEPTH + 1) or find_non_json(
            dict(kwargs), "kwargs", max_depth=MAX_DEPTH + 1
        )
        raise InvalidJobError(
            f"{what} arguments must be JSON-serialisable; found {found or 'an unsupported value'}"
        ) from None
    if size > limit:
        raise InvalidJobError(
            f"{what} payload is {size} bytes, over the limit of {limit} bytes; "
            "store large data elsewhere and pass a reference"
        )
    return size
