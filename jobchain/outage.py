"""Riding out a failing backend: capped exponential backoff, and one log line per outage.

A worker calls its backend from several threads (reserve, settle, lease
extension, heartbeat). When the backend cannot be reached, all of them fail
at once and keep failing until it returns. :class:`Backoff` spaces the retries
of one call site; :class:`Outage` turns the many failures of all of them into
two log lines for the worker: ``backend_unavailable`` when the first call
fails and ``backend_recovered`` (with the outage's length) when the first
call succeeds again.

Two kinds of failure are told apart. An :class:`OSError` (connection
failures and timeouts: :class:`jobchain.BackendUnavailableError` is a
:class:`ConnectionError`) means the backend is away, whichever call saw it, so
any call that succeeds ends the outage. Any other error (a :class:`jobchain.BackendError` the server
answered with, a bug) belongs to the call that raised it: it is logged once,
with its traceback, when that call starts failing (``backend_error``) and
once when that same call succeeds again (``backend_error_cleared``).

Threads that back off wait with :meth:`Outage.pause`, which returns early when
another thread's call ends the outage, so every role resumes as soon as one
of them finds the backend back, not at the end of its own backoff.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from attrs import define, field

__all__ = ["Backoff", "Outage", "is_unavailable"]


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean the backend could not be reached (rather than that it refused)."""
    return isinstance(exc, OSError)


class Backoff:
    """Delays between retries of a failing call: exponential, capped at ``cap``, with jitter.

    The n-th consecutive failure waits a random time between ``d / 2`` and ``d``,
    where ``d = min(cap, base * 2 ** (n - 1))``: never more than ``cap``, never
    less than half of it once the cap is reached, so a long outage is polled
    about every ``0.75 * cap`` seconds. :meth:`reset` after a success.
    """

    def __init__(self, *, base: float = 0.05, cap: float = 5.0, rng: random.Random | None = None) -> None:
        if isinstance(base, bool) or not isinstance(base, int | float) or base <= 0:
            raise ValueError(f"backoff base must be > 0 seconds, got {base!r}")
        if isinstance(cap, bool) or not isinstance(cap, int | float) or cap < base:
            raise ValueError(f"backoff cap must be >= base ({base!r}) seconds, got {cap!r}")
        self.base = float(base)
        self.cap = float(cap)
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        ceiling = self.cap if self.failures > 64 else min(self.cap, self.base * 2.0 ** (self.failures - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.failures = 0

    def __repr__(self) -> str:
        return f"Backoff(base={self.base!r}, cap={self.cap!r}, failures={self.failures})"


@define
class _Streak:
    since: float
    operation: str
    calls: int = 1


@define
class _State:
    outage: _Streak | None = None
    errors: dict[str, _Streak] = field(factory=dict)


class Outage:
    """Whether a worker's backend is failing; logs each outage once, when it starts and when it ends.

    Threads call :meth:`failed` after a backend call raised and :meth:`succeeded`
    after one returned. ``clock`` is monotonic seconds (injectable for tests).
    """

    def __init__(self, log: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()
        # cleared by every failure, set when an outage ends or by kick(): what pause() waits for
        self._wake = threading.Event()
        #: how many outages (not failed calls) this tracker has seen
        self.outages = 0

    @property
    def active(self) -> bool:
        """True while the backend is thought to be unreachable."""
        return self._state.outage is not None

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the outage ends (or :meth:`kick` is called) meanwhile.

        Call it after :meth:`failed`, which resets the wake-up, and after checking
        any stop flag that is set before :meth:`kick`: then no wake-up is missed.
        """
        if seconds > 0:
            self._wake.wait(seconds)

    def kick(self) -> None:
        """End every :meth:`pause` now (the worker is stopping)."""
        self._wake.set()

    def failed(self, operation: str, exc: BaseException) -> None:
        """Record that a call to the backend raised ``exc``; log it if it starts an outage or error."""
        now = self._clock()
        with self._lock:
            self._wake.clear()
            state = self._state
            if is_unavailable(exc):
                if state.outage is not None:
                    state.outage.calls += 1
                    return
                state.outage = _Streak(since=now, operation=operation)
                self.outages += 1
                started = True
            else:
                streak = state.errors.get(operation)
                if streak is not None:
                    streak.calls += 1
                    return
                state.errors[operation] = _Streak(since=now, operation=operation)
                started = False
        if started:
            self.log.warning(
                "backend_unavailable", operation=operation, error=str(exc), error_type=type(exc).__name__
            )
        else:
            error_type = type(exc).__name__
            self.log.warning("backend_error", operation=operation, error_type=error_type, exc_info=exc)

    def succeeded(self, operation: str) -> None:
        """Record that a call to the backend returned; log the end of an outage or error it ends."""
        state = self._state
        if state.outage is None and not state.errors:  # the usual case: no lock taken
            return
        now = self._clock()
        with self._lock:
            outage, state.outage = state.outage, None
            error = state.errors.pop(operation, None)
        if outage is not None:
            self._wake.set()
            self.log.info(
                "backend_recovered",
                operation=operation,
                outage_seconds=round(now - outage.since, 3),
                failed_calls=outage.calls,
                first_failed=outage.operation,
            )
        if error is not None:
            self.log.info(
                "backend_error_cleared",
                operation=operation,
                seconds=round(now - error.since, 3),
                failed_calls=error.calls,
            )
