"""The memory backend's :class:`~jobchain.capabilities.ScheduleSlots`: a dict of states under a lock."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from attrs import evolve

from jobchain.capabilities import ScheduleSlots, ScheduleState

__all__ = ["MemorySchedules"]


class MemorySchedules(ScheduleSlots):
    """Each schedule's latest slot and paused flag, held in this process."""

    _schedules: dict[str, ScheduleState]
    _schedules_lock: threading.Lock

    def _init_schedules(self) -> None:
        self._schedules = {}
        self._schedules_lock = threading.Lock()

    def mark_slot(self, schedule: str, slot: float, job_id: str) -> None:
        with self._schedules_lock:
            held = self._schedules.get(schedule, ScheduleState(name=schedule))
            if held.last_slot is None or slot > held.last_slot:
                self._schedules[schedule] = evolve(held, last_slot=float(slot), last_job=job_id)

    def schedule_states(self, names: Sequence[str]) -> list[ScheduleState]:
        with self._schedules_lock:
            return [self._schedules.get(name, ScheduleState(name=name)) for name in names]

    def pause_schedule(self, name: str) -> None:
        self._set_paused(name, True)

    def resume_schedule(self, name: str) -> None:
        self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> None:
        with self._schedules_lock:
            held = self._schedules.get(name, ScheduleState(name=name))
            self._schedules[name] = evolve(held, paused=paused)
