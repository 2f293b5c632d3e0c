"""Paused queues of the Redis backends: a set key, read at most every :data:`PAUSED_REFRESH` seconds.

``pause``/``resume`` write the set ``{p}:paused`` (the application's tag, like
the queue list, in both layouts). The reserve loop and the hand-off ask
:meth:`PausedQueues.serving` which of their queues to serve: it answers from
a copy of the set that is re-read at most every :data:`PAUSED_REFRESH`
seconds, so the hot path costs no round trip per reservation, and a pause by
any process is honoured within that time plus one look (well under a second).
A pause or resume through this instance refreshes its copy at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from jobchain_redis._store import Store

__all__ = ["PAUSED_REFRESH", "PausedQueues"]

#: seconds a copy of the paused set is used before it is read again
PAUSED_REFRESH = 0.5


class PausedQueues:
    """The ``Pause`` capability over one Redis set, with a short-lived copy for the hot path."""

    def __init__(self, store: Store, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._copy: frozenset[str] = frozenset()
        self._read_at: float | None = None  # None: never read, or dropped by a pause or resume

    def pause(self, queues: Sequence[str]) -> None:
        if queues:
            self.store.client.sadd(self.store.keys.paused, *queues)
        self._forget()

    def resume(self, queues: Sequence[str]) -> None:
        if queues:
            self.store.client.srem(self.store.keys.paused, *queues)
        self._forget()

    def paused(self) -> list[str]:
        return sorted(self.store.client.smembers(self.store.keys.paused))

    def current(self) -> frozenset[str]:
        """The paused queues as of at most :data:`PAUSED_REFRESH` seconds ago (a read when older)."""
        now = self.monotonic()
        with self._lock:
            if self._read_at is not None and now - self._read_at < PAUSED_REFRESH:
                return self._copy
        fresh = frozenset(self.store.client.smembers(self.store.keys.paused))
        with self._lock:
            self._copy, self._read_at = fresh, now
        return fresh

    def serving(self, queues: Sequence[str]) -> list[str]:
        """``queues`` less the paused ones, in their order."""
        paused = self.current()
        if not paused:
            return list(queues)
        return [q for q in queues if q not in paused]

    def handing_off(self, queues: Sequence[str]) -> list[str]:
        """The queues a settlement may hand a next step off to: none when the paused set cannot be read.

        A failed read must not fail the settlement itself: it then settles
        without a hand-off, and the next steps are reserved as usual.
        """
        try:
            return self.serving(queues)
        except redis.RedisError:
            return []

    def _forget(self) -> None:
        with self._lock:
            self._read_at = None
