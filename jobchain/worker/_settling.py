"""Settling: the outcomes the threads hand in, settled in batches by one thread at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from jobchain.errors import BackendAuthError, BackendFullError, InvalidJobError
from jobchain.errortext import cap, describe, type_name
from jobchain.model import (
    Aborted,
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    ErrorInfo,
    Failed,
    Outcome,
    Released,
    Retried,
    SettleResult,
    StepState,
)
from jobchain.outage import Backoff, is_unavailable
from jobchain.worker._core import WorkerCore, _left

#: the error type of the failure settled in place of an outcome the backend refused
SETTLE_REFUSED = "SettleRefused"


class Settling(WorkerCore):
    """The pending outcomes, their settlement, and what a refused settlement becomes."""

    #: how many times an outcome refused on its own is tried before a failure is settled instead
    SETTLE_TRIES = 8

    def _settler_main(self) -> None:
        """Settle the threads' outcomes in batches, off their path from one job to the next."""
        while True:
            with self._cv:
                while not self._pending or self._flushing:
                    if self._stopped.is_set() or self._abandon.is_set():
                        return
                    self._settle_cv.wait(0.2)
            try:
                self._flush()
            except Exception:  # a bug (a backend answering the wrong number of results, say)
                self.log.error("settle_crashed", exc_info=True)

    def _pending_add(self, outcomes: Iterable[Outcome]) -> None:
        with self._cv:
            self._pending.extend(outcomes)

    def _flush(self, outcome: Outcome | None = None, deadline: float | None = None) -> bool:
        """Add ``outcome`` to the pending list, then settle everything pending unless another
        thread already is doing it (that thread then settles ``outcome`` too).

        The flusher finds the list empty and gives up the role in one step under the lock, so an
        outcome added meanwhile is never left behind unsettled. While the backend is down the
        flusher retries; it gives up only at ``deadline`` or once :meth:`stop` ran out of time,
        and then puts what is left of the batch back at the head of the pending list. Returns
        False then. A batch the backend refuses is settled one outcome at a time.
        """
        with self._cv:
            if outcome is not None:
                self._pending.append(outcome)
            if self._flushing or not self._pending:
                return True
            self._flushing = True
            batch = self._settling = self._pending
            self._pending = []
        try:
            while True:
                settled, results, left = self._settle(batch, deadline)
                self._after_settle(settled, results)
                if left:
                    with self._cv:
                        self._pending[:0] = left
                        self._settling = []
                        self._flushing = False
                        self._flushed_cv.notify_all()
                    return False
                with self._cv:
                    batch = self._settling = self._pending
                    if not batch:
                        self._flushing = False
                        self._flushed_cv.notify_all()
                        return True
                    self._pending = []
        except BaseException:
            with self._cv:
                self._settling = []
                self._flushing = False
                self._flushed_cv.notify_all()
            raise

    def _settle_now(self) -> bool:
        """Settle every pending outcome now (within a lease); False if some are left (backend down, stop)."""
        self._flush_until(time.monotonic() + self.lease)
        with self._cv:
            return not self._pending and not self._flushing

    def _flush_until(self, deadline: float | None) -> None:
        """Settle everything pending by ``deadline``, waiting for a thread that is settling now."""
        while True:
            with self._cv:
                while self._flushing:
                    left = _left(deadline)
                    if left == 0.0:
                        return
                    self._flushed_cv.wait(left)
                if not self._pending:
                    return
            if not self._flush(deadline=deadline):
                return

    def _settle(
        self, batch: list[Outcome], deadline: float | None = None
    ) -> tuple[list[Outcome], list[SettleResult], list[Outcome]]:
        """Settle ``batch``, retrying while the backend is unavailable.

        Returns the outcomes settled (with, in place of one the backend refused,
        the failure settled instead: see :meth:`_settle_each`), their results, and
        the outcomes left unsettled when it gave up (see :meth:`_flush`).
        """
        backoff = self._settle_backoff
        settled: list[Outcome] = []
        results: list[SettleResult] = []
        while batch:
            try:
                answers, taken = self._settle_and_take(batch)
            except Exception as exc:
                self._backend_failed("settle", exc)
                if not _is_outage(exc):  # the backend refused (something in) the batch: one at a time
                    done, got, batch = self._settle_each(batch, deadline)
                    settled += done
                    results += got
                    if not batch:
                        break
                # keep the outcomes: nothing is acknowledged until the backend takes them
                delay = backoff.next()
                if deadline is not None:
                    delay = min(delay, deadline - time.monotonic())
                if self._abandon.is_set() or delay <= 0 or (self.fatal is not None and self.stopping):
                    return settled, results, batch
                self.outage.pause(delay)
                continue
            backoff.reset()
            self.outage.succeeded("settle")
            if taken:
                with self._cv:
                    for delivery in taken:
                        self._held[delivery.job.id] = delivery
                    if self._stopping.is_set():  # stop() has emptied the buffer already: give them back
                        self._pending.extend(Released(delivery=d) for d in taken)
                    else:
                        self._buffered(taken, front=True)
            settled += batch
            results += answers
            break
        return settled, results, []

    def _settle_each(
        self, batch: list[Outcome], deadline: float | None
    ) -> tuple[list[Outcome], list[SettleResult], list[Outcome]]:
        """Settle a refused batch one outcome at a time, so that one refused outcome holds up no other.

        An outcome refused on its own is tried again after a backoff, up to
        :attr:`SETTLE_TRIES` times in all (no more when the backend says its
        content is invalid: an :class:`InvalidJobError`), while outcomes that
        arrive meanwhile are settled too. Then it is replaced by a permanent
        failure (``SettleRefused``) that gives the reason; if even that is
        refused, or the outcome was a release, it is let go: logged, no longer
        held, so its lease expires and the job is delivered again.

        Returns what was settled, the results, and the outcomes left when an
        outage, the deadline or an abandoned stop cut it short.
        """
        settled: list[Outcome] = []
        results: list[SettleResult] = []
        items = [(outcome, 0) for outcome in batch]  # (outcome, refusals so far)
        backoff = Backoff(base=self.reconnect_base, cap=self.reconnect_cap, rng=self.rng)
        while True:
            again: list[tuple[Outcome, int]] = []
            for index, (outcome, refusals) in enumerate(items):
                try:
                    (result,) = self.backend.settle([outcome])
                except Exception as exc:
                    if _is_outage(exc):
                        self.outage.failed("settle", exc)
                        return settled, results, [o for o, _ in again + items[index:]]
                    refusals += 1
                    if refusals < self.SETTLE_TRIES and not isinstance(exc, InvalidJobError):
                        again.append((outcome, refusals))
                    else:
                        instead = self._refused(outcome, exc)
                        if instead is not None:
                            again.append((instead, 0))
                    continue
                self.outage.succeeded("settle")
                settled.append(outcome)
                results.append(result)
                if isinstance(outcome, Failed) and outcome.error.type == SETTLE_REFUSED:
                    self.events.job_failed(
                        job=outcome.delivery.job,
                        error=outcome.error,
                        duration=0.0,
                        worker=self.name,
                        thread=threading.current_thread().name,
                    )
            if not again:
                return settled, results, []
            delay = backoff.next()
            if deadline is not None:
                delay = min(delay, deadline - time.monotonic())
            if delay <= 0 or self._abandon.wait(delay):
                return settled, results, [o for o, _ in again]
            with self._cv:  # what finished meanwhile is settled now, not after the refused ones
                arrived, self._pending = self._pending, []
                self._settling = self._settling + arrived
            items = again + [(outcome, 0) for outcome in arrived]

    def _refused(self, outcome: Outcome, exc: Exception) -> Failed | None:
        """The failure to settle instead of an outcome the backend refused, or None to let the job go."""
        job = outcome.delivery.job
        kind = type(outcome).__name__
        reason = f"{type_name(exc)}: {cap(describe(exc), 1024)}"
        replacement = isinstance(outcome, Failed) and outcome.error.type == SETTLE_REFUSED
        let_go = replacement or isinstance(outcome, Released)
        with self._cv:
            if not replacement:
                self.counters.refused += 1
        if let_go:
            self.log.error("outcome_dropped", job_id=job.id, outcome=kind, error=reason)
            with self._cv:
                self._held.pop(job.id, None)  # its lease expires; then the job is delivered again
            return None
        self.log.warning("outcome_refused", job_id=job.id, outcome=kind, error=reason)
        message = f"the backend refused this job's outcome ({kind}): {reason}"
        if isinstance(outcome, Failed | Retried):
            message += f"; it had failed with {outcome.error.type}: {cap(outcome.error.message, 1024)}"
        error = ErrorInfo(
            type=SETTLE_REFUSED,
            message=cap(message, self.runtime.max_error_bytes),
            attempt=job.attempt,
            at=self.runtime.clock.now(),
        )
        return Failed(delivery=outcome.delivery, error=error)

    def _settle_and_take(self, batch: list[Outcome]) -> tuple[list[SettleResult], list[Delivery]]:
        """Settle; when threads are free and a chain moves on, take its next steps in the same step."""
        with self._cv:
            free = self.concurrency - len(self._running) - len(self._buffer)
        if free < 1 or self._stopping.is_set() or not any(o.delivery.job.chain for o in batch):
            return self.backend.settle(batch), []
        since = time.monotonic()
        results, taken = self.backend.settle_and_take(
            batch, worker=self.name, queues=self.queues, lease=self.lease, limit=free
        )
        with self._cv:
            self._note_leased(taken, since)
        return results, taken

    def _after_settle(self, batch: list[Outcome], results: list[Any]) -> None:
        counters = self.counters
        chains: list[ChainRecord] = []
        asked = self._cancel_asked
        with self._cv:
            for outcome, result in zip(batch, results, strict=True):
                self._held.pop(outcome.delivery.job.id, None)
                if asked:
                    asked.discard(outcome.delivery.job.id)
                    self._cancel_asked_at.pop(outcome.delivery.job.id, None)
                if not result.accepted:
                    counters.rejected += 1
                    continue
                if isinstance(outcome, Completed):
                    counters.done += 1
                elif isinstance(outcome, Failed):
                    counters.failed += 1
                elif isinstance(outcome, Retried):
                    counters.retried += 1
                elif isinstance(outcome, Aborted):
                    counters.cancelled += 1
                if result.chain is not None:
                    chains.append(result.chain)
                    if result.chain.state in (ChainState.HALTED, ChainState.CANCELLED):
                        counters.skipped += sum(
                            1
                            for s in result.chain.steps
                            for m in s.members
                            if m.state is StepState.NOT_EXECUTED
                        )
        for outcome, result in zip(batch, results, strict=True):
            if not result.accepted:
                self.log.warning(
                    "stale_delivery_rejected", job_id=outcome.delivery.job.id, outcome=type(outcome).__name__
                )
        events = self.events
        for record in chains:
            if record.state is ChainState.COMPLETED:
                events.chain_completed(chain=record, worker=self.name)
            elif record.state is ChainState.HALTED:
                events.chain_halted(chain=record, worker=self.name)


def _is_outage(exc: Exception) -> bool:
    """True if a backend call failed because the backend is away or full: retry it as it is.

    Anything else (an :class:`InvalidJobError`, a :class:`~jobchain.BackendError`
    the backend answered with, a bug) may be a refusal of what was sent.
    """
    return is_unavailable(exc) or isinstance(exc, BackendFullError | BackendAuthError)
