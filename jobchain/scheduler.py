"""The scheduler: submits each due slot of an app's schedules, as many times as it likes, once in effect.

Any number of schedulers may run (``jobchain scheduler``, or a thread of
``jobchain worker --schedules``). Each :meth:`Scheduler.tick` reads the
backend's clock and every schedule's state
(:class:`~jobchain.capabilities.ScheduleSlots`), submits the due slots under
their :func:`~jobchain.schedules.slot_id` (a second submit of an id stores
nothing) and marks the latest one. :meth:`Scheduler.run` ticks at each next
slot, at least every ``poll`` seconds (so a pause is seen within that time),
until its stop event is set.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from attrs import frozen

from jobchain.capabilities import ScheduleSlots, ScheduleState, require
from jobchain.errors import JobchainError
from jobchain.schedules import Schedule, slot_id

if TYPE_CHECKING:
    from jobchain.app import App

__all__ = ["ScheduleInfo", "Scheduler", "describe"]

logger = structlog.get_logger("jobchain.scheduler")


class Scheduler:
    """Submits the due slots of ``app``'s schedules (all of them, or those named)."""

    def __init__(
        self,
        app: App,
        names: Sequence[str] | None = None,
        *,
        poll: float = 1.0,
        clock_offset: float = 0.0,
    ) -> None:
        self.app = app
        self.slots = require(app.backend, ScheduleSlots)
        chosen = app.schedules if names is None else {n: app.get_schedule(n) for n in names}
        self.schedules: list[Schedule] = list(chosen.values())
        self.poll = poll
        #: added to the backend's clock: a skewed scheduler, for tests only
        self.clock_offset = clock_offset
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        """The time slots are judged by: the backend's clock (plus the test-only offset)."""
        return self.app.backend.now() + self.clock_offset

    def tick(self) -> list[str]:
        """Submit every due slot now; the ids submitted (stored now or by another scheduler before)."""
        if not self.schedules:
            return []
        now = self.now()
        states = self.slots.schedule_states([s.name for s in self.schedules])
        submitted: list[str] = []
        for schedule, state in zip(self.schedules, states, strict=True):
            if state.paused:
                continue
            due = schedule.due(now, state.last_slot)
            for slot in due:
                submitted.append(self._submit(schedule, slot))
            if due:
                self.slots.mark_slot(schedule.name, due[-1], submitted[-1])
        return submitted

    def _submit(self, schedule: Schedule, slot: float) -> str:
        job_id = slot_id(schedule.name, slot)
        self.app.submit_as(job_id, schedule.target, *schedule.args, **schedule.kwargs)
        logger.info("slot_submitted", schedule=schedule.name, slot=slot, id=job_id)
        return job_id

    def next_wake(self, now: float) -> float:
        """Seconds to sleep from ``now``: until the next slot of any schedule, at most ``poll``."""
        upcoming = min((s.next_after(now) for s in self.schedules), default=now + self.poll)
        return max(0.0, min(self.poll, upcoming - now))

    def run(self) -> None:
        """Tick until :attr:`stop_event` is set; a backend error is logged and retried next time."""
        while not self.stop_event.is_set():
            try:
                self.tick()
                wait = self.next_wake(self.now())
            except JobchainError:
                logger.warning("scheduler_tick_failed", exc_info=True)
                wait = self.poll
            self.stop_event.wait(wait + 0.001)

    def start(self) -> None:
        """Run in a daemon thread (``jobchain worker --schedules``)."""
        self._thread = threading.Thread(target=self.run, name="jobchain-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the loop to stop and wait for its thread, if :meth:`start` made one."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)


@frozen(kw_only=True)
class ScheduleInfo:
    """One line of ``jobchain schedules list``."""

    name: str
    spec: str
    target: str
    paused: bool
    next_run: float | None
    last_run: float | None
    last_id: str | None
    last_outcome: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "target": self.target,
            "paused": self.paused,
            "next_run": self.next_run,
            "last_run": self.last_run,
            "last_id": self.last_id,
            "last_outcome": self.last_outcome,
        }


def describe(app: App) -> list[ScheduleInfo]:
    """Each schedule of ``app`` with its next and last run and the last run's outcome (its job's state)."""
    slots = require(app.backend, ScheduleSlots)
    schedules = list(app.schedules.values())
    now = app.backend.now()
    states = slots.schedule_states([s.name for s in schedules])
    return [_info(app, schedule, state, now) for schedule, state in zip(schedules, states, strict=True)]


def _info(app: App, schedule: Schedule, state: ScheduleState, now: float) -> ScheduleInfo:
    outcome = None
    if state.last_job is not None:
        handle = app.chain(state.last_job) if schedule.is_chain else app.job(state.last_job)
        outcome = handle.status()
    return ScheduleInfo(
        name=schedule.name,
        spec=schedule.spec,
        target=_target_name(schedule.target),
        paused=state.paused,
        next_run=None if state.paused else schedule.next_after(now),
        last_run=state.last_slot,
        last_id=state.last_job,
        last_outcome=outcome,
    )


def _target_name(target: Any) -> str:
    name = getattr(target, "name", None)
    return str(name) if name else repr(target)
