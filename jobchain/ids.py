"""Time-sortable identifiers.

An id is 26 lowercase hex-and-more characters: 12 hex digits of milliseconds
since the epoch, then 14 hex digits that are random for the first id of a
millisecond and count up within it, so ids made by one process sort in the
order they were made and ids from different processes sort by time.
"""

from __future__ import annotations

import os
import random
import threading
import time

__all__ = ["id_time", "new_id"]

_lock = threading.Lock()
_last_ms = 0
_last_tail = 0
_TAIL_BITS = 56
_rng = random.Random(int.from_bytes(os.urandom(16), "big"))


def new_id() -> str:
    """Return a new time-sortable id, unique within and (with overwhelming odds) across processes."""
    global _last_ms, _last_tail
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _last_tail += 1
        else:
            _last_ms = ms
            # leave headroom so counting up within one millisecond never overflows
            _last_tail = _rng.getrandbits(_TAIL_BITS - 8)
        tail = _last_tail
    return f"{ms:012x}{tail:014x}"


def id_time(job_id: str) -> float:
    """Seconds since the epoch at which an id from :func:`new_id` was made."""
    return int(job_id[:12], 16) / 1000.0


def _reseed_after_fork() -> None:
    global _rng, _last_ms, _last_tail
    _rng = random.Random(int.from_bytes(os.urandom(16), "big"))
    _last_ms = 0
    _last_tail = 0


os.register_at_fork(after_in_child=_reseed_after_fork)
