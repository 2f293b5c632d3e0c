"""Rate limits and concurrency limits (backends that declare RateLimits, ConcurrencyLimits).

Every rule runs on the injected :class:`~jobchain.clock.ManualClock`: the
backend judges windows and slot lifetimes on its clock, so moving it is
enough (nothing sleeps).
"""

from __future__ import annotations

import threading

import pytest

from jobchain.backend import Backend
from jobchain.capabilities import ConcurrencyLimits, RateLimits
from jobchain.clock import ManualClock
from jobchain.testing.suite._base import ConformanceBase

__all__ = ["ConcurrencyConformance", "RateLimitConformance"]


def _rates(backend: Backend) -> RateLimits:
    if not isinstance(backend, RateLimits):
        pytest.skip(f"{type(backend).__name__} does not declare RateLimits")
    return backend


def _slots(backend: Backend) -> ConcurrencyLimits:
    if not isinstance(backend, ConcurrencyLimits):
        pytest.skip(f"{type(backend).__name__} does not declare ConcurrencyLimits")
    return backend


class RateLimitConformance(ConformanceBase):
    """The rules of :class:`jobchain.capabilities.RateLimits`: GCRA windows shared by every caller."""

    def test_a_full_window_admits_its_tokens_at_once_then_one_per_interval(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        rates = _rates(backend)
        window = [(5, 1.0)]
        assert [rates.take_tokens("k", window) for _ in range(5)] == [0.0] * 5
        wait = rates.take_tokens("k", window)
        assert wait == pytest.approx(0.2, abs=1e-3)
        assert rates.take_tokens("k", window) == pytest.approx(0.2, abs=1e-3)  # nothing was taken
        clock.advance(0.2)
        assert rates.take_tokens("k", window) == 0.0
        assert rates.take_tokens("k", window) == pytest.approx(0.2, abs=1e-3)

    def test_keys_and_windows_are_independent(self, backend: Backend, clock: ManualClock) -> None:
        rates = _rates(backend)
        assert rates.take_tokens("a", [(1, 10.0)]) == 0.0
        assert rates.take_tokens("a", [(1, 10.0)]) == pytest.approx(10.0, abs=1e-3)
        assert rates.take_tokens("b", [(1, 10.0)]) == 0.0
        assert rates.take_tokens("a", [(2, 10.0)]) == 0.0  # another window of the same key: its own state

    def test_every_window_must_admit(self, backend: Backend, clock: ManualClock) -> None:
        """``10/s;3/m``: three at once, then the minute window holds the fourth for 20 s."""
        rates = _rates(backend)
        windows = [(10, 1.0), (3, 60.0)]
        assert [rates.take_tokens("k", windows) for _ in range(3)] == [0.0] * 3
        assert rates.take_tokens("k", windows) == pytest.approx(20.0, abs=1e-3)
        clock.advance(20.0)
        assert rates.take_tokens("k", windows) == 0.0

    def test_max_wait_reserves_a_later_turn_in_order(self, backend: Backend, clock: ManualClock) -> None:
        """Within ``max_wait`` tokens are taken for a later time: each caller's turn follows the last."""
        rates = _rates(backend)
        window = [(1, 1.0)]
        assert rates.take_tokens("k", window, max_wait=5.0) == 0.0
        assert rates.take_tokens("k", window, max_wait=5.0) == pytest.approx(1.0, abs=1e-3)
        assert rates.take_tokens("k", window, max_wait=5.0) == pytest.approx(2.0, abs=1e-3)
        assert rates.take_tokens("k", window, max_wait=0.5) == pytest.approx(
            3.0, abs=1e-3
        )  # too far: not taken
        clock.advance(3.0)
        assert rates.take_tokens("k", window) == 0.0

    def test_count_takes_several_tokens(self, backend: Backend, clock: ManualClock) -> None:
        rates = _rates(backend)
        assert rates.take_tokens("k", [(4, 4.0)], count=3) == 0.0
        assert rates.take_tokens("k", [(4, 4.0)], count=2) == pytest.approx(1.0, abs=1e-3)
        with pytest.raises(ValueError, match="never"):
            rates.take_tokens("k", [(4, 4.0)], count=5)

    def test_concurrent_callers_never_exceed_the_window(self, backend: Backend, clock: ManualClock) -> None:
        """Eight threads take 40 times from a window of 10: exactly 10 are admitted."""
        rates = _rates(backend)
        admitted: list[float] = []
        lock = threading.Lock()

        def take() -> None:
            for _ in range(5):
                wait = rates.take_tokens("busy", [(10, 60.0)])
                if wait == 0.0:
                    with lock:
                        admitted.append(wait)

        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(admitted) == 10


class ConcurrencyConformance(ConformanceBase):
    """The rules of :class:`jobchain.capabilities.ConcurrencyLimits`: lease-bound slots shared by all."""

    def test_at_most_limit_holders(self, backend: Backend, clock: ManualClock) -> None:
        slots = _slots(backend)
        assert slots.acquire_slot("k", 2, "a", 30.0)
        assert slots.acquire_slot("k", 2, "b", 30.0)
        assert not slots.acquire_slot("k", 2, "c", 30.0)
        assert slots.acquire_slot("k", 2, "a", 30.0)  # a holder keeps its slot
        assert slots.acquire_slot("other", 2, "c", 30.0)
        assert slots.slots_held("k") == 2
        slots.release_slot("k", "a")
        slots.release_slot("k", "nobody")
        assert slots.slots_held("k") == 1
        assert slots.acquire_slot("k", 2, "c", 30.0)

    def test_a_slot_frees_when_its_ttl_runs_out(self, backend: Backend, clock: ManualClock) -> None:
        """The slot of a worker that died frees when its lease would have ended."""
        slots = _slots(backend)
        assert slots.acquire_slot("k", 1, "dead", 10.0)
        clock.advance(9.0)
        assert not slots.acquire_slot("k", 1, "b", 10.0)
        clock.advance(1.5)
        assert slots.slots_held("k") == 0
        assert slots.acquire_slot("k", 1, "b", 10.0)

    def test_extend_renews_live_slots_only(self, backend: Backend, clock: ManualClock) -> None:
        slots = _slots(backend)
        assert slots.acquire_slot("k", 1, "a", 10.0)
        assert slots.acquire_slot("j", 1, "b", 10.0)
        clock.advance(8.0)
        assert slots.extend_slots([("k", "a"), ("k", "ghost")], 10.0) == [True, False]
        clock.advance(8.0)  # a renewed: held until 18; b ran out at 10
        assert slots.extend_slots([("j", "b")], 10.0) == [False]
        assert not slots.acquire_slot("k", 1, "c", 10.0)
        assert slots.acquire_slot("j", 1, "c", 10.0)

    def test_concurrent_acquires_never_exceed_the_limit(self, backend: Backend, clock: ManualClock) -> None:
        slots = _slots(backend)
        won: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def acquire(name: str) -> None:
            barrier.wait(10)
            if slots.acquire_slot("busy", 3, name, 30.0):
                with lock:
                    won.append(name)

        threads = [threading.Thread(target=acquire, args=(f"h{i}",)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(won) == 3
        assert slots.slots_held("busy") == 3
