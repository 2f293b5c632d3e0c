"""Schedule slots in Redis: one hash of latest slots and one set of paused schedules, in the app's tag.

``{p}:schedules`` maps a schedule's name to ``{"slot": S, "job": ID}`` (JSON);
``{p}:schedules:paused`` holds the paused names. Both carry the application's
hash tag, so on a Cluster they live in one slot and a mark is one
WATCH/MULTI/EXEC there: the record changes only if the slot is later than
the one stored (schedulers racing on one slot, or one marking late, leave the
latest). Schedulers touch these keys once per tick, never on the job path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobchain.capabilities import ScheduleState

if TYPE_CHECKING:
    from jobchain_redis._store import Store
    from jobchain_redis.connection import Transaction

__all__ = ["Schedules"]


class Schedules:
    """The ``ScheduleSlots`` capability of both Redis layouts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys

    def mark_slot(self, schedule: str, slot: float, job_id: str) -> None:
        key = self.keys.schedules
        value = json.dumps({"slot": float(slot), "job": job_id})

        def body(tx: Transaction) -> None:
            tx.watch(key)
            [held] = tx.read(lambda r: [r.hget(key, schedule)])
            pipe = tx.multi()
            if held is None or _slot(held) < slot:
                pipe.hset(key, schedule, value)

        self.store.transact(body, on=key)

    def schedule_states(self, names: Sequence[str]) -> list[ScheduleState]:
        if not names:
            return []
        client = self.store.client
        held = client.hmget(self.keys.schedules, list(names))
        paused = client.smismember(self.keys.schedules_paused, list(names))
        states = []
        for name, raw, stopped in zip(names, held, paused, strict=True):
            record = json.loads(raw) if raw is not None else {}
            states.append(
                ScheduleState(
                    name=name,
                    last_slot=None if raw is None else float(record["slot"]),
                    last_job=record.get("job"),
                    paused=bool(stopped),
                )
            )
        return states

    def pause_schedule(self, name: str) -> None:
        self.store.client.sadd(self.keys.schedules_paused, name)

    def resume_schedule(self, name: str) -> None:
        self.store.client.srem(self.keys.schedules_paused, name)


def _slot(raw: str) -> float:
    try:
        return float(json.loads(raw)["slot"])
    except (ValueError, KeyError, TypeError):
        return float("-inf")  # an unreadable record is replaced
