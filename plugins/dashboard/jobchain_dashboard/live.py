"""The live counts every page refreshes: one snapshot per interval, however many browsers watch.

:class:`Snapshots` reads the backend at most once per ``min_interval``
seconds and hands every caller the same copy, so the server-sent events
streams and the polling fallback (``/live.json``) cost the backend the same
whatever the number of open pages.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from jobchain import App
from jobchain.capabilities import Pause, Stats, WorkerRegistry, supports
from jobchain.errors import JobchainError

__all__ = ["Snapshots", "read_counts"]


def read_counts(app: App) -> dict[str, Any]:
    """Counts per queue (ready, delayed, running, failed, paused) and the live workers, as JSON values."""
    backend = app.backend
    queues: dict[str, dict[str, Any]] = {}
    if supports(backend, Stats):
        for row in app.stats():
            queues[row.queue] = {
                "ready": row.ready,
                "delayed": row.delayed,
                "running": row.in_flight,
                "failed": row.failed,
                "paused": False,
            }
    if supports(backend, Pause):
        for queue in app.paused():
            queues.setdefault(queue, {"ready": 0, "delayed": 0, "running": 0, "failed": 0})["paused"] = True
    totals = {
        k: sum(int(q.get(k, 0)) for q in queues.values()) for k in ("ready", "delayed", "running", "failed")
    }
    workers = len(app.workers()) if supports(backend, WorkerRegistry) else None
    return {"at": time.time(), "queues": queues, "totals": totals, "workers": workers, "ok": True}


class Snapshots:
    """The latest counts, read again only when older than ``min_interval`` seconds."""

    def __init__(self, app: App, *, min_interval: float) -> None:
        self._app = app
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._read_at = 0.0

    def get(self) -> dict[str, Any]:
        with self._lock:  # one reader at a time: the others get what it read
            now = time.monotonic()
            if self._latest is None or now - self._read_at >= self._min_interval:
                try:
                    self._latest = read_counts(self._app)
                except (JobchainError, OSError) as exc:
                    kept = dict(self._latest or {"queues": {}, "totals": {}, "workers": None})
                    kept.update(ok=False, error=type(exc).__name__, at=time.time())
                    self._latest = kept
                self._read_at = now
            return self._latest
