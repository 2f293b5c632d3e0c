"""The pool: worker threads, the fetcher that reserves for them, and which job a thread takes next."""

from __future__ import annotations

import threading
import time

from jobchain.errortext import cap, describe, format_traceback, type_name
from jobchain.model import Completed, Delivery, ErrorInfo, Failed, Outcome, Released
from jobchain.worker._core import _NEVER, _RUN_WEIGHT, SlotStats, WorkerCore, _left, adaptive_prefetch


class Pool(WorkerCore):
    """The pool threads and the fetcher; a suspect runs alone; a thread that dies is replaced."""

    def _pool_thread(self, slot: SlotStats) -> threading.Thread:
        return threading.Thread(
            target=self._thread_main, args=(slot,), name=f"jobchain-{slot.name}", daemon=True
        )

    def _join_pool(self, deadline: float | None) -> bool:
        """Wait for the pool threads (a replacement for one that died included); True if all ended."""
        while True:
            with self._cv:
                threads = list(self._threads)
            for thread in threads:
                thread.join(_left(deadline))
            with self._cv:
                if self._threads == threads or _left(deadline) == 0.0:
                    return not any(t.is_alive() for t in self._threads)

    def _thread_main(self, slot: SlotStats) -> None:
        delivery: Delivery | None = None
        try:
            while True:
                delivery = self._next()
                if delivery is None:
                    return
                outcome = self._run_job(delivery, slot)
                with self._cv:
                    solo = delivery.job.id == self._solo
                    # a chain step done with nothing else to run: this thread settles it, and runs the
                    # next step the settlement hands back (no trip to the settler thread and back)
                    inline = (
                        not solo
                        and isinstance(outcome, Completed)
                        and delivery.job.chain is not None
                        and not self._buffer
                        and not self._pending
                        and not self._flushing
                    )
                    if not inline:  # the settler thread reports it, batched with the others' outcomes
                        self._pending.append(outcome)
                        self._settle_cv.notify()
                if inline:
                    self._flush(outcome)
                elif solo:  # a suspect's outcome is settled before any other job may start (see _next)
                    self._settle_now()
                delivery = None
        except BaseException as exc:  # a bug in the worker: hand the job on and replace this thread
            self._thread_died(slot, delivery, exc)

    def _thread_died(self, slot: SlotStats, delivery: Delivery | None, exc: BaseException) -> None:
        """A pool thread is ending on an exception: release its job, log and count it, start another.

        The job goes back unrun (a ``Released`` outcome: no attempt used). A job
        whose run killed a thread of this worker before is failed as
        ``WorkerThreadDied`` instead, so that a bug it triggers cannot loop.
        """
        job_id = None if delivery is None else delivery.job.id
        outcome: Outcome | None = None
        with self._cv:
            self.counters.threads_died += 1
            self._busy.pop(threading.current_thread(), None)
            if delivery is not None and delivery.job.id == self._solo:  # let the other threads go on
                self._solo = None
                self._cv.notify_all()
                self._aio_cv.notify_all()
            if delivery is not None:
                deaths = self._deaths[delivery.job.id] = self._deaths.get(delivery.job.id, 0) + 1
                if deaths < 2:
                    outcome = Released(delivery=delivery)
                else:
                    error = ErrorInfo(
                        type="WorkerThreadDied",
                        message=cap(
                            f"the worker thread running this job died {deaths} times: "
                            f"{type_name(exc)}: {describe(exc)}",
                            self.runtime.max_error_bytes,
                        ),
                        traceback=cap(format_traceback(exc), self.runtime.max_error_bytes, keep_tail=True),
                        attempt=delivery.job.attempt,
                        at=self.runtime.clock.now(),
                    )
                    outcome = Failed(delivery=delivery, error=error)
            replaced: str | None = None
            if not self._stopping.is_set():
                try:
                    thread = self._pool_thread(slot)
                    thread.start()  # (it waits for the lock held here before it takes a job)
                except Exception as start_failed:  # out of threads: the pool runs one short
                    replaced = f"no: {type_name(start_failed)}: {describe(start_failed)}"
                else:
                    current = threading.current_thread()
                    self._threads = [thread if t is current else t for t in self._threads]
                    replaced = "yes"
        try:
            self.log.error(
                "worker_thread_died",
                thread=slot.name,
                job_id=job_id,
                outcome=None if outcome is None else type(outcome).__name__,
                replaced=replaced or "no: the worker is stopping",
                error_type=type_name(exc),
                error=cap(describe(exc), 1024),
                traceback=cap(format_traceback(exc), self.runtime.max_error_bytes, keep_tail=True),
            )
        finally:  # settled after the line is logged (stop() waits for this thread before it settles)
            if outcome is not None:
                with self._cv:
                    self._pending.append(outcome)
                    self._settle_cv.notify()

    def _next(self) -> Delivery | None:
        """The next reserved job for a thread; the fetcher refills the buffer when it runs dry.

        The thread's previous job (if any) is over when it asks. A delivery whose
        lease the worker may no longer hold is dropped, never started. A suspect
        (delivered before) waits until no other job runs, holds back the other
        threads while it runs, and is marked running on the backend first.
        """
        me = threading.current_thread()
        while True:
            with self._cv:
                done = self._busy.pop(me, None)
                if done is not None and self._adaptive:
                    self._note_run(me)
                if done is not None and done.job.id == self._solo:
                    self._solo = None
                    self._cv.notify_all()
                    self._aio_cv.notify_all()
                delivery = self._take_next(me)
                if delivery is None or not (delivery.suspect and delivery.crashes <= self.max_redeliveries):
                    return delivery
            if self._hold_suspect(delivery):
                return delivery

    def _hold_suspect(self, delivery: Delivery) -> bool:
        """Make ready to run a suspect that runs alone: True if it may start, else it was given back.

        Every other job has finished, none starts until it does. It may kill this
        process (a poison job): what ran before it is settled first, or a job that
        merely finished beside it would be delivered again and charged with the
        death. Then it is marked running on the backend (which checks its lease).
        """
        if not self._settle_now() or self._stopping.is_set():
            with self._cv:  # give it back unstarted: its next delivery tries again
                self._pending.append(Released(delivery=delivery))
                self._settle_cv.notify()
            return False
        try:
            [held] = self.backend.mark_running([delivery])
        except Exception as exc:
            self._backend_failed("mark_running", exc)
            with self._cv:  # give it back unstarted: its next delivery tries again
                self._pending.append(Released(delivery=delivery))
                self._settle_cv.notify()
            return False
        self.outage.succeeded("mark_running")
        if held:
            return True
        with self._cv:
            self._drop([delivery], "lease_lost_before_start")
        return False

    def _note_run(self, me: threading.Thread) -> None:
        """Fold the time of the job ``me`` just ended into the average; adapt the prefetch (lock held)."""
        taken = self._taken_at.pop(me, None)
        if taken is None:
            return
        run = time.monotonic() - taken
        avg = self._run_avg
        self._run_avg = run if avg is None else avg + (run - avg) * _RUN_WEIGHT
        self.prefetch = adaptive_prefetch(self.concurrency, self._run_avg)

    def _take_next(self, me: threading.Thread) -> Delivery | None:
        """Pop the next delivery that may start (the lock is held); None when stopping."""
        while True:
            if self._stopping.is_set():
                return None
            if self._buffer and self._solo is None:
                delivery = self._buffer.popleft()
                if not self._buffer:
                    self._fetch_cv.notify()  # reserve the next batch while this one runs
                if self._deadline.pop(delivery.token, _NEVER) <= time.monotonic():
                    self._drop([delivery], "lease_expired_before_start")
                    continue
                self._busy[me] = delivery
                self._taken_at[me] = time.monotonic()
                if delivery.suspect and delivery.crashes <= self.max_redeliveries:
                    self._solo = delivery.job.id
                    # threads that died running a job (replaced since) do not hold the suspect back
                    while self._aio_running or any(t is not me and t.is_alive() for t in self._busy):
                        if self._stopping.is_set():
                            self._busy.pop(me, None)
                            self._solo = None
                            self._buffer.appendleft(delivery)  # stop() releases it
                            self._cv.notify_all()
                            return None
                        self._cv.wait(0.1)
                return delivery
            if not self._buffer:
                self._fetch_cv.notify()
            self._cv.wait()

    def _fetcher_main(self) -> None:
        """Reserve a batch whenever the buffer is empty, off the threads' path from job to job."""
        backoff = self._reserve_backoff
        while True:
            with self._cv:
                # not before the name is registered: a reserve may resume the jobs of a dead namesake
                while (
                    not (limit := self._reserve_limit()) or not self._registered.is_set()
                ) and not self._stopping.is_set():
                    self._fetch_cv.wait(0.2)
                if self._stopping.is_set():
                    return
                self._fetching = True
            got: list[Delivery] = []
            late = False
            since = time.monotonic()  # the backend's leases start after this
            try:
                # a blocking reserve may lease a job at the end of its wait: waits of a quarter lease at
                # most leave every delivery most of its lease to start in (see _note_leased)
                got = self.backend.reserve(
                    self.queues, limit=limit, lease=self.lease, worker=self.name, wait=self._wait
                )
            except Exception as exc:
                if not self._orphaned:  # (a worker already stopped has no outage to report)
                    self._backend_failed("reserve", exc)
                if not self._stopping.is_set():
                    self.outage.pause(backoff.next())
            else:
                backoff.reset()
                self.outage.succeeded("reserve")
            finally:
                with self._cv:
                    self._fetching = False
                    late = self._orphaned
                    if not late:
                        for delivery in got:
                            self._held[delivery.job.id] = delivery
                        self._note_leased(got, since)
                        self._buffered(got)
            if late:
                self._release_late(got)
                return

    def _release_late(self, deliveries: list[Delivery]) -> None:
        """Give back what a reserve returned after :meth:`stop` went on without it (unrun, no attempt used).

        Should the backend refuse, the leases expire and another worker gets the jobs.
        """
        if not deliveries:
            return
        try:
            self.backend.settle([Released(delivery=d) for d in deliveries])
        except Exception as exc:
            self.log.warning(
                "late_deliveries_left_for_lease_expiry",
                job_ids=[d.job.id for d in deliveries][:50],
                error_type=type_name(exc),
                error=cap(describe(exc), 1024),
            )
        else:
            self.log.info("late_deliveries_released", job_ids=[d.job.id for d in deliveries][:50])
