"""The event loop: ``async def`` tasks run as coroutines next to the thread pool.

A Worker whose runtime declares an async task (or that is given
``async_concurrency``) runs one event loop on a thread of its own. The
fetcher reserves for both sides (:meth:`WorkerCore._reserve_limit`); the
deliveries of async tasks wait in their own buffer, and a feeder thread starts
them on the loop, at most ``async_concurrency`` at once. Each job runs as an
:class:`asyncio.Task` through the same steps as on a thread: the same checks
(:meth:`Execution._check`), limits waited for on a helper thread (the loop
never blocks on a backend), the same outcome (:meth:`Execution._finish`),
handed to the same settler. Leases, heartbeats and cancel polls are the
monitor's, as for threads.

A task's ``timeout`` cancels its coroutine (the job fails with
:class:`~jobchain.errors.JobTimeout`); a cancel request cancels it too (the
outcome is ``cancelled``). :func:`jobchain.current_job` works inside: each
job's asyncio task has its own context.

A watchdog thread pings the loop every ~50 ms while coroutine jobs run; a
ping unanswered for ``loop_block_threshold`` seconds means a coroutine
blocks the loop (``time.sleep``, a blocking client): it logs
``event_loop_blocked`` once per episode, with the task and job it caught
running.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jobchain.context import CurrentJob, _current
from jobchain.errors import JobTimeout
from jobchain.model import Delivery, Outcome
from jobchain.worker._core import _NEVER, PREFETCH_HOLD, SlotStats, _left
from jobchain.worker._execution import Execution, _Admit
from jobchain.worker._runtime import RunnableTask

__all__ = ["AsyncRunner"]

T = TypeVar("T")

#: seconds between two pings of the event loop by the watchdog (at most)
PING_EVERY = 0.05
#: threads that wait for rate and concurrency limits on behalf of coroutine jobs
_ADMIT_THREADS = 32


class AsyncRunner(Execution):
    """Runs the jobs of ``async def`` tasks on the worker's event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: job id -> its asyncio task, while the task's coroutine runs (a cancel request cancels it)
        self._aio_tasks: dict[str, asyncio.Task[Any]] = {}
        #: asyncio task -> the delivery it runs (the watchdog names the job that blocks the loop)
        self._aio_jobs: dict[asyncio.Task[Any], Delivery] = {}
        self._aio_thread: threading.Thread | None = None
        self._aio_feeder: threading.Thread | None = None
        self._aio_watchdog: threading.Thread | None = None
        self._aio_done = threading.Event()
        #: short backend calls made for coroutine jobs (settle a suspect, free limit slots)
        self._aio_calls: ThreadPoolExecutor | None = None
        #: waits for limits (a separate pool: a slot freed never queues behind jobs waiting for one)
        self._aio_admits: ThreadPoolExecutor | None = None

    # --- life cycle ---------------------------------------------------------------------

    @property
    def runs_async(self) -> bool:
        """True while the worker runs an event loop for ``async def`` tasks."""
        return self._aio_loop is not None

    def _aio_wanted(self) -> bool:
        tasks = list(self.runtime.tasks.values())
        return self._async_asked or any(getattr(t, "is_async", False) for t in tasks)

    def _aio_start(self) -> None:
        """Start the event loop, its feeder and its watchdog when the worker has async tasks."""
        if not self._aio_wanted():
            return
        tasks = list(self.runtime.tasks.values())
        self._plain_tasks = not tasks or any(not getattr(t, "is_async", False) for t in tasks)
        loop = asyncio.new_event_loop()
        self._aio_calls = ThreadPoolExecutor(2, thread_name_prefix="jobchain-aio-call")
        self._aio_admits = ThreadPoolExecutor(_ADMIT_THREADS, thread_name_prefix="jobchain-aio-admit")
        ready = threading.Event()
        self._aio_thread = threading.Thread(
            target=self._loop_main, args=(loop, ready), name="jobchain-aio-loop", daemon=True
        )
        self._aio_thread.start()
        ready.wait()
        self._aio_loop = loop  # from here on the fetcher reserves for the loop too
        self._aio_feeder = threading.Thread(target=self._feeder_main, name="jobchain-aio-feeder", daemon=True)
        self._aio_feeder.start()
        self._aio_watchdog = threading.Thread(
            target=self._watchdog_main, args=(loop,), name="jobchain-aio-watchdog", daemon=True
        )
        self._aio_watchdog.start()

    def _loop_main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _aio_stop(self, deadline: float | None) -> bool:
        """Stop after the running coroutine jobs end (the feeder stops starting new ones at once).

        True if they all ended by ``deadline``. Otherwise the loop keeps running
        them (a daemon thread) and their jobs are left to their leases.
        """
        loop = self._aio_loop
        if loop is None:
            return True
        with self._cv:
            self._aio_cv.notify_all()
        if self._aio_feeder is not None:
            self._aio_feeder.join(_left(deadline))
        with self._cv:
            while self._aio_running and _left(deadline) != 0.0:
                left = _left(deadline)
                self._aio_cv.wait(0.05 if left is None else min(0.05, left))
            busy = self._aio_running
        if busy:
            return False
        self._aio_done.set()
        loop.call_soon_threadsafe(loop.stop)
        if self._aio_thread is not None:
            self._aio_thread.join(_left(deadline))
        for pool in (self._aio_calls, self._aio_admits):
            if pool is not None:
                pool.shutdown(wait=False)
        return True

    # --- taking jobs for the loop -------------------------------------------------------------

    def _feeder_main(self) -> None:
        """Start reserved coroutine jobs on the loop while it has room (at most ``async_concurrency``)."""
        loop = self._aio_loop
        assert loop is not None
        while True:
            with self._cv:
                batch = self._take_async()
            if batch is None:
                return
            solo = len(batch) == 1 and batch[0].job.id == self._solo
            if solo and not self._hold_suspect(batch[0]):
                with self._cv:
                    self._aio_running -= 1
                    self._solo = None
                    self._wake_all()
                continue
            try:
                loop.call_soon_threadsafe(self._spawn, batch, solo)
            except RuntimeError:  # the loop is closed: only after stop() gave up waiting (unreachable)
                return

    def _take_async(self) -> list[Delivery] | None:
        """The coroutine jobs that may start now (the lock is held); None when stopping.

        A suspect comes alone, and only once no other job runs: ``_solo`` then
        holds back the threads and the loop alike.
        """
        while True:
            if self._stopping.is_set():
                return None
            room = self.async_concurrency - self._aio_running
            if self._abuffer and self._solo is None and room > 0:
                batch: list[Delivery] = []
                now = time.monotonic()
                while self._abuffer and len(batch) < room:
                    first = self._abuffer[0]
                    suspect = first.suspect and first.crashes <= self.max_redeliveries
                    if suspect and batch:
                        break  # the batch starts first; the suspect waits for it to end
                    self._abuffer.popleft()
                    if self._deadline.pop(first.token, _NEVER) <= now:
                        self._drop([first], "lease_expired_before_start")
                        continue
                    batch.append(first)
                    if suspect:
                        self._solo = first.job.id
                        if not self._wait_alone():
                            self._solo = None
                            self._abuffer.appendleft(first)  # stop() releases it
                            self._wake_all()
                            return None
                        break
                if len(self._abuffer) < self.async_concurrency:
                    self._fetch_cv.notify()
                if batch:
                    self._aio_running += len(batch)
                    return batch
                continue
            if not self._abuffer:
                self._fetch_cv.notify()
            self._aio_cv.wait(0.2)

    def _wait_alone(self) -> bool:
        """Wait until no thread and no coroutine runs a job (the lock is held); False when stopping."""
        while self._aio_running or any(t.is_alive() for t in self._busy):
            if self._stopping.is_set():
                return False
            self._aio_cv.wait(0.1)
        return not self._stopping.is_set()

    def _wake_all(self) -> None:
        """Wake the pool threads, the feeder and the fetcher (the lock is held)."""
        self._cv.notify_all()
        self._aio_cv.notify_all()
        self._fetch_cv.notify()

    # --- on the loop --------------------------------------------------------------------------

    def _spawn(self, batch: list[Delivery], solo: bool) -> None:
        loop = asyncio.get_running_loop()
        for delivery in batch:
            task = loop.create_task(self._run_on_loop(delivery, solo))
            self._aio_jobs[task] = delivery  # (also the strong reference that keeps the task alive)

    async def _run_on_loop(self, delivery: Delivery, solo: bool) -> None:
        began = time.monotonic()
        outcome = await self._run_job_async(delivery, self.async_slot)
        me = asyncio.current_task()
        if me is not None:
            self._aio_jobs.pop(me, None)
        short = time.monotonic() - began < PREFETCH_HOLD
        with self._cv:
            if short:  # short jobs again: reserve ahead of a full loop (see Monitor._give_back_async)
                self._async_ahead = self._async_ahead_default
            self._pending.append(outcome)
            self._settle_cv.notify()
            if not solo:
                self._aio_running -= 1
                self._aio_cv.notify()
                self._fetch_cv.notify()
        if solo:  # settled before another job starts, as on a thread (see Pool._next)
            await self._call(self._aio_calls, self._settle_now)
            with self._cv:
                self._aio_running -= 1
                self._solo = None
                self._wake_all()

    def _run_job(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        """Run one job on the calling thread; a coroutine job with ``asyncio.run`` if there is no loop.

        That is a task declared async after this worker started without an event
        loop: it still runs, on a pool thread, with its timeout and current_job().
        """
        if self._aio_loop is None:
            task = self.runtime.tasks.get(delivery.job.task)
            if task is not None and getattr(task, "is_async", False):
                return asyncio.run(self._run_job_async(delivery, slot))
        return super()._run_job(delivery, slot)

    async def _run_job_async(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        """Run one coroutine job and return its outcome, whatever the task does (the test mode uses it)."""
        try:
            return await self._execute_async(delivery, slot)
        except BaseException as exc:  # a hook raising, or a cancel from outside the task
            return self._failure_outcome(delivery, exc, slot, 0.0, retry_allowed=True)

    async def _execute_async(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        checked = self._check(delivery, slot)
        if not isinstance(checked, _Admit):
            return checked
        task, limits = checked.task, checked.limits
        if not limits:
            return await self._start_async(delivery, slot, task, checked.now)
        # the waits and backend calls of a limit run on a helper thread: the loop goes on meanwhile
        admitted = await self._call(self._aio_admits, self._admit, delivery, task, limits)
        if admitted != "start":
            return self._not_admitted(delivery, slot, admitted)
        try:
            return await self._start_async(delivery, slot, task, self.runtime.clock.now())
        finally:
            taken = self._limit_slots.get(delivery.job.id, [])
            if taken:
                await self._call(self._aio_calls, self._release_limits, taken)

    async def _start_async(
        self, delivery: Delivery, slot: SlotStats, task: RunnableTask, now: float
    ) -> Outcome:
        """Await the task of a job that may start now, under its timeout; a cancel request cancels it."""
        job = delivery.job
        self.events.job_started(job=job, worker=self.name, thread=slot.name)
        timeout = task.timeout
        me = asyncio.current_task()
        assert me is not None
        t0 = time.perf_counter()
        failure: BaseException | None = None
        result: Any = None
        expired = False
        context = _current.set(CurrentJob(job, self._cancel_asked))  # this asyncio task's own context
        self._aio_tasks[job.id] = me
        if job.id in self._cancel_asked:  # asked between the checks and now: stop at the first await
            me.cancel()
        try:
            try:
                if timeout is None:
                    result = await _awaited(task.fn, job.args, job.kwargs)
                else:
                    async with asyncio.timeout(timeout) as scope:
                        try:
                            result = await _awaited(task.fn, job.args, job.kwargs)
                        finally:
                            expired = scope.expired()
            finally:
                self._aio_tasks.pop(job.id, None)
                _current.reset(context)
        except BaseException as exc:
            failure = exc
            if isinstance(exc, asyncio.CancelledError):
                me.uncancel()  # the cancel is this job's outcome, not the end of the loop's task
        duration = time.perf_counter() - t0
        if expired and timeout is not None:
            self.log.warning("job_timeout", job_id=job.id, task=job.task)
            failure = JobTimeout(f"task {task.name!r} ran past its timeout of {timeout:g}s")
        return self._finish(delivery, slot, task, now, duration, result, failure)

    async def _call(self, pool: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a helper thread (the loop's default executor when ``pool`` is None)."""
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # --- cancel requests and the watchdog -----------------------------------------------------------

    def _cancel_coroutines(self, job_ids: Iterable[str]) -> None:
        """Cancel the coroutines of these jobs that run now (called by the monitor)."""
        loop = self._aio_loop
        if loop is None:
            return
        ids = list(job_ids)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs on it
            loop.call_soon_threadsafe(self._cancel_on_loop, ids)

    def _cancel_on_loop(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            task = self._aio_tasks.get(job_id)
            if task is not None:
                task.cancel(msg=f"job {job_id} was cancelled")

    def _watchdog_main(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ping the loop while coroutine jobs run; log once per episode when it does not answer in time."""
        threshold = self.loop_block_threshold
        every = min(PING_EVERY, threshold / 2)
        done = self._aio_done
        while not done.wait(every):
            if not self._aio_running:
                continue  # idle: nothing can block the loop
            answered = threading.Event()
            sent = time.monotonic()
            try:
                loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop closed
                return
            if answered.wait(threshold):
                continue
            running = asyncio.current_task(loop)
            delivery = None if running is None else self._aio_jobs.get(running)
            self.log.warning(
                "event_loop_blocked",
                task=None if delivery is None else delivery.job.task,
                job_id=None if delivery is None else delivery.job.id,
                blocked_for=round(time.monotonic() - sent, 3),
                threshold=threshold,
            )
            while not answered.wait(0.1):  # one line per episode: wait until the loop answers again
                if done.is_set():
                    return
            self.log.info("event_loop_unblocked", blocked_for=round(time.monotonic() - sent, 3))


async def _awaited(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
    """Call the task and await what it returns (a coroutine; a plain value is taken as it is)."""
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        return await value
    return value
