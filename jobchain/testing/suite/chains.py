"""Chains and groups: atomic advance, halting with later steps not executed, fan-out and fan-in."""

from __future__ import annotations

from typing import Any

from jobchain.app import App, Task
from jobchain.backend import Backend
from jobchain.canvas import chain, group
from jobchain.clock import ManualClock
from jobchain.model import ChainRecord, ChainRef, ChainState, Completed, JobState, StepState
from jobchain.testing.helpers import (
    completed,
    failed,
    released,
    reserve,
    reserve_one,
    retried,
)
from jobchain.testing.suite._base import ConformanceBase

__all__ = ["AtomicChainAdvance", "ChainHalting", "Groups", "NextStepHandOff", "declare_tasks", "get_chain"]


def _anything(*args: Any, **kwargs: Any) -> Any:
    return args[0] if args else None


def declare_tasks(app: App, *names: str) -> list[Task[..., Any]]:
    """Declare tasks that take any arguments: enough to build chains that a test then drives by hand."""
    return [app.task(name=name)(_anything) for name in names]


def get_chain(backend: Backend, chain_id: str) -> ChainRecord:
    """The chain record, which must exist."""
    record = backend.get_chain(chain_id)
    assert record is not None, f"the backend has no record of chain {chain_id}"
    return record


