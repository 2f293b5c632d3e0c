"""Schedules: what the backend keeps per schedule, and one job per slot whatever the schedulers do."""

from __future__ import annotations

from typing import Any, cast

import pytest

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.capabilities import ScheduleSlots, supports
from jobchain.clock import ManualClock
from jobchain.scheduler import Scheduler
from jobchain.schedules import slot_id
from jobchain.testing.suite._base import ConformanceBase, ScheduleBackend

__all__ = ["ScheduleRules", "ScheduleRuns", "ScheduleStates"]

#: a slot boundary of every=60 (the ManualClock starts at 1_700_000_000, 20 s past one)
_MINUTE = 1_700_000_040.0


class ScheduleRules(ConformanceBase):
    """Base of the schedule rules: skipped for a backend that does not declare ScheduleSlots."""

    @pytest.fixture
    def scheduling(self, backend: Backend) -> ScheduleBackend:
        """The backend under test, which declares ScheduleSlots; the rule is skipped for one that does not."""
        if not supports(backend, ScheduleSlots):
            pytest.skip(f"{type(backend).__name__} does not declare ScheduleSlots")
        return cast(ScheduleBackend, backend)

    @pytest.fixture
    def ticking(self, scheduling: ScheduleBackend, app: App, clock: ManualClock) -> App:
        """The App over the backend, with a task ``tick(n)`` scheduled ``every=60`` as ``tick``."""

        @app.task(name="tick")
        def tick(n: int) -> int:
            return n

        app.schedule("tick", tick, every=60, args=(7,))
        clock.set(_MINUTE)
        return app


def _jobs(app: App, slots: list[float]) -> list[Any]:
    return [app.backend.get_job(slot_id("tick", slot)) for slot in slots]


class ScheduleStates(ScheduleRules):
    """``mark_slot`` keeps the latest slot; the paused flag is kept beside it; unknown names are empty."""

    def test_an_unknown_schedule_has_no_slot(self, scheduling: ScheduleBackend) -> None:
        """A schedule never marked has no slot, no job and is not paused."""
        [state] = scheduling.schedule_states(["never"])
        assert (state.name, state.last_slot, state.last_job, state.paused) == ("never", None, None, False)

    def test_the_latest_slot_wins(self, scheduling: ScheduleBackend) -> None:
        """A later slot replaces the record; an earlier or equal one changes nothing."""
        scheduling.mark_slot("s", 120.0, "j120")
        scheduling.mark_slot("s", 60.0, "j60")
        scheduling.mark_slot("s", 120.0, "again")
        [state] = scheduling.schedule_states(["s"])
        assert (state.last_slot, state.last_job) == (120.0, "j120")
        scheduling.mark_slot("s", 180.5, "j180")
        assert scheduling.schedule_states(["s"])[0].last_slot == 180.5

    def test_states_come_in_the_order_asked(self, scheduling: ScheduleBackend) -> None:
        """Several names: one state each, in the order given."""
        scheduling.mark_slot("b", 1.0, "jb")
        assert [s.name for s in scheduling.schedule_states(["b", "a", "c"])] == ["b", "a", "c"]
        assert [s.last_job for s in scheduling.schedule_states(["a", "b"])] == [None, "jb"]

    def test_pause_and_resume_keep_the_slot(self, scheduling: ScheduleBackend) -> None:
        """Pausing and resuming flip the flag only; a mark while paused keeps it paused."""
        scheduling.mark_slot("s", 60.0, "j60")
        scheduling.pause_schedule("s")
        scheduling.pause_schedule("s")
        scheduling.mark_slot("s", 120.0, "j120")
        [state] = scheduling.schedule_states(["s"])
        assert (state.paused, state.last_slot, state.last_job) == (True, 120.0, "j120")
        scheduling.resume_schedule("s")
        scheduling.resume_schedule("s")
        assert scheduling.schedule_states(["s"])[0].paused is False
        scheduling.pause_schedule("fresh")
        assert scheduling.schedule_states(["fresh"])[0].paused is True


