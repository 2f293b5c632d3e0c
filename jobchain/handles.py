"""Handles returned by ``submit``: look up, wait for and render what was submitted."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from attrs import evolve

from jobchain.aio import poll
from jobchain.errors import (
    ChainHaltedError,
    JobCancelledError,
    JobFailedError,
    NotReadyError,
    WaitTimeoutError,
)
from jobchain.model import ChainRecord, ChainState, JobRecord, JobState, StepState

if TYPE_CHECKING:
    from jobchain.app import App
    from jobchain.buffer import PendingSubmit
    from jobchain.capabilities import CancelReport

__all__ = ["ChainHandle", "JobHandle"]


def _poll(check: Any, timeout: float | None) -> bool:
    """Call ``check()`` with a growing pause until it is true or ``timeout`` passes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        if check():
            return True
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
        else:
            time.sleep(pause)
        pause = min(pause * 1.5, 0.05)


def _job_result(job_id: str, record: JobRecord | None) -> Any:
    """A job's result from its record; raises if it failed, was cancelled or has not finished."""
    if record is None:
        raise NotReadyError(job_id, "unknown")
    if record.state is JobState.SUCCEEDED:
        return record.result
    if record.state is JobState.FAILED:
        raise JobFailedError(job_id, record.error)
    if record.state is JobState.CANCELLED:
        raise JobCancelledError(job_id)
    raise NotReadyError(job_id, record.state.value)


def _chain_result(chain_id: str, record: ChainRecord | None) -> Any:
    """A chain's result from its record; raises if it failed, was cancelled or has not finished."""
    if record is None:
        raise NotReadyError(chain_id, "unknown")
    if record.state is ChainState.SUCCEEDED:
        return record.result
    if record.state is ChainState.FAILED:
        failed = record.failed_step()
        step, member = failed if failed is not None else (0, None)
        job_id = member.job_id if member else ""
        raise ChainHaltedError(chain_id, step, job_id, member.error if member else None)
    if record.state is ChainState.CANCELLED:
        raise JobCancelledError(chain_id, "chain")
    raise NotReadyError(chain_id, record.state.value)


def _pending_members(record: ChainRecord) -> list[str]:
    """The job ids of a chain's members not finished in the record (those that may be running)."""
    return [m.job_id for step in record.steps for m in step.members if m.state is StepState.PENDING]


def _shown(record: ChainRecord, running: set[str]) -> ChainRecord:
    """The record with the members in ``running`` shown ``running`` (and the chain, if it was pending)."""
    steps = list(record.steps)
    for index, step in enumerate(steps):
        if any(m.state is StepState.PENDING and m.job_id in running for m in step.members):
            members = tuple(
                evolve(m, state=StepState.RUNNING)
                if m.state is StepState.PENDING and m.job_id in running
                else m
                for m in step.members
            )
            steps[index] = evolve(step, members=members)
    shown = evolve(record, steps=tuple(steps))
    if shown.state is ChainState.PENDING and any(s.state is not StepState.PENDING for s in shown.steps):
        shown = evolve(shown, state=ChainState.RUNNING)
    return shown


class _Submitted:
    """What job and chain handles share: whether the submit is stored yet, or waits in the buffer."""

    def __init__(self, app: App, submitted_id: str, pending: PendingSubmit | None = None) -> None:
        self.app = app
        self.id = submitted_id
        self._pending = pending

    @property
    def buffered(self) -> bool:
        """True while the submit waits in the App's submit buffer for the backend (not stored yet)."""
        return self._pending is not None and self._pending.state == JobState.BUFFERED.value

    def _unstored_state(self) -> str | None:
        """``buffered`` or ``not_stored`` while the backend does not have the submit; None once it does."""
        if self._pending is None:
            return None
        state = self._pending.state
        if state == "stored":
            self._pending = None  # from now on the backend knows
            return None
        return state

    def wait_stored(self, timeout: float | None = None) -> None:
        """Block until the backend has stored the submit (at once if it was never buffered).

        Raises :class:`WaitTimeoutError` after ``timeout`` seconds, and the reason
        (:class:`~jobchain.errors.SubmitsNotStoredError`) if the submit was given up.
        """
        pending = self._pending
        if pending is None:
            return
        if not pending.wait(timeout):
            raise WaitTimeoutError(self.id, timeout or 0.0, pending.state)
        if pending.error is not None and not pending.stored:
            raise pending.error

    def _wait_stored_until(self, deadline: float | None) -> None:
        if self._pending is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.wait_stored(left)

    async def wait_stored_async(self, timeout: float | None = None) -> None:
        """:meth:`wait_stored` for a coroutine (the flusher wakes it: no thread waits, no polling)."""
        pending = self._pending
        if pending is None:
            return
        if not await pending.wait_async(timeout):
            raise WaitTimeoutError(self.id, timeout or 0.0, pending.state)
        if pending.error is not None and not pending.stored:
            raise pending.error

    async def _wait_stored_until_async(self, deadline: float | None) -> None:
        if self._pending is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            await self.wait_stored_async(left)


