"""The monitor thread: lease extension, heartbeats, deadlines of unstarted jobs, timeouts, progress."""

from __future__ import annotations

import os
import socket
import time
from collections import deque

from jobchain.capabilities import Cancel
from jobchain.errors import JobTimeout, WorkerNameTakenError
from jobchain.model import Aborted, Released, WorkerInfo
from jobchain.outage import Backoff
from jobchain.worker._core import _NEVER, PREFETCH_HOLD
from jobchain.worker._execution import _raise_in_thread
from jobchain.worker._limits import LimitGate

#: seconds between two polls of the cancel requests of the jobs a worker holds (at most)
CANCEL_POLL = 0.5


class Monitor(LimitGate):
    """What the monitor thread does every tick, and the heartbeat that registers the worker."""

    def _heartbeat(self) -> bool:
        info = WorkerInfo(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            labels=self.labels,
            concurrency=self.concurrency,
            started_at=self._started_at,
            heartbeat_at=self.runtime.clock.now(),
            state="stopping" if self._stopping.is_set() else "running",
            instance=self.instance,
            held=self.limit_held,
        )
        if self._registry is None:  # a backend without a worker registry: nothing to refresh
            return False
        return self._registry.heartbeat(info, self.heartbeat_ttl)

    def _beat(self) -> bool:
        """Refresh the registration and see if a stop was requested; False if the backend failed."""
        try:
            asked = self._heartbeat()
        except WorkerNameTakenError as exc:
            self.outage.succeeded("heartbeat")
            if self.name_lost is None:
                self.name_lost = exc
                self.log.error(
                    "worker_name_lost",
                    holder_host=exc.host,
                    holder_pid=exc.pid,
                    reason="another worker took the name (was this one paused past its ttl?); stopping",
                )
            self.request_stop()
            return True
        except Exception as exc:
            self._backend_failed("heartbeat", exc)
            return False
        self.outage.succeeded("heartbeat")
        if not self._registered.is_set():
            self._registered.set()
            with self._cv:
                self._fetch_cv.notify_all()
        if asked and not self._stopping.is_set():
            self.log.info("worker_stop_requested")
            self.request_stop()
        return True

    def _monitor_main(self) -> None:
        tick = min(0.1, self.lease / 10)
        extend_every = self.lease / 3
        beat_every = min(self.heartbeat_ttl / 3, 2.0)
        # after a failure the next try comes sooner than the regular interval, so leases and the
        # registration are fresh again soon after the backend returns
        retry = Backoff(base=self.reconnect_base, cap=self.reconnect_cap, rng=self.rng)
        # cancel requests are polled while jobs are held: one call for all of them, about every second
        cancel_every = min(CANCEL_POLL, extend_every)
        now = time.monotonic()
        next_extend, next_beat, last_progress = now + extend_every, now + beat_every, now
        next_cancel = now + cancel_every
        while not self._stopped.is_set():
            if (
                self._stopping.is_set()
                and not self._aio_running
                and not any(t.is_alive() for t in self._threads)
            ):
                break
            if self._stopped.wait(tick):  # stop() ends the monitor at once, not at its next tick
                break
            now = time.monotonic()
            try:
                self._enforce_timeouts(now)
                self._drop_expired(now)
                self._give_back_prefetched(now)
                if now >= next_extend:
                    ok = self._extend_leases()
                    next_extend = time.monotonic() + (extend_every if ok else min(extend_every, retry.next()))
                if self._can_cancel and now >= next_cancel:
                    ok = self._poll_cancels()
                    next_cancel = time.monotonic() + (cancel_every if ok else min(cancel_every, retry.next()))
                if now >= next_beat:
                    ok = self._beat()
                    next_beat = time.monotonic() + (beat_every if ok else min(beat_every, retry.next()))
                    if ok:
                        retry.reset()
                if now - last_progress >= self.progress_interval:
                    last_progress = now
                    self.emit_progress()
            except Exception:  # a bug here must not end lease extension for good
                self.log.error("monitor_failed", exc_info=True)

    def emit_progress(self) -> None:
        """Emit a ``jobchain_progress`` event with the current counts."""
        if not self.events.has_listeners("progress"):
            return
        c = self.counters
        elapsed = max(1e-9, time.monotonic() - c.started)
        finished = c.done + c.failed
        left = None if self.expected is None else max(0, self.expected - finished - c.skipped)
        self.events.progress(
            worker=self.name,
            total=self.expected,
            done=c.done,
            failed=c.failed,
            left=left,
            rate=finished / elapsed,
        )

    def _extend_leases(self) -> bool:
        """Extend the lease of everything held; False if the backend failed (retried soon)."""
        with self._cv:
            held = list(self._held.values())
        if not held:
            return True
        since = time.monotonic()
        try:
            kept = self.backend.extend(held, self.lease)
        except Exception as exc:
            self._backend_failed("extend", exc)
            return False
        self.outage.succeeded("extend")
        if self._limit_slots:  # concurrency slots live as long as the leases of their jobs
            self._extend_limit_slots()
        with self._cv:
            # a delivery settled meanwhile (or whose settlement is under way, perhaps applied already
            # with its reply lost) has no lease to extend: that is not a lost lease
            settling = {o.delivery.job.id for o in self._settling}
            lost = [
                d.job.id
                for d, ok in zip(held, kept, strict=True)
                if not ok and self._held.get(d.job.id) is d and d.job.id not in settling
            ]
            # unstarted deliveries: a kept lease may start until the new deadline, a lost one never
            unstarted = self._deadline
            self._note_leased(
                (d for d, ok in zip(held, kept, strict=True) if ok and d.token in unstarted), since
            )
            gone = {d.token for d, ok in zip(held, kept, strict=True) if not ok}
            dropped = [d for d in (*self._buffer, *self._abuffer) if d.token in gone]
            if dropped:
                self._buffer = deque(d for d in self._buffer if d.token not in gone)
                self._abuffer = deque(d for d in self._abuffer if d.token not in gone)
                self._drop(dropped, "lease_expired_before_start")
        if lost:
            self.log.warning("leases_lost", job_ids=lost[:10], count=len(lost))
        return True

    def _poll_cancels(self) -> bool:
        """Learn which held jobs were cancelled (one backend call); False if the backend failed.

        A running task sees it through :func:`jobchain.current_job`; an unstarted
        one is reported cancelled when its turn comes, without running.
        """
        with self._cv:
            held = [job_id for job_id in self._held if job_id not in self._cancel_asked]
        if not held:
            return True
        backend = self.backend
        assert isinstance(backend, Cancel)
        try:
            asked = backend.cancel_requested(held)
        except Exception as exc:
            self._backend_failed("cancel_requested", exc)
            return False
        if asked:
            now = time.monotonic()
            with self._cv:
                for job_id in asked:
                    if job_id in self._held:
                        self._cancel_asked.add(job_id)
                        self._cancel_asked_at.setdefault(job_id, now)
            self.log.info("cancel_requested", job_ids=list(asked)[:10], count=len(asked))
            if self._aio_loop is not None:
                self._cancel_coroutines(asked)
        return True

    def abort_overdue(self, grace: float) -> list[str]:
        """Give up on tasks asked to stop ``grace`` seconds ago or more that still run; their job ids.

        For a hard abort, where the process is ended afterwards (``jobchain
        worker --processes N --abort-grace S``): each such job's ``Aborted``
        outcome is queued now (it is recorded cancelled when settled) and its
        thread is no longer waited for by :meth:`stop`, which the caller then
        calls so that everything else the worker holds is finished or released.
        """
        now = time.monotonic()
        clock_now = self.runtime.clock.now()
        with self._cv:
            settling = {o.delivery.job.id for o in (*self._pending, *self._settling)}
            overdue = [
                (thread, delivery)
                for thread, delivery in self._busy.items()
                if (job_id := delivery.job.id) in self._cancel_asked
                and now - self._cancel_asked_at.get(job_id, now) >= grace
                and self._held.get(job_id) is delivery
                and job_id not in settling
                and thread.is_alive()
            ]
            for thread, delivery in overdue:
                self._pending.append(Aborted(delivery=delivery, started_at=clock_now, finished_at=clock_now))
                self._busy.pop(thread, None)
                if thread in self._threads:
                    self._threads.remove(thread)
                self.counters.aborted += 1
                self._abandoned.add(delivery.job.id)
            if overdue:
                self._settle_cv.notify()
        ids = [d.job.id for _, d in overdue]
        for thread, delivery in overdue:  # its run time is unknown here: reported as 0
            self.events.job_cancelled(
                job=delivery.job, duration=0.0, worker=self.name, thread=thread.name.removeprefix("jobchain-")
            )
        if ids:
            self.log.warning("jobs_aborted", job_ids=ids, grace=grace)
        return ids

    def _enforce_timeouts(self, now: float) -> None:
        with self._cv:
            for running in self._running.values():
                if running.deadline is not None and not running.timed_out and now >= running.deadline:
                    running.timed_out = True
                    job = running.delivery.job
                    self.log.warning("job_timeout", job_id=job.id, task=job.task)
                    _raise_in_thread(running.thread_id, JobTimeout)

    def _give_back_prefetched(self, now: float) -> None:
        """Release the buffered deliveries beyond one per thread once they waited PREFETCH_HOLD (the
        monitor, each tick; adaptive prefetch only).

        A batch sized while jobs were short holds up to PREFETCH_CAP jobs; should
        the jobs turn long, those would wait here while other workers idle. The
        last of the buffer go back to their queue unrun (no attempt used).
        """
        if self._abuffer:
            self._give_back_async(now)
        if not self._adaptive and self._aio_loop is None:
            return
        with self._cv:
            extra = len(self._buffer) - self.concurrency
            if extra <= 0 or now - self._buffered_at < PREFETCH_HOLD:
                return
            back = [self._buffer.pop() for _ in range(extra)][::-1]
            for delivery in back:
                self._deadline.pop(delivery.token, None)
            # the jobs are long now: one per thread until finished jobs say otherwise (their times
            # pull the average back down), or the fetcher would take the same jobs straight back
            self._run_avg = max(self._run_avg or 0.0, PREFETCH_HOLD)
            self.prefetch = self.concurrency
            self._pending.extend(Released(delivery=d) for d in back)
            self._settle_cv.notify()
        self.log.info("prefetched_jobs_given_back", count=len(back), job_ids=[d.job.id for d in back][:50])

    def _give_back_async(self, now: float) -> None:
        """Release the coroutine jobs waiting beyond the loop's free room once they waited PREFETCH_HOLD.

        They were reserved beside the threads' jobs (one reserve serves both):
        should the loop stay full, they go back to their queue unrun for other
        workers instead of waiting here.
        """
        with self._cv:
            room = max(0, self.async_concurrency - self._aio_running)
            extra = len(self._abuffer) - room
            if extra <= 0 or now - self._abuffered_at < PREFETCH_HOLD:
                return
            back = [self._abuffer.pop() for _ in range(extra)][::-1]
            for delivery in back:
                self._deadline.pop(delivery.token, None)
            # the coroutines are long now: reserve none ahead until a short one ends, or the fetcher would
            # take the same jobs straight back
            self._async_ahead = 0
            self._pending.extend(Released(delivery=d) for d in back)
            self._settle_cv.notify()
        self.log.info("prefetched_jobs_given_back", count=len(back), job_ids=[d.job.id for d in back][:50])

    def _drop_expired(self, now: float) -> None:
        """Drop buffered deliveries past their local deadline (the monitor, each tick)."""
        with self._cv:
            if not self._buffer and not self._abuffer:
                return
            deadline = self._deadline
            expired = [d for d in (*self._buffer, *self._abuffer) if deadline.get(d.token, _NEVER) <= now]
            if expired:
                gone = {id(d) for d in expired}
                self._buffer = deque(d for d in self._buffer if id(d) not in gone)
                self._abuffer = deque(d for d in self._abuffer if id(d) not in gone)
                self._drop(expired, "lease_expired_before_start")