class ScheduleRuns(ScheduleRules):
    """Schedulers over the backend: one job per slot, missed-slot policies, pause."""

    def test_each_slot_is_one_job_whatever_the_schedulers(self, ticking: App, clock: ManualClock) -> None:
        """Three schedulers, one of them skewed, ticking over ten slots: one job per slot, none missing."""
        schedulers = [Scheduler(ticking), Scheduler(ticking), Scheduler(ticking, clock_offset=0.5)]
        slots = [_MINUTE + 60 * k for k in range(10)]
        for _ in slots:
            for scheduler in schedulers:
                scheduler.tick()
                clock.advance(0.2)
            clock.advance(60 - 0.6)
        records = _jobs(ticking, slots)
        assert all(r is not None and r.job.args == (7,) for r in records)
        stats = {s.queue: s for s in ticking.stats()}
        assert stats["default"].ready == len(slots)

    def test_latest_runs_the_latest_missed_slot_once(self, ticking: App, clock: ManualClock) -> None:
        """After downtime the default policy submits only the latest slot."""
        scheduler = Scheduler(ticking)
        scheduler.tick()
        clock.advance(60 * 5 + 10)
        assert scheduler.tick() == [slot_id("tick", _MINUTE + 300)]
        assert scheduler.tick() == []

    def test_all_runs_every_missed_slot_up_to_the_cap(
        self, scheduling: ScheduleBackend, app: App, clock: ManualClock
    ) -> None:
        """missed="all" submits each missed slot, oldest first, at most max_missed of them."""

        @app.task(name="tick")
        def tick() -> None: ...

        app.schedule("tick", tick, every=60, missed="all", max_missed=3)
        clock.set(_MINUTE)
        scheduler = Scheduler(app)
        scheduler.tick()
        clock.advance(60 * 2)
        assert scheduler.tick() == [slot_id("tick", _MINUTE + 60), slot_id("tick", _MINUTE + 120)]
        clock.advance(60 * 10)
        assert scheduler.tick() == [slot_id("tick", _MINUTE + 120 + 60 * k) for k in (8, 9, 10)]

    def test_skip_runs_no_missed_slot(
        self, scheduling: ScheduleBackend, app: App, clock: ManualClock
    ) -> None:
        """missed="skip" submits nothing after downtime, then the next slot on time."""

        @app.task(name="tick")
        def tick() -> None: ...

        app.schedule("tick", tick, every=600, missed="skip", grace=30)
        clock.set(1_700_001_010.0)  # 10 s after a slot of the 600 s grid: on time
        scheduler = Scheduler(app)
        assert len(scheduler.tick()) == 1
        clock.advance(600 * 3 + 100)
        assert scheduler.tick() == []
        clock.advance(500)
        assert len(scheduler.tick()) == 1

    def test_a_paused_schedule_submits_nothing(
        self, ticking: App, scheduling: ScheduleBackend, clock: ManualClock
    ) -> None:
        """While paused no slot is submitted; on resume the latest missed slot runs (the default policy)."""
        scheduler = Scheduler(ticking)
        scheduling.pause_schedule("tick")
        assert scheduler.tick() == []
        clock.advance(180)
        assert scheduler.tick() == []
        scheduling.resume_schedule("tick")
        assert scheduler.tick() == [slot_id("tick", _MINUTE + 180)]

    def test_a_chain_is_one_chain_per_slot(
        self, scheduling: ScheduleBackend, app: App, clock: ManualClock
    ) -> None:
        """A scheduled chain: the slot id is the chain's id, stored once."""

        @app.task(name="one")
        def one() -> int:
            return 1

        @app.task(name="inc")
        def inc(n: int) -> int:
            return n + 1

        app.schedule("pipe", one.s() >> inc.s(), every=60)
        clock.set(_MINUTE)
        [chain_id] = Scheduler(app).tick()
        assert Scheduler(app).tick() == []  # another scheduler: the slot is done
        assert app.backend.get_chain(chain_id) is not None
        assert scheduling.schedule_states(["pipe"])[0].last_job == chain_id
