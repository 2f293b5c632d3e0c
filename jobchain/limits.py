"""Rate and concurrency limits: how they are written, keyed, and computed the same way on every backend.

A task (``@app.task(rate_limit="10/s;1000/h", concurrency=4)``) or a queue
(``app.limit_queue("mail", rate_limit="100/m")``) may carry limits, enforced
by the workers before a job starts, across every worker of the backend:

* a **rate limit** is one or more windows ``N/period`` joined by ``;``
  (``"100/s"``, ``"10/s;1000/h"``, ``"5/10s"``; periods ``s``, ``m``, ``h``,
  ``d``, with an optional number). Each window is a GCRA (:func:`gcra_take`),
  a token bucket of N refilled evenly over the period: N starts at once, then
  one every period/N, so any interval of L seconds sees at most N + N*L/period
  starts. The backend holds the state (:class:`~jobchain.capabilities.RateLimits`);
* a **concurrency limit** is at most N jobs running at once
  (:class:`~jobchain.capabilities.ConcurrencyLimits`): a slot is taken for the
  job's lease and renewed with it, so the slot of a worker that died frees
  when its lease ends.

A limit is per task (or per queue) and, with a **key**, per value of the
key: ``rate_key=("customer",)`` (argument names) or a function
``(args, kwargs) -> str`` gives each customer a limit of its own. The pieces
a backend needs are :func:`gcra_take` and :func:`live_slots`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from attrs import frozen

from jobchain.errors import ConfigurationError, InvalidJobError

__all__ = [
    "EPSILON",
    "KeyBy",
    "Limits",
    "Window",
    "gcra_take",
    "key_of",
    "live_slots",
    "parse_rate",
    "window_name",
]

#: one window of a rate limit: at most ``tokens`` in any ``seconds``
Window: TypeAlias = tuple[int, float]

#: what ``rate_key=`` / ``concurrency_key=`` accept: argument names, or a function ``(args, kwargs) -> str``
KeyBy: TypeAlias = tuple[str, ...] | Callable[[tuple[Any, ...], Mapping[str, Any]], str]

#: a wait this short (seconds) is float error and counts as none (every backend uses it)
EPSILON = 1e-4

_PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_WINDOW = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+)\s*$")


def parse_rate(spec: str | Sequence[Window]) -> tuple[Window, ...]:
    """The windows of ``"10/s;1000/h"`` (or windows given as ``(tokens, seconds)`` pairs), checked."""
    if isinstance(spec, str):
        windows: list[Window] = []
        for part in spec.split(";"):
            match = _WINDOW.match(part.lower())
            if match is None or match.group(3) not in _PERIODS:
                raise ConfigurationError(
                    f"rate limit {spec!r}: each window is N/period, e.g. 100/s, 5/10s, 1000/h (s, m, h, d)"
                )
            count, scale = match.group(1), match.group(2)
            windows.append((int(count), float(scale or 1) * _PERIODS[match.group(3)]))
    else:
        windows = [(int(t), float(s)) for t, s in spec]
    if not windows:
        raise ConfigurationError("a rate limit needs at least one window")
    for tokens, seconds in windows:
        if tokens < 1 or seconds <= 0:
            raise ConfigurationError(f"rate limit window {tokens}/{seconds:g}s: tokens >= 1 and seconds > 0")
    return tuple(windows)


def window_name(window: Window) -> str:
    """How a backend names a window's state: ``"10/1.0"``."""
    return f"{window[0]}/{window[1]!r}"


def gcra_take(
    tats: Mapping[str, float], windows: Sequence[Window], now: float, count: int, max_wait: float
) -> tuple[float, dict[str, float] | None]:
    """The wait for ``count`` tokens and the new state (None: nothing taken), by GCRA over every window.

    ``tats`` maps :func:`window_name` to the window's theoretical arrival time
    (absent: a full bucket). A window of N tokens per T seconds admits at
    time ``t`` when ``max(tat, t) + count*T/N - T <= t``; the earliest ``t``
    admitted by every window is the answer. When it is at most ``max_wait``
    from ``now`` the tokens are taken at ``t`` (each window's tat moves to
    ``max(tat, t) + count*T/N``), so the next caller's ``t`` is later.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    at = now
    for tokens, seconds in windows:
        if count > tokens:
            raise ValueError(f"{count} tokens can never be taken from a window of {tokens}")
        tat = max(tats.get(window_name((tokens, seconds)), now), now)
        at = max(at, tat + count * seconds / tokens - seconds)
    wait = at - now
    if wait <= EPSILON:  # float error of sums near an epoch time, not a wait
        wait, at = 0.0, now
    if wait > max_wait:
        return wait, None
    state = {
        window_name((tokens, seconds)): max(tats.get(window_name((tokens, seconds)), at), at)
        + count * seconds / tokens
        for tokens, seconds in windows
    }
    return wait, state


def live_slots(holders: Mapping[str, float], now: float) -> dict[str, float]:
    """The slots (holder -> held until) whose time has not run out at ``now``."""
    return {holder: until for holder, until in holders.items() if until > now}


def check_key_by(value: object, what: str) -> KeyBy | None:
    """What ``rate_key=`` or ``concurrency_key=`` was given: None, argument names, or a function."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(n, str) for n in value):
        return tuple(value)
    if callable(value):
        return value
    raise ConfigurationError(
        f"{what} must be argument names or a function (args, kwargs) -> str, got {value!r}"
    )


def key_of(by: KeyBy | None, params: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The limit key of one call: "" without ``by``; the named arguments' values; or ``by(args, kwargs)``."""
    if by is None:
        return ""
    if callable(by):
        key = by(tuple(args), kwargs)
        if not isinstance(key, str):
            raise InvalidJobError(f"a limit key function must return a str, got {type(key).__name__}")
        return key
    bound = dict(zip(params, args, strict=False))
    bound.update(kwargs)
    return ",".join(f"{bound.get(name)}" for name in by)


@frozen(kw_only=True)
class Limits:
    """The limits of one task or queue: rate windows and a concurrency bound, each with an optional key."""

    rate: tuple[Window, ...] = ()
    rate_key: KeyBy | None = None
    concurrency: int | None = None
    concurrency_key: KeyBy | None = None

    @classmethod
    def build(
        cls,
        *,
        rate_limit: str | Sequence[Window] | None = None,
        rate_key: object = None,
        concurrency: int | None = None,
        concurrency_key: object = None,
    ) -> Limits | None:
        """The checked limits, or None when there are none."""
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        rate = () if rate_limit is None else parse_rate(rate_limit)
        if rate_key is not None and not rate:
            raise ConfigurationError("rate_key= needs a rate_limit=")
        if concurrency_key is not None and concurrency is None:
            raise ConfigurationError("concurrency_key= needs a concurrency=")
        if not rate and concurrency is None:
            return None
        return cls(
            rate=rate,
            rate_key=check_key_by(rate_key, "rate_key"),
            concurrency=concurrency,
            concurrency_key=check_key_by(concurrency_key, "concurrency_key"),
        )
