"""Running one job: the checks before it starts, the task, its timeout and its result."""

from __future__ import annotations

import ctypes
import inspect
import json
import threading
import time
from typing import Any

from attrs import frozen

from jobchain import signing
from jobchain.context import CurrentJob, _current
from jobchain.errors import (
    InvalidJobError,
    JobTimeout,
    ResultTooLarge,
    UnknownTaskError,
    WorkerLost,
)
from jobchain.errortext import cap, describe, type_name
from jobchain.limits import Limits
from jobchain.model import Aborted, Completed, Delivery, ErrorInfo, Failed, Outcome, Released, Retried
from jobchain.payload import find_non_json, has_unstorable
from jobchain.worker._core import SlotStats, _Running
from jobchain.worker._limits import LimitGate
from jobchain.worker._runtime import RunnableTask


class JobExpired(Exception):  # noqa: N818 - recorded as the error type name
    """The job was not started before its expiry time."""


@frozen
class _Admit:
    """A job that passed the checks: its task, the limits to wait for (often none), the time checked."""

    task: RunnableTask
    limits: list[tuple[str, Limits]]
    now: float


_result_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_utf8_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class Execution(LimitGate):
    """Runs one job on the calling thread and returns its outcome; never raises for the task."""

    def _run_job(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        """Run one job and return its outcome, whatever the task does (raises only on a bug here)."""
        try:
            return self._execute(delivery, slot)
        except BaseException as exc:  # a timeout that landed outside the task, a hook raising BaseException
            return self._failure_outcome(delivery, exc, slot, 0.0, retry_allowed=True)

    def _execute(self, delivery: Delivery, slot: SlotStats) -> Outcome:
        checked = self._check(delivery, slot)
        if not isinstance(checked, _Admit):
            return checked
        task, limits = checked.task, checked.limits
        if limits:
            admitted = self._admit(delivery, task, limits)
            if admitted != "start":
                return self._not_admitted(delivery, slot, admitted)
            try:
                return self._start(delivery, slot, task, self.runtime.clock.now())
            finally:
                self._release_limits(self._limit_slots.get(delivery.job.id, []))
        return self._start(delivery, slot, task, checked.now)

    def _check(self, delivery: Delivery, slot: SlotStats) -> Outcome | _Admit:
        """The checks before a job may start: its outcome if it may not, else its task and limits."""
        job = delivery.job
        runtime = self.runtime
        now = runtime.clock.now()
        slot.jobs += 1
        if delivery.crashes > self.max_redeliveries:
            error = WorkerLost(
                f"lease lost {delivery.crashes} times while the job ran (workers running it died or "
                f"stalled); max_redeliveries is {self.max_redeliveries}"
            )
            return self._failure_outcome(delivery, error, slot, 0.0, retry_allowed=False)
        forged = signing.check_job(runtime.signer, job)  # before anything of the job is trusted
        if forged is not None:
            return self._failure_outcome(delivery, forged, slot, 0.0, retry_allowed=False)
        if job.expires_at is not None and now > job.expires_at:
            error_exp = JobExpired(f"job expired {now - job.expires_at:.3f}s before it could start")
            return self._failure_outcome(delivery, error_exp, slot, 0.0, retry_allowed=False)
        if job.id in self._cancel_asked:  # cancelled while it waited in this worker's buffer: never started
            return self._aborted(delivery, slot, now, 0.0)
        task = runtime.tasks.get(job.task)
        if task is None:
            unknown = UnknownTaskError(job.task, list(runtime.tasks))
            return self._failure_outcome(delivery, unknown, slot, 0.0, retry_allowed=False)
        limits: list[tuple[str, Limits]] = []
        if getattr(task, "limits", None) is not None or self._queue_limits:
            limits = self._limits_of(delivery, task)
        return _Admit(task=task, limits=limits, now=now)

    def _not_admitted(self, delivery: Delivery, slot: SlotStats, admitted: str) -> Outcome:
        """The outcome of a job its limits held until the worker stopped or the job was cancelled."""
        if admitted == "stop":  # stopping while held: back unrun, no attempt used
            return Released(delivery=delivery)
        return self._aborted(delivery, slot, self.runtime.clock.now(), 0.0)  # cancelled while held

    def _start(self, delivery: Delivery, slot: SlotStats, task: RunnableTask, now: float) -> Outcome:
        """Run the task of a job that may start now."""
        job = delivery.job
        asked = self._cancel_asked
        self.events.job_started(job=job, worker=self.name, thread=slot.name)
        timeout = task.timeout
        running: _Running | None = None
        if timeout is not None:
            # only the monitor's timeout check reads _running: a job without a timeout skips the lock
            running = _Running(
                delivery=delivery, thread_id=threading.get_ident(), deadline=time.monotonic() + timeout
            )
            with self._cv:
                self._running[job.id] = running
        started_at = now
        t0 = time.perf_counter()
        failure: BaseException | None = None
        result: Any = None
        context = _current.set(CurrentJob(job, asked))
        try:
            try:
                result = task.fn(*job.args, **job.kwargs)
            finally:
                _current.reset(context)
                if running is not None:
                    with self._cv:
                        self._running.pop(job.id, None)
                        if running.timed_out:
                            _clear_in_thread(running.thread_id)
        except BaseException as exc:
            failure = exc
        duration = time.perf_counter() - t0
        if running is not None and running.timed_out:
            failure = JobTimeout(f"task {task.name!r} ran past its timeout of {timeout:g}s")
        if failure is None and inspect.iscoroutine(result):  # a plain function that returned a coroutine
            result.close()  # no "never awaited" warning
            failure = InvalidJobError(
                f"task {task.name!r} returned a coroutine from a plain function: declare it "
                "`async def` (the worker then awaits it on its event loop)"
            )
            return self._finish(delivery, slot, task, started_at, duration, None, failure, retry=False)
        return self._finish(delivery, slot, task, started_at, duration, result, failure)

    def _finish(
        self,
        delivery: Delivery,
        slot: SlotStats,
        task: RunnableTask,
        started_at: float,
        duration: float,
        result: Any,
        failure: BaseException | None,
        *,
        retry: bool = True,
    ) -> Outcome:
        """The outcome of a task that ran (on a thread or on the event loop), its events emitted."""
        job = delivery.job
        runtime = self.runtime
        if self._abandoned and job.id in self._abandoned:  # a hard abort reported it cancelled already
            self._abandoned.discard(job.id)
            return Aborted(delivery=delivery, started_at=started_at, finished_at=runtime.clock.now())
        if job.id in self._cancel_asked and self._can_cancel:  # asked to stop: whatever it did, cancelled
            return self._aborted(delivery, slot, started_at, duration)
        if failure is not None:
            return self._failure_outcome(
                delivery, failure, slot, duration, retry_allowed=retry, retry=task.retry
            )
        try:
            size = _result_too_large(result, runtime.max_payload)
        except Exception as exc:  # TypeError/ValueError, or whatever the value's own methods raise
            where = _where_not_json(result, exc)
            bad = InvalidJobError(f"task {task.name!r} returned a value JSON cannot carry: {where}")
            return self._failure_outcome(delivery, bad, slot, duration, retry_allowed=False)
        if size is not None:
            too_large = ResultTooLarge(task.name, size, runtime.max_payload)
            return self._failure_outcome(delivery, too_large, slot, duration, retry_allowed=False)
        slot.busy_seconds += duration
        slot.succeeded += 1
        self.events.job_succeeded(
            job=job,
            result=result,
            duration=duration,
            worker=self.name,
            thread=slot.name,
        )
        return Completed(
            delivery=delivery,
            result=result,
            started_at=started_at,
            finished_at=runtime.clock.now(),
            result_sig=signing.sign_result(runtime.signer, job, result),
        )

    def _aborted(self, delivery: Delivery, slot: SlotStats, started_at: float, duration: float) -> Outcome:
        """The outcome of a job stopped at a cancel request: recorded cancelled, never retried."""
        slot.busy_seconds += duration
        job = delivery.job
        self.log.info("job_cancelled", job_id=job.id, task=job.task)
        self.events.job_cancelled(job=job, duration=duration, worker=self.name, thread=slot.name)
        return Aborted(delivery=delivery, started_at=started_at, finished_at=self.runtime.clock.now())

    def _failure_outcome(
        self,
        delivery: Delivery,
        exc: BaseException,
        slot: SlotStats,
        duration: float,
        *,
        retry_allowed: bool,
        retry: Any = None,
    ) -> Outcome:
        job = delivery.job
        now = self.runtime.clock.now()
        error = ErrorInfo.from_exception(
            exc,
            attempt=job.attempt,
            at=now,
            max_bytes=self.runtime.max_error_bytes,
            ran=duration if duration > 0 else None,  # 0.0: refused before the task ran
        )
        slot.busy_seconds += duration
        if retry_allowed and retry is not None and retry.should_retry(exc, job.attempt):
            delay = retry.delay(job.attempt, self.rng)
            slot.retries += 1
            self.events.job_retrying(
                job=job,
                error=error,
                delay=delay,
                duration=duration,
                worker=self.name,
                thread=slot.name,
            )
            return Retried(delivery=delivery, error=error, delay=delay)
        slot.failures += 1
        self.events.job_failed(job=job, error=error, duration=duration, worker=self.name, thread=slot.name)
        return Failed(delivery=delivery, error=error)


def _result_too_large(result: Any, limit: int) -> int | None:
    """The UTF-8 size of the result's JSON if over ``limit``, else None; raises if JSON cannot carry it."""
    encoded = _result_encoder.encode(result)  # ASCII, escapes included: never smaller than the UTF-8 form
    if has_unstorable(result):  # {1: x} would come back as {"1": x}; "\ud800", 65 levels: unstorable
        raise TypeError("keys must be str, strings valid UTF-8, nesting bounded")
    if len(encoded) <= limit:
        return None
    size = len(_utf8_encoder.encode(result).encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def _where_not_json(result: Any, exc: Exception) -> str:
    """Where in ``result`` the value JSON cannot carry is, or what went wrong when that cannot be told."""
    try:
        where = find_non_json(result, "result")
    except Exception:  # the value's own methods raise: say so below
        where = None
    if where is not None and isinstance(exc, TypeError | ValueError | RecursionError):
        return where
    return f"result: {type(result).__name__} ({type_name(exc)}: {cap(describe(exc), 1024)})"


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in another thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


def _clear_in_thread(thread_id: int) -> None:
    """Drop an exception :func:`_raise_in_thread` set that has not been raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
