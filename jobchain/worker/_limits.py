"""Rate and concurrency limits, applied by the worker before a job starts (see :mod:`jobchain.limits`).

A job of a task (or queue) with limits first takes a concurrency slot, then
rate tokens; while it waits it is *held* by this worker: its lease is kept
(the monitor extends it, and its slots with it), it does not use an attempt,
and the heartbeat reports how many jobs are held (``jobchain status``). A
worker asked to stop gives a held job back unrun (``Released``); a held job
that is cancelled is reported ``Aborted`` without running. A task
without limits costs one attribute read here: no backend call.

Order: a rate limit's tokens are reserved in the order jobs ask for them
(:meth:`~jobchain.capabilities.RateLimits.take_tokens` with ``max_wait``), so
jobs start in the order workers took them from the queue, within one
``hold`` window; a wait longer than that is retried, and concurrency slots go
to whichever held job asks first after one frees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobchain.capabilities import ConcurrencyLimits, RateLimits, require
from jobchain.limits import Limits, key_of
from jobchain.model import Delivery
from jobchain.worker._core import WorkerCore

__all__ = ["LimitGate"]

#: the longest a worker reserves rate tokens ahead (seconds); a longer wait is asked again later
MAX_HOLD = 5.0
#: how often a job waiting for a concurrency slot asks again (seconds, doubling up to the cap)
_SLOT_POLL = (0.02, 0.5)


def _params(task: Any) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(task.fn).parameters)
    except (TypeError, ValueError):
        return []


class LimitGate(WorkerCore):
    """Holds a job until its limits admit it; extends and frees its slots."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: job id -> the (key, holder) concurrency slots it holds (the monitor extends them)
        self._limit_slots: dict[str, list[tuple[str, str]]] = {}
        #: how many jobs wait for a limit in this worker now
        self.limit_held = 0
        queue_limits: Mapping[str, Limits] = getattr(self.runtime, "queue_limits", {})
        self._queue_limits = dict(queue_limits)

    def _limits_of(self, delivery: Delivery, task: Any) -> list[tuple[str, Limits]]:
        """The limits on this job: (scope, limits) for its task and its queue (usually empty)."""
        found: list[tuple[str, Limits]] = []
        own = getattr(task, "limits", None)
        if own is not None:
            found.append((f"task:{task.name}", own))
        if self._queue_limits:
            queued = self._queue_limits.get(delivery.job.queue)
            if queued is not None:
                found.append((f"queue:{delivery.job.queue}", queued))
        return found

    def _admit(self, delivery: Delivery, task: Any, limits: list[tuple[str, Limits]]) -> str:
        """Wait until every limit admits the job: "start" (slots taken, tokens spent), or, its slots freed,
        "stop" (the worker is stopping) or "cancelled" (the job was cancelled while it waited)."""
        job = delivery.job
        params = _params(task)
        backend = self.backend
        taken: list[tuple[str, str]] = []
        with self._cv:
            self.limit_held += 1
        try:
            for scope, limit in limits:
                if limit.concurrency is not None:
                    slots = require(backend, ConcurrencyLimits)
                    key = f"{scope}:{key_of(limit.concurrency_key, params, job.args, job.kwargs)}"
                    pause = _SLOT_POLL[0]
                    while not slots.acquire_slot(key, limit.concurrency, job.id, self.lease):
                        if self._stopping.wait(pause):
                            return self._give_up(taken, "stop")
                        if job.id in self._cancel_asked:
                            return self._give_up(taken, "cancelled")
                        pause = min(pause * 2, _SLOT_POLL[1])
                    taken.append((key, job.id))
                    with self._cv:
                        self._limit_slots[job.id] = list(taken)
            for scope, limit in limits:
                if limit.rate:
                    rates = require(backend, RateLimits)
                    key = f"{scope}:{key_of(limit.rate_key, params, job.args, job.kwargs)}"
                    hold = min(MAX_HOLD, self.lease / 2)
                    while True:
                        wait = rates.take_tokens(key, limit.rate, max_wait=hold)
                        if wait <= hold:  # reserved: this job's turn comes in ``wait`` seconds
                            if wait > 0 and self._stopping.wait(wait):
                                return self._give_up(taken, "stop")
                            break
                        if self._stopping.wait(hold):
                            return self._give_up(taken, "stop")
                        if job.id in self._cancel_asked:
                            return self._give_up(taken, "cancelled")
            return "start"
        finally:
            with self._cv:
                self.limit_held -= 1

    def _give_up(self, taken: list[tuple[str, str]], why: str) -> str:
        self._release_limits(taken)
        return why

    def _release_limits(self, taken: list[tuple[str, str]]) -> None:
        """Free the slots of a job that ended (or was given back); a failure leaves them to their ttl."""
        if not taken:
            return
        with self._cv:
            self._limit_slots.pop(taken[0][1], None)
        slots = require(self.backend, ConcurrencyLimits)
        for key, holder in taken:
            try:
                slots.release_slot(key, holder)
            except Exception as exc:  # the slot frees when its ttl runs out
                self._backend_failed("release_slot", exc)

    def _extend_limit_slots(self) -> None:
        """Extend the slots of running limited jobs with their leases (called by the monitor)."""
        with self._cv:
            held = [pair for pairs in self._limit_slots.values() for pair in pairs]
        if not held:
            return
        try:
            require(self.backend, ConcurrencyLimits).extend_slots(held, self.lease)
        except Exception as exc:
            self._backend_failed("extend_slots", exc)
