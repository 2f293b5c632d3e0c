"""A complete jobchain backend on the required core alone: in memory, one lock, nine methods.

Written from scratch on :mod:`jobchain.contract`, the way a third party would
start, it passes :class:`jobchain.testing.suite.CoreConformance`: priority
with aging, FIFO among equals, leases that run out, stale settlements
refused, crash counting, delays, retries with every attempt's error kept,
chains and groups. It declares no
capability, so ``app.failed`` or ``jobchain workers`` on it raise
:class:`~jobchain.contract.NotSupportedError`. Keeping every job in a dict
and sorting the ready ones at each reservation is slow past a few thousand
jobs; :mod:`jobchain.memory` is the fast one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

from attrs import define, evolve

from jobchain.contract import (
    Backend,
    ChainRecord,
    Completed,
    Delivery,
    Job,
    JobRecord,
    JobState,
    Outcome,
    Released,
    Retried,
    SettleResult,
    kept_errors,
    order_key,
    workflow,
)

__all__ = ["MinimalBackend"]


@define
class _Slot:
    """What the backend holds for an unfinished job besides its record."""

    seq: int  # its FIFO place, kept across redeliveries and retries
    token: str | None = None  # the current delivery's, while a lease is held
    lease_until: float = 0.0
    deliveries: int = 0  # deliveries of this attempt
    crashes: int = 0  # leases of this attempt lost while marked running
    marked: bool = False


class MinimalBackend(Backend):
    """Jobs, chains and leases in dicts under one lock; only the required core."""

    def __init__(self, url: str = "minimal://", **options: Any) -> None:
        super().__init__(**options)  # clock=, aging_interval=
        self.url = url
        self._cond = threading.Condition(threading.RLock())
        self._seq = itertools.count()
        self._records: dict[str, JobRecord] = {}
        self._slots: dict[str, _Slot] = {}  # unfinished jobs only
        self._chains: dict[str, ChainRecord] = {}

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        with self._cond:
            for chain in chains:
                self._chains.setdefault(chain.id, chain)
            for job in jobs:
                if job.id not in self._records:  # an id stored already is skipped
                    self._records[job.id] = JobRecord(job=job, state=JobState.QUEUED)
                    self._slots[job.id] = _Slot(seq=next(self._seq))
            self._cond.notify_all()

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                now = self.now()
                self._expire(now)
                ready = sorted(
                    (order_key(record.job, self.aging_interval), slot.seq, job_id)
                    for job_id, slot in self._slots.items()
                    if (record := self._records[job_id]).state is JobState.QUEUED
                    and record.job.queue in queues
                    and (record.job.not_before is None or record.job.not_before <= now)
                )
                if ready or time.monotonic() >= deadline:
                    break
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            out = []
            for _, _, job_id in ready[:limit]:
                slot, record = self._slots[job_id], self._records[job_id]
                slot.token, slot.lease_until, slot.marked = f"{next(self._seq):x}", now + lease, False
                slot.deliveries += 1
                self._records[job_id] = evolve(record, state=JobState.RUNNING)
                out.append(
                    Delivery(
                        job=record.job,
                        token=slot.token,
                        lease_until=slot.lease_until,
                        worker=worker,
                        delivery_count=slot.deliveries,
                        crashes=slot.crashes,
                    )
                )
            return out

    def _expire(self, now: float) -> None:
        """Make the jobs whose lease ran out ready again (lock held)."""
        for job_id, slot in self._slots.items():
            if slot.token is not None and slot.lease_until <= now:
                slot.token = None
                slot.crashes += slot.marked  # lost while it ran: a crash
                slot.marked = False
                self._records[job_id] = evolve(self._records[job_id], state=JobState.QUEUED)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        with self._cond:
            out = []
            for delivery in deliveries:
                slot = self._slots.get(delivery.job.id)
                held = slot is not None and slot.token == delivery.token
                if slot is not None and held:
                    slot.lease_until = self.now() + lease
                out.append(held)
            return out

    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._cond:
            now = self.now()
            self._expire(now)
            out = []
            for delivery in deliveries:
                slot = self._slots.get(delivery.job.id)
                held = slot is not None and slot.token == delivery.token and slot.lease_until > now
                if slot is not None and held:
                    slot.marked = True
                out.append(held)
            return out

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        results = []
        with self._cond:
            now = self.now()
            for outcome in outcomes:
                job = outcome.delivery.job
                slot = self._slots.get(job.id)
                if slot is None or slot.token != outcome.delivery.token:
                    results.append(SettleResult(accepted=False))  # stale: another delivery holds the job
                    continue
                record = self._records[job.id]
                before = chain = self._chains.get(job.chain.chain_id) if job.chain else None
                if isinstance(outcome, Released):  # back unrun: not a lost lease, not a delivery
                    slot.token, slot.marked, slot.deliveries = None, False, slot.deliveries - 1
                    self._records[job.id] = evolve(record, state=JobState.QUEUED)
                elif isinstance(outcome, Retried):  # a new attempt: fresh counts, same FIFO place
                    self._slots[job.id] = _Slot(seq=slot.seq)
                    retry = job.retried(not_before=now + outcome.delay)
                    error = outcome.recorded_error  # with the backoff, and added to the history
                    self._records[job.id] = evolve(
                        record,
                        job=retry,
                        state=JobState.QUEUED,
                        error=error,
                        errors=kept_errors(record.errors, error),
                    )
                elif isinstance(outcome, Completed):
                    del self._slots[job.id]
                    self._records[job.id] = JobRecord(
                        job=job,
                        state=JobState.SUCCEEDED,
                        result=outcome.result,
                        errors=record.errors,
                        started_at=outcome.started_at,
                        finished_at=outcome.finished_at,
                    )
                    if chain is not None and job.chain is not None:
                        chain, following = workflow.apply_completed(
                            chain,
                            job.chain,
                            outcome.result,
                            started_at=outcome.started_at,
                            finished_at=outcome.finished_at,
                            now=now,
                            result_sig=outcome.result_sig,
                        )
                        self.enqueue(following)  # the next step, in the same locked step
                else:  # Failed: recorded, and its chain halted
                    del self._slots[job.id]
                    error = outcome.recorded_error
                    self._records[job.id] = evolve(
                        record,
                        state=JobState.FAILED,
                        error=error,
                        errors=kept_errors(record.errors, error),
                        finished_at=now,
                    )
                    if chain is not None and job.chain is not None:
                        chain = workflow.apply_failed(chain, job.chain, outcome.error, now=now)
                if chain is not None and before is not None:
                    self._chains[chain.id] = chain
                ended = chain is not None and before is not None and chain.state is not before.state
                results.append(SettleResult(accepted=True, chain=chain if ended else None))
            self._cond.notify_all()
        return results

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._cond:
            record = self._records.get(job_id)
            not_before = None if record is None else record.job.not_before
            if record is not None and record.state is JobState.QUEUED and (not_before or 0.0) > self.now():
                return evolve(record, state=JobState.DELAYED)
            return record

    def get_chain(self, chain_id: str) -> ChainRecord | None:
        with self._cond:
            return self._chains.get(chain_id)
