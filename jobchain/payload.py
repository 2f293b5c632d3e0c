"""JSON payload checks: every argument must be JSON, and a job must not be too big."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from jobchain.errors import InvalidJobError

__all__ = ["DEFAULT_MAX_PAYLOAD", "check_payload", "find_non_json", "has_non_str_key"]

DEFAULT_MAX_PAYLOAD = 1024 * 1024

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def find_non_json(value: Any, path: str) -> str | None:
    """The path and type of the first value that JSON cannot carry, or None."""
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: {value!r} (not finite)"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_non_json(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: key {key!r} of type {type(key).__name__} (keys must be str)"
            found = find_non_json(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return f"{path}: {type(value).__name__}"


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
    """Check that arguments are JSON and within ``limit`` bytes; return their encoded size."""
    try:
        encoded = _encoder.encode([args, kwargs])
        if has_non_str_key((args, kwargs)):
            # json would turn {1: x} into {"1": x}: the task would see other keys on other backends
            raise TypeError("keys must be str")
    except (TypeError, ValueError):
        found = find_non_json(list(args), "args") or find_non_json(dict(kwargs), "kwargs")
        raise InvalidJobError(
            f"{what} arguments must be JSON-serialisable; found {found or 'an unsupported value'}"
        ) from None
    size = len(encoded.encode()) if not encoded.isascii() else len(encoded)
    if size > limit:
        raise InvalidJobError(
            f"{what} payload is {size} bytes, over the limit of {limit} bytes; "
            "store large data elsewhere and pass a reference"
        )
    return size