class JobHandle(_Submitted):
    """A submitted job: ``.id``, ``.status()``, ``.wait(timeout)``, ``.result()``.

    A job submitted while the backend was unreachable waits in the App's submit
    buffer: ``status()`` says ``buffered`` until it is stored, and
    :meth:`wait_stored` waits for that.
    """

    def __init__(self, app: App, job_id: str, pending: PendingSubmit | None = None) -> None:
        super().__init__(app, job_id, pending)

    def record(self) -> JobRecord | None:
        """Everything the backend knows about the job, or None (None while it is buffered)."""
        if self._unstored_state() is not None:
            return None
        return self.app.backend.get_job(self.id)

    def status(self) -> str:
        """``buffered``, ``queued``, ``delayed``, ``running``, ``succeeded``, ``failed``, ``cancelled``
        or ``unknown``.

        ``not_stored`` if it was buffered and then given up (see :meth:`wait_stored`).
        """
        unstored = self._unstored_state()
        if unstored is not None:
            return unstored
        record = self.record()
        return "unknown" if record is None else record.state.value

    def result(self) -> Any:
        """The job's return value; raises if it failed or has not finished."""
        unstored = self._unstored_state()
        if unstored is not None:
            raise NotReadyError(self.id, unstored)
        return _job_result(self.id, self.record())

    def cancel(self) -> CancelReport:
        """Cancel the job (see :meth:`jobchain.App.cancel`); a buffered one is stored first."""
        self.wait_stored()
        return self.app.cancel([self.id])

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes and return its result (raises :class:`JobFailedError`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_stored_until(deadline)

        def finished() -> bool:
            record = self.record()
            return record is not None and record.state.finished

        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not _poll(finished, left):
            raise WaitTimeoutError(self.id, timeout or 0.0, self.status())
        return self.result()

    # --- the same, for coroutines (see jobchain.aio) ----------------------------------

    async def record_async(self) -> JobRecord | None:
        """:meth:`record`, awaited."""
        if self._unstored_state() is not None:
            return None
        return await self.app.aio.get_job(self.id)

    async def status_async(self) -> str:
        """:meth:`status`, awaited."""
        unstored = self._unstored_state()
        if unstored is not None:
            return unstored
        record = await self.record_async()
        return "unknown" if record is None else record.state.value

    async def result_async(self) -> Any:
        """:meth:`result`, awaited."""
        unstored = self._unstored_state()
        if unstored is not None:
            raise NotReadyError(self.id, unstored)
        return _job_result(self.id, await self.record_async())

    async def cancel_async(self) -> CancelReport:
        """:meth:`cancel`, awaited (a buffered job is stored first)."""
        await self.wait_stored_async()
        return await self.app.aio.run(self.app.cancel, [self.id])

    async def wait_async(self, timeout: float | None = None) -> Any:
        """:meth:`wait` for a coroutine: polls with ``await asyncio.sleep``, raises what ``wait`` raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._wait_stored_until_async(deadline)
        seen: list[JobRecord | None] = [None]

        async def finished() -> bool:
            seen[0] = record = await self.record_async()
            return record is not None and record.state.finished

        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not await poll(finished, left):
            raise WaitTimeoutError(self.id, timeout or 0.0, await self.status_async())
        return _job_result(self.id, seen[0])

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"


class ChainHandle(_Submitted):
    """A submitted chain or group; ``.id`` is the chain's id.

    Like a job's handle, it says ``buffered`` while the chain waits in the
    App's submit buffer; :meth:`wait_stored` waits until it is stored.
    """

    def __init__(self, app: App, chain_id: str, pending: PendingSubmit | None = None) -> None:
        super().__init__(app, chain_id, pending)

    def record(self) -> ChainRecord | None:
        """The chain record, with steps whose job is in flight shown as ``running`` (None while buffered).

        A ``pending`` chain one of whose jobs is in flight is shown ``running`` too:
        the stored record moves on only when a settlement first touches it.
        """
        if self._unstored_state() is not None:
            return None
        record = self.app.backend.get_chain(self.id)
        if record is None or record.finished:
            return record
        running = set()
        for job_id in _pending_members(record):
            job = self.app.backend.get_job(job_id)
            if job is not None and job.state is JobState.RUNNING:
                running.add(job_id)
        return _shown(record, running)

    def status(self) -> str:
        """``buffered``, ``pending``, ``running``, ``succeeded``, ``failed``, ``unknown`` or ``not_stored``.

        A chain is ``pending`` until one of its jobs starts (see :meth:`record`).
        """
        unstored = self._unstored_state()
        if unstored is not None:
            return unstored
        record = self.app.backend.get_chain(self.id)
        if record is not None and record.state is ChainState.PENDING:
            record = self.record()
        return "unknown" if record is None else record.state.value

    def result(self) -> Any:
        """The last step's result (a list for a group); raises if the chain failed or is not finished."""
        unstored = self._unstored_state()
        if unstored is not None:
            raise NotReadyError(self.id, unstored)
        return _chain_result(self.id, self.app.backend.get_chain(self.id))

    def cancel(self) -> CancelReport:
        """Cancel the chain's unfinished jobs (see :meth:`jobchain.App.cancel`): the chain ends cancelled.

        Its later steps, never enqueued, become ``not_executed``.
        """
        self.wait_stored()
        record = self.app.backend.get_chain(self.id)
        return self.app.cancel([] if record is None else _pending_members(record))

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the chain succeeds or fails; return its result or raise ChainHaltedError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_stored_until(deadline)

        def finished() -> bool:
            record = self.app.backend.get_chain(self.id)
            return record is not None and record.finished

        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not _poll(finished, left):
            raise WaitTimeoutError(self.id, timeout or 0.0, self.status())
        return self.result()

    # --- the same, for coroutines (see jobchain.aio) ----------------------------------

    async def record_async(self) -> ChainRecord | None:
        """:meth:`record`, awaited."""
        if self._unstored_state() is not None:
            return None
        aio = self.app.aio
        record = await aio.get_chain(self.id)
        if record is None or record.finished:
            return record
        pending = _pending_members(record)
        jobs = await asyncio.gather(*(aio.get_job(job_id) for job_id in pending))
        running = {i for i, job in zip(pending, jobs, strict=True) if job and job.state is JobState.RUNNING}
        return _shown(record, running)

    async def status_async(self) -> str:
        """:meth:`status`, awaited."""
        unstored = self._unstored_state()
        if unstored is not None:
            return unstored
        record = await self.app.aio.get_chain(self.id)
        if record is not None and record.state is ChainState.PENDING:
            record = await self.record_async()
        return "unknown" if record is None else record.state.value

    async def result_async(self) -> Any:
        """:meth:`result`, awaited."""
        unstored = self._unstored_state()
        if unstored is not None:
            raise NotReadyError(self.id, unstored)
        return _chain_result(self.id, await self.app.aio.get_chain(self.id))

    async def cancel_async(self) -> CancelReport:
        """:meth:`cancel`, awaited."""
        await self.wait_stored_async()
        record = await self.app.aio.get_chain(self.id)
        return await self.app.aio.run(self.app.cancel, [] if record is None else _pending_members(record))

    async def wait_async(self, timeout: float | None = None) -> Any:
        """:meth:`wait` for a coroutine: polls with ``await asyncio.sleep``, raises what ``wait`` raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._wait_stored_until_async(deadline)
        seen: list[ChainRecord | None] = [None]

        async def finished() -> bool:
            seen[0] = record = await self.app.aio.get_chain(self.id)
            return record is not None and record.finished

        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not await poll(finished, left):
            raise WaitTimeoutError(self.id, timeout or 0.0, await self.status_async())
        return _chain_result(self.id, seen[0])

    def render(self) -> str:
        """``A (succeeded) -> B (failed) -> C (not executed)``."""
        record = self.record()
        return "unknown chain" if record is None else record.render()

    def job_ids(self) -> list[list[str]]:
        """The job ids of every step (one per member of a group step), known while buffered too."""
        pending = self._pending
        if pending is not None and pending.state != "stored":
            record = next((c for c in pending.chains if c.id == self.id), None)
        else:
            record = self.app.backend.get_chain(self.id)
        if record is None:
            return []
        return [[m.job_id for m in step.members] for step in record.steps]

    def __repr__(self) -> str:
        return f"<ChainHandle {self.id}>"
