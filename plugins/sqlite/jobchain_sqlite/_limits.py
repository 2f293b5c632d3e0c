"""Rate and concurrency limits in SQLite: two small tables, each call one ``BEGIN IMMEDIATE`` transaction.

``rate_limits``: a row per ``(key, window)`` holding the window's GCRA
theoretical arrival time (:func:`jobchain.limits.gcra_take`); ``limit_slots``:
a row per held slot ``(key, holder)`` with the time it is held until on the
backend's clock. The write lock of SQLite makes each call atomic across the
processes sharing the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence

from jobchain.capabilities import ConcurrencyLimits, RateLimits
from jobchain.clock import Clock
from jobchain.limits import Window, gcra_take, window_name

__all__ = ["LIMIT_TABLES", "SqliteLimits"]

LIMIT_TABLES = (
    "CREATE TABLE IF NOT EXISTS rate_limits (key TEXT NOT NULL, window TEXT NOT NULL, tat REAL NOT NULL, "
    "PRIMARY KEY (key, window))",
    "CREATE TABLE IF NOT EXISTS limit_slots (key TEXT NOT NULL, holder TEXT NOT NULL, until REAL NOT NULL, "
    "PRIMARY KEY (key, holder))",
)


class SqliteLimits(RateLimits, ConcurrencyLimits):
    """The limits of :class:`~jobchain_sqlite.SqliteBackend` (a mixin of it)."""

    clock: Clock

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def take_tokens(
        self, key: str, windows: Sequence[Window], count: int = 1, *, max_wait: float = 0.0
    ) -> float:
        names = [window_name(w) for w in windows]
        with self._write() as conn:
            now = self.clock.now()
            marks = ",".join("?" * len(names))
            rows = conn.execute(
                f"SELECT window, tat FROM rate_limits WHERE key = ? AND window IN ({marks})", (key, *names)
            )
            wait, state = gcra_take(dict(rows), windows, now, count, max_wait)
            if state is not None:
                conn.executemany(
                    "INSERT OR REPLACE INTO rate_limits (key, window, tat) VALUES (?, ?, ?)",
                    [(key, name, tat) for name, tat in state.items()],
                )
            return wait

    def acquire_slot(self, key: str, limit: int, holder: str, ttl: float) -> bool:
        with self._write() as conn:
            now = self.clock.now()
            conn.execute("DELETE FROM limit_slots WHERE key = ? AND until <= ?", (key, now))
            mine = conn.execute("SELECT 1 FROM limit_slots WHERE key = ? AND holder = ?", (key, holder))
            if mine.fetchone() is None:
                (held,) = conn.execute("SELECT COUNT(*) FROM limit_slots WHERE key = ?", (key,)).fetchone()
                if held >= limit:
                    return False
            conn.execute(
                "INSERT OR REPLACE INTO limit_slots (key, holder, until) VALUES (?, ?, ?)",
                (key, holder, now + ttl),
            )
            return True

    def extend_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> list[bool]:
        out: list[bool] = []
        with self._write() as conn:
            now = self.clock.now()
            for key, holder in slots:
                cursor = conn.execute(
                    "UPDATE limit_slots SET until = ? WHERE key = ? AND holder = ? AND until > ?",
                    (now + ttl, key, holder, now),
                )
                out.append(cursor.rowcount > 0)
        return out

    def release_slot(self, key: str, holder: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM limit_slots WHERE key = ? AND holder = ?", (key, holder))

    def slots_held(self, key: str) -> int:
        with self._write() as conn:
            (held,) = conn.execute(
                "SELECT COUNT(*) FROM limit_slots WHERE key = ? AND until > ?", (key, self.clock.now())
            ).fetchone()
            return int(held)