class AtomicChainAdvance(ConformanceBase):
    """Completing a step stores its result and enqueues the next step in one transition."""

    def test_completion_and_next_step_are_one_transition(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """When settle returns, the step has succeeded, the record shows it and the next step is ready."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        head = reserve_one(backend)
        backend.settle([completed(head, "body", clock=clock)])
        record = backend.get_job(head.job.id)
        assert record is not None
        assert (record.state, record.result) == (JobState.SUCCEEDED, "body")
        step = get_chain(backend, handle.id).steps[0]
        assert (step.state, step.result) == (StepState.COMPLETED, "body")
        following = backend.get_job(handle.job_ids()[1][0])
        assert following is not None
        assert following.state is JobState.QUEUED

    def test_next_step_gets_the_previous_result_first(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """The next step's job takes the previous step's result as its first argument."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        head = reserve_one(backend)
        assert (head.job.task, head.job.args) == ("fetch", ("url",))
        backend.settle([completed(head, {"body": "<html>"}, clock=clock)])
        following = reserve_one(backend).job
        assert (following.task, following.args) == ("parse", ({"body": "<html>"},))
        assert following.chain == ChainRef(chain_id=handle.id, step=1, member=0)

    def test_bound_arguments_follow_the_previous_result(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """A step's own bound arguments come after the previous result."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse.s("utf-8", strict=True)).submit("url")
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        following = reserve_one(backend).job
        assert (following.args, dict(following.kwargs)) == (("body", "utf-8"), {"strict": True})

    def test_immutable_step_ignores_the_previous_result(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """An immutable step runs with its own arguments only."""
        fetch, notify = declare_tasks(app, "fetch", "notify")
        chain(fetch, notify.si("done")).submit("url")
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        assert reserve_one(backend).job.args == ("done",)

    def test_step_timings_are_recorded(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """A completed step's member records when its job started and finished."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        delivery = reserve_one(backend)
        started = clock.advance(1.0)
        finished = clock.advance(3.0)
        backend.settle(
            [Completed(delivery=delivery, result="body", started_at=started, finished_at=finished)]
        )
        member = get_chain(backend, handle.id).steps[0].members[0]
        assert (member.started_at, member.finished_at) == (started, finished)

    def test_last_step_completes_the_chain(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """Completing the last step marks the chain completed with that step's result."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        [result] = backend.settle([completed(reserve_one(backend), {"title": "t"}, clock=clock)])
        assert result.chain is not None
        assert result.chain.state is ChainState.COMPLETED
        record = get_chain(backend, handle.id)
        assert (record.state, record.result) == (ChainState.COMPLETED, {"title": "t"})

    def test_stale_completion_does_not_enqueue_the_next_step(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """A rejected stale completion enqueues nothing, so the next step runs once."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        stale = reserve_one(backend, lease=5.0, worker="w-1")
        clock.advance(6.0)
        current = reserve_one(backend, worker="w-2")
        backend.settle([completed(stale, "stale body", clock=clock)])
        assert reserve(backend) == []
        backend.settle([completed(current, "body", clock=clock)])
        assert [(d.job.task, d.job.args) for d in reserve(backend)] == [("parse", ("body",))]

    def test_retried_step_does_not_halt_the_chain(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """A step that is retried leaves the chain unfinished, and its next attempt advances it."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        backend.settle([retried(reserve_one(backend), 0.0, clock=clock)])
        # a retry does not write the chain record: it stays pending (no settlement finished a member yet)
        assert get_chain(backend, handle.id).state is ChainState.PENDING
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        assert reserve_one(backend).job.task == "parse"

    def test_a_chain_is_pending_until_it_starts(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """Submitted, a chain is ``pending``; its handle says ``running`` once a job of it is in flight,
        and the record is ``running`` once a settlement has finished a member and more steps remain."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        assert get_chain(backend, handle.id).state is ChainState.PENDING
        assert handle.status() == ChainState.PENDING.value
        head = reserve_one(backend)
        assert handle.status() == ChainState.RUNNING.value
        shown = handle.record()
        assert shown is not None
        assert (shown.state, shown.steps[0].state) == (ChainState.RUNNING, StepState.RUNNING)
        backend.settle([completed(head, "body", clock=clock)])
        assert get_chain(backend, handle.id).state is ChainState.RUNNING
        assert handle.status() == ChainState.RUNNING.value

    def test_chain_record_is_found_by_id(self, app: App, backend: Backend) -> None:
        """``get_chain`` returns the record of a submitted chain, with its name and steps, or None."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse, name="ingest").submit("url")
        record = get_chain(backend, handle.id)
        assert (record.id, record.name, record.state) == (handle.id, "ingest", ChainState.PENDING)
        assert [s.label for s in record.steps] == ["fetch", "parse"]
        assert backend.get_chain("no-such-chain") is None


class ChainHalting(ConformanceBase):
    """A permanent failure halts the chain: later steps are ``not_executed`` and never enqueued."""

    def _halt(self, app: App, backend: Backend, clock: ManualClock) -> tuple[str, list[list[str]]]:
        fetch, parse, store = declare_tasks(app, "fetch", "parse", "store")
        handle = chain(fetch, parse, store).submit("url")
        backend.settle([completed(reserve_one(backend), "body", clock=clock)])
        backend.settle([failed(reserve_one(backend), "bad markup", clock=clock, error_type="ValueError")])
        return handle.id, handle.job_ids()

    def test_permanent_failure_halts_the_chain(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """A failed step halts its chain and the record renders the later steps not executed."""
        chain_id, _ = self._halt(app, backend, clock)
        record = get_chain(backend, chain_id)
        assert record.state is ChainState.HALTED
        assert record.render() == "fetch (succeeded) -> parse (failed) -> store (not executed)"

    def test_failure_settlement_reports_the_halted_chain(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """The settle call that halts a chain returns the halted chain record."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        [result] = backend.settle([failed(reserve_one(backend), clock=clock)])
        assert result.chain is not None
        assert (result.chain.id, result.chain.state) == (handle.id, ChainState.HALTED)

    def test_later_steps_are_never_enqueued(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """After a halt, no job of a later step exists or is ready."""
        _, job_ids = self._halt(app, backend, clock)
        assert reserve(backend) == []
        assert backend.get_job(job_ids[2][0]) is None

    def test_failed_step_keeps_its_error(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """The failed step's member in the chain record carries the error."""
        chain_id, _ = self._halt(app, backend, clock)
        member = get_chain(backend, chain_id).steps[1].members[0]
        assert member.error is not None
        assert (member.error.type, member.error.message) == ("ValueError", "bad markup")


class Groups(ConformanceBase):
    """A group fans out in parallel; in a chain, the next step gets every result, in member order."""

    def test_group_step_fans_out_every_member(self, app: App, backend: Backend) -> None:
        """Every member of a group step is ready at once, each with the submit arguments."""
        resize, total = declare_tasks(app, "resize", "total")
        chain(group(resize.s(1), resize.s(2), resize.s(3)), total).submit("img")
        jobs = [d.job for d in reserve(backend)]
        assert sorted(j.args for j in jobs) == [("img", 1), ("img", 2), ("img", 3)]

    def test_next_step_waits_for_every_member(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """Until the last member completes, the step after a group is not enqueued."""
        resize, total = declare_tasks(app, "resize", "total")
        chain(group(resize.s(1), resize.s(2), resize.s(3)), total).submit("img")
        members = reserve(backend)
        backend.settle([completed(d, 0, clock=clock) for d in members[:2]])
        assert reserve(backend) == []
        backend.settle([completed(members[2], 0, clock=clock)])
        assert reserve_one(backend).job.task == "total"

    def test_results_reach_the_next_step_in_member_order(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """The step after a group gets the member results in member order, whatever order they finished in."""
        resize, total = declare_tasks(app, "resize", "total")
        chain(group(resize.s(1), resize.s(2), resize.s(3)), total).submit("img")
        members = sorted(reserve(backend), key=lambda d: d.job.args[1], reverse=True)
        for delivery in members:  # finish last member first
            backend.settle([completed(delivery, f"r{delivery.job.args[1]}", clock=clock)])
        assert reserve_one(backend).job.args == (["r1", "r2", "r3"],)

    def test_one_failed_member_halts_the_chain(self, app: App, backend: Backend, clock: ManualClock) -> None:
        """A member that fails for good halts the chain; the step after the group is not executed."""
        resize, total = declare_tasks(app, "resize", "total")
        handle = chain(group(resize.s(1), resize.s(2)), total).submit("img")
        first, second = reserve(backend)
        backend.settle([completed(first, "r", clock=clock), failed(second, clock=clock)])
        record = get_chain(backend, handle.id)
        assert record.state is ChainState.HALTED
        assert record.steps[1].state is StepState.NOT_EXECUTED
        assert reserve(backend) == []

    def test_members_finishing_after_a_halt_do_not_resume_it(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """Members that complete after another member failed leave the chain halted."""
        resize, total = declare_tasks(app, "resize", "total")
        handle = chain(group(resize.s(1), resize.s(2), resize.s(3)), total).submit("img")
        first, second, third = reserve(backend)
        backend.settle([failed(first, clock=clock)])
        backend.settle([completed(second, "r", clock=clock), completed(third, "r", clock=clock)])
        assert get_chain(backend, handle.id).state is ChainState.HALTED
        assert reserve(backend) == []

    def test_group_on_its_own_collects_results_in_order(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """A group submitted alone completes when every member has, with their results in order."""
        (resize,) = declare_tasks(app, "resize")
        handle = group(resize.s(1), resize.s(2), resize.s(3)).submit()
        for delivery in reversed(reserve(backend)):
            backend.settle([completed(delivery, delivery.job.args[0] * 10, clock=clock)])
        record = get_chain(backend, handle.id)
        assert (record.kind, record.state, record.result) == ("group", ChainState.COMPLETED, [10, 20, 30])


class NextStepHandOff(ConformanceBase):
    """``settle_and_take``: a backend may lease a chain's next step to the worker that finished the step.

    These tests hold for a backend that takes nothing (the default): whatever
    is not taken must be reservable, and whatever is taken must be held.
    """

    def _take(self, backend: Backend, delivery: Any, clock: ManualClock, **kwargs: Any) -> list[Any]:
        options = {"worker": "w-1", "queues": ["default"], "lease": 30.0, "limit": 4, **kwargs}
        results, taken = backend.settle_and_take([completed(delivery, "body", clock=clock)], **options)
        assert [r.accepted for r in results] == [True]
        return taken

    def test_next_step_is_taken_or_ready_never_both(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """The next step is either leased to the settling worker (settle accepts it) or ready to reserve."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        handle = chain(fetch, parse).submit("url")
        taken = self._take(backend, reserve_one(backend, worker="w-1"), clock)
        ready = reserve(backend, worker="w-2")
        assert len(taken) + len(ready) == 1
        [step] = taken or ready
        assert (step.job.task, step.job.args) == ("parse", ("body",))
        if taken:
            assert step.worker == "w-1"
            held = backend.get_job(step.job.id)
            assert held is not None
            assert held.state is JobState.RUNNING
        [result] = backend.settle([completed(step, "done", clock=clock)])
        assert result.accepted
        assert result.chain is not None
        assert get_chain(backend, handle.id).state is ChainState.COMPLETED

    def test_a_ready_job_of_the_queue_is_not_overtaken(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """With an older job of equal priority ready in the queue, the next step is not taken."""
        fetch, parse, other = declare_tasks(app, "fetch", "parse", "other")
        chain(fetch, parse).submit("url")
        head = reserve_one(backend, worker="w-1")
        waiting = other.submit()
        clock.advance(1.0)
        assert self._take(backend, head, clock) == []
        assert reserve_one(backend, worker="w-2").job.id == waiting.id

    def test_nothing_is_taken_from_other_queues_or_beyond_the_limit(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """Only steps of the worker's queues, and no more than ``limit``."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        assert self._take(backend, reserve_one(backend), clock, queues=["elsewhere"]) == []
        assert len(reserve(backend)) == 1
        chain(fetch, group(parse, parse, parse)).submit("url")
        assert len(self._take(backend, reserve_one(backend), clock, limit=2)) <= 2

    def test_a_taken_step_whose_lease_runs_out_is_delivered_again(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """A worker that dies holding a taken step loses nothing: the lease ends, another worker gets it."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        taken = self._take(backend, reserve_one(backend, worker="w-1"), clock, lease=5.0)
        clock.advance(6.0)
        [again] = reserve(backend, worker="w-2")
        assert again.job.task == "parse"
        assert again.delivery_count == (2 if taken else 1)
        stale = backend.settle([completed(d, clock=clock) for d in taken])
        assert [r.accepted for r in stale] == [False] * len(taken)
        assert backend.settle([completed(again, clock=clock)])[0].accepted

    def test_a_released_taken_step_is_ready_again(
        self, app: App, backend: Backend, clock: ManualClock
    ) -> None:
        """Giving back a taken step (a worker stopping) makes it ready at once."""
        fetch, parse = declare_tasks(app, "fetch", "parse")
        chain(fetch, parse).submit("url")
        taken = self._take(backend, reserve_one(backend, worker="w-1"), clock)
        if taken:
            backend.settle([released(taken[0])])
        [again] = reserve(backend, worker="w-2")
        assert again.job.task == "parse"
