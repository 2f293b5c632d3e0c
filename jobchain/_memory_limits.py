"""Rate and concurrency limits of the memory backend: two dicts under a lock of their own."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from jobchain.capabilities import ConcurrencyLimits, RateLimits
from jobchain.clock import Clock
from jobchain.limits import Window, gcra_take, live_slots

__all__ = ["MemoryLimits"]


class MemoryLimits(RateLimits, ConcurrencyLimits):
    """:class:`RateLimits` and :class:`ConcurrencyLimits` in one process (the backend's ``clock``)."""

    clock: Clock

    def _limits_state(
        self,
    ) -> tuple[threading.Lock, dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        state = self.__dict__.get("_limits")
        if state is None:
            state = self.__dict__.setdefault("_limits", (threading.Lock(), {}, {}))
        return state  # type: ignore[no-any-return]

    def take_tokens(
        self, key: str, windows: Sequence[Window], count: int = 1, *, max_wait: float = 0.0
    ) -> float:
        lock, rates, _ = self._limits_state()
        with lock:
            wait, state = gcra_take(rates.get(key, {}), windows, self.clock.now(), count, max_wait)
            if state is not None:
                rates[key] = state
            return wait

    def acquire_slot(self, key: str, limit: int, holder: str, ttl: float) -> bool:
        lock, _, slots = self._limits_state()
        with lock:
            now = self.clock.now()
            held = slots[key] = live_slots(slots.get(key, {}), now)
            if holder not in held and len(held) >= limit:
                return False
            held[holder] = now + ttl
            return True

    def extend_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> list[bool]:
        lock, _, table = self._limits_state()
        out: list[bool] = []
        with lock:
            now = self.clock.now()
            for key, holder in slots:
                held = table.get(key, {})
                alive = held.get(holder, now) > now
                if alive:
                    held[holder] = now + ttl
                out.append(alive)
        return out

    def release_slot(self, key: str, holder: str) -> None:
        lock, _, slots = self._limits_state()
        with lock:
            slots.get(key, {}).pop(holder, None)

    def slots_held(self, key: str) -> int:
        lock, _, slots = self._limits_state()
        with lock:
            return len(live_slots(slots.get(key, {}), self.clock.now()))
