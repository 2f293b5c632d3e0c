"""Retry policy: how many runs a job gets and how long it waits between them."""

from __future__ import annotations

import math
import random

from attrs import field, frozen

from jobchain.errors import Cancelled, Fail, InvalidJobError

__all__ = ["Retry"]


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise InvalidJobError(f"non_retryable must list exception classes, got {item!r}")
    return tuple(items)


def _invalid(message: str) -> InvalidJobError:
    return InvalidJobError(f"invalid Retry: {message}")


def _check(instance: Retry, _attribute: object, _value: object) -> None:
    if isinstance(instance.attempts, bool) or not isinstance(instance.attempts, int):
        raise _invalid(f"attempts must be an int, got {instance.attempts!r}")
    if instance.attempts < 1:
        raise _invalid(
            f"attempts counts runs, the first included, so it must be >= 1, got {instance.attempts}"
        )
    for name in ("base", "cap"):
        value = getattr(instance, name)
        if not isinstance(value, int | float) or value <= 0:
            raise _invalid(f"{name} must be a number of seconds > 0, got {value!r}")
        if not math.isfinite(value):
            raise _invalid(f"{name} must be a finite number of seconds, got {value!r}")
    if not isinstance(instance.factor, int | float) or instance.factor < 1:
        raise _invalid(f"factor must be >= 1, got {instance.factor!r}")
    if not math.isfinite(instance.factor):
        raise _invalid(f"factor must be finite, got {instance.factor!r}")
    if not isinstance(instance.jitter, bool):
        raise _invalid(f"jitter must be True or False, got {instance.jitter!r}")


@frozen(kw_only=True)
class Retry:
    """Exponential backoff: the delay before attempt n+1 is ``min(cap, base * factor**(n-1))``.

    ``attempts`` counts runs in total, the first included, so ``attempts=1``
    means no retry. With ``jitter`` (the default) the delay is drawn uniformly
    from ``[0, that bound]`` ("full jitter"), which spreads retries of many jobs
    that failed together. Exceptions in ``non_retryable`` (and
    :class:`jobchain.Fail`) send the job to the failed queue at once.
    """

    attempts: int = field(default=3)
    base: float = field(default=0.5)
    factor: float = field(default=2.0)
    cap: float = field(default=60.0)
    jitter: bool = field(default=True, validator=_check)
    non_retryable: tuple[type[BaseException], ...] = field(default=(), converter=_exception_types)

    @classmethod
    def never(cls) -> Retry:
        """One run, no retry: the default for tasks when the App sets no policy."""
        return cls(attempts=1)

    def bound(self, attempt: int) -> float:
        """The largest delay before the run after ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        try:
            raw = self.base * self.factor ** (attempt - 1)
        except OverflowError:
            return float(self.cap)
        return float(min(self.cap, raw))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after run number ``attempt`` failed, before the next one."""
        bound = self.bound(attempt)
        if not self.jitter:
            return bound
        return (rng or random).uniform(0.0, bound)

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """True when run number ``attempt`` failing with ``exc`` earns another run."""
        if attempt >= self.attempts or isinstance(exc, Fail | Cancelled):
            return False
        return not (self.non_retryable and isinstance(exc, self.non_retryable))
