"""The retry policy: backoff bounds, jitter, which failures earn another run, validation."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobchain import Fail, InvalidJobError, Retry

policies = st.builds(
    Retry,
    attempts=st.integers(1, 20),
    base=st.floats(0.001, 100.0),
    factor=st.floats(1.0, 10.0),
    cap=st.floats(0.001, 3600.0),
    jitter=st.booleans(),
)
attempt_numbers = st.integers(1, 2000)


def spec_bound(policy: Retry, attempt: int) -> float:
    """The brief's formula, min(cap, base * factor**(n-1)), computed without overflow."""
    try:
        return min(policy.cap, policy.base * policy.factor ** (attempt - 1))
    except OverflowError:
        return policy.cap


@given(policies, attempt_numbers, st.randoms(use_true_random=False))
def test_delay_stays_within_backoff_bound(policy: Retry, attempt: int, rng: random.Random) -> None:
    """Every delay lies in [0, min(cap, base * factor**(n-1))]."""
    delay = policy.delay(attempt, rng)
    assert 0.0 <= delay <= spec_bound(policy, attempt)


@given(policies.map(lambda p: Retry(base=p.base, factor=p.factor, cap=p.cap, jitter=False)), attempt_numbers)
def test_delay_without_jitter_is_exactly_the_bound(policy: Retry, attempt: int) -> None:
    """Without jitter the delay is exactly min(cap, base * factor**(n-1))."""
    assert policy.delay(attempt) == pytest.approx(spec_bound(policy, attempt), rel=1e-12)


@given(policies, st.integers(1, 200))
def test_bound_never_decreases_and_never_passes_cap(policy: Retry, attempt: int) -> None:
    """The backoff bound grows (or stays) from one attempt to the next and never exceeds the cap."""
    assert policy.bound(attempt) <= policy.bound(attempt + 1) <= policy.cap


def test_delays_follow_the_documented_sequence() -> None:
    """base=0.5, factor=2, cap=3 gives 0.5, 1, 2, 3, 3 seconds without jitter."""
    policy = Retry(attempts=6, base=0.5, factor=2.0, cap=3.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    """With jitter, delays are spread uniformly over [0, bound], not bunched at the bound."""
    policy = Retry(base=1.0, factor=2.0, cap=60.0)
    rng = random.Random(7)
    delays = [policy.delay(4, rng) for _ in range(500)]
    assert len(set(delays)) == len(delays)
    assert min(delays) < 0.5
    assert 7.5 < max(delays) <= 8.0
    assert 3.0 < sum(delays) / len(delays) < 5.0


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    """The same seed gives the same jittered delays."""
    policy = Retry()
    first = [policy.delay(n, random.Random(3)) for n in range(1, 5)]
    second = [policy.delay(n, random.Random(3)) for n in range(1, 5)]
    assert first == second


def test_bound_rejects_attempt_zero() -> None:
    """Attempts are numbered from 1."""
    with pytest.raises(ValueError, match="1-based"):
        Retry().bound(0)


# --- should_retry ----------------------------------------------------------------------


@given(st.integers(1, 30), st.integers(1, 40))
def test_attempts_count_runs_first_included(attempts: int, attempt: int) -> None:
    """A failure earns another run exactly while fewer than `attempts` runs have happened."""
    policy = Retry(attempts=attempts)
    assert policy.should_retry(RuntimeError("x"), attempt) is (attempt < attempts)


def test_attempts_one_means_no_retry() -> None:
    """attempts=1 (and Retry.never()) never retries."""
    assert not Retry(attempts=1).should_retry(RuntimeError(), 1)
    assert not Retry.never().should_retry(RuntimeError(), 1)


class CustomFail(Fail):
    pass


@pytest.mark.parametrize("exc", [Fail("stop"), CustomFail("stop")])
def test_fail_is_never_retried(exc: Fail) -> None:
    """jobchain.Fail (and its subclasses) skips every remaining attempt."""
    assert not Retry(attempts=10).should_retry(exc, 1)


def test_non_retryable_exceptions_are_not_retried() -> None:
    """An exception listed as non-retryable, or a subclass of one, is not retried; others are."""
    policy = Retry(attempts=5, non_retryable=(LookupError, TypeError))
    assert not policy.should_retry(KeyError("k"), 1)
    assert not policy.should_retry(TypeError("t"), 1)
    assert policy.should_retry(ValueError("v"), 1)


def test_non_retryable_accepts_a_single_class() -> None:
    """non_retryable may be given as one exception class instead of a tuple."""
    assert Retry(non_retryable=KeyError).non_retryable == (KeyError,)


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts counts runs, the first included, so it must be >= 1, got 0"),
        ({"attempts": -3}, "must be >= 1, got -3"),
        ({"attempts": 2.5}, "attempts must be an int, got 2.5"),
        ({"attempts": True}, "attempts must be an int, got True"),
        ({"base": 0}, "base must be a number of seconds > 0, got 0"),
        ({"base": -1.0}, "base must be a number of seconds > 0, got -1.0"),
        ({"base": "1"}, "base must be a number of seconds > 0, got '1'"),
        ({"base": float("nan")}, "base must be a finite number of seconds, got nan"),
        ({"base": float("inf")}, "base must be a finite number of seconds, got inf"),
        ({"cap": 0}, "cap must be a number of seconds > 0, got 0"),
        ({"cap": float("nan")}, "cap must be a finite number of seconds, got nan"),
        ({"factor": 0.5}, "factor must be >= 1, got 0.5"),
        ({"factor": float("inf")}, "factor must be finite, got inf"),
        ({"jitter": "yes"}, "jitter must be True or False, got 'yes'"),
        ({"non_retryable": [KeyError, 42]}, "non_retryable must list exception classes, got 42"),
        ({"non_retryable": "KeyError"}, "non_retryable must list exception classes, got 'KeyError'"),
    ],
)
def test_invalid_retry_raises_invalid_job_error(options: dict[str, Any], message: str) -> None:
    """An invalid Retry gives InvalidJobError naming the field, the rule and the value."""
    with pytest.raises(InvalidJobError) as info:
        Retry(**options)
    assert message in str(info.value)
