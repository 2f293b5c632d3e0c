"""Handles returned by ``submit``: look up, wait for and render what was submitted."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from attrs import evolve

from jobchain.errors import ChainHaltedError, JobFailedError, NotReadyError, WaitTimeoutError
from jobchain.model import ChainRecord, ChainState, JobRecord, JobState, StepState

if TYPE_CHECKING:
    from jobchain.app import App

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


class JobHandle:
    """A submitted job: ``.id``, ``.status()``, ``.wait(timeout)``, ``.result()``."""

    def __init__(self, app: App, job_id: str) -> None:
        self.app = app
        self.id = job_id

    def record(self) -> JobRecord | None:
        """Everything the backend knows about the job, or None."""
        return self.app.backend.get_job(self.id)

    def status(self) -> str:
        """``queued``, ``delayed``, ``running``, ``succeeded``, ``failed`` or ``unknown``."""
        record = self.record()
        return "unknown" if record is None else record.state.value

    def result(self) -> Any:
        """The job's return value; raises if it failed or has not finished."""
        record = self.record()
        if record is None:
            raise NotReadyError(self.id, "unknown")
        if record.state is JobState.SUCCEEDED:
            return record.result
        if record.state is JobState.FAILED:
            raise JobFailedError(self.id, record.error)
        raise NotReadyError(self.id, record.state.value)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes and return its result (raises :class:`JobFailedError`)."""

        def finished() -> bool:
            record = self.record()
            return record is not None and record.state.finished

        if not _poll(finished, timeout):
            raise WaitTimeoutError(self.id, timeout or 0.0, self.status())
        return self.result()

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"


class ChainHandle:
    """A submitted chain or group; ``.id`` is the chain's id."""

    def __init__(self, app: App, chain_id: str) -> None:
        self.app = app
        self.id = chain_id

    def record(self) -> ChainRecord | None:
        """The chain record, with steps whose job is in flight shown as ``running``."""
        record = self.app.backend.get_chain(self.id)
        if record is None or record.finished:
            return record
        steps = list(record.steps)
        for index, step in enumerate(steps):
            members = list(step.members)
            changed = False
            for m, member in enumerate(members):
                if member.state is StepState.PENDING:
                    job = self.app.backend.get_job(member.job_id)
                    if job is not None and job.state is JobState.RUNNING:
                        members[m] = evolve(member, state=StepState.RUNNING)
                        changed = True
            if changed:
                steps[index] = evolve(step, members=tuple(members))
        return evolve(record, steps=tuple(steps))

    def status(self) -> str:
        """``running``, ``completed``, ``halted`` or ``unknown``."""
        record = self.app.backend.get_chain(self.id)
        return "unknown" if record is None else record.state.value

    def result(self) -> Any:
        """The last step's result (a list for a group); raises if halted or not finished."""
        record = self.app.backend.get_chain(self.id)
        if record is None:
            raise NotReadyError(self.id, "unknown")
        if record.state is ChainState.COMPLETED:
            return record.result
        if record.state is ChainState.HALTED:
            failed = record.failed_step()
            step, member = failed if failed is not None else (0, None)
            raise ChainHaltedError(
                self.id, step, member.job_id if member else "", member.error if member else None
            )
        raise NotReadyError(self.id, record.state.value)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the chain completes or halts; return its result or raise ChainHaltedError."""

        def finished() -> bool:
            record = self.app.backend.get_chain(self.id)
            return record is not None and record.finished

        if not _poll(finished, timeout):
            raise WaitTimeoutError(self.id, timeout or 0.0, self.status())
        return self.result()

    def render(self) -> str:
        """``A (completed) -> B (failed) -> C (not executed)``."""
        record = self.record()
        return "unknown chain" if record is None else record.render()

    def job_ids(self) -> list[list[str]]:
        """The job ids of every step (one per member of a group step)."""
        record = self.app.backend.get_chain(self.id)
        if record is None:
            return []
        return [[m.job_id for m in step.members] for step in record.steps]

    def __repr__(self) -> str:
        return f"<ChainHandle {self.id}>"
