"""Chain and group transitions as pure functions of the chain record.

Backends call these inside their atomic transition (a lock, a Redis
transaction) so that every backend advances chains the same way:

* :func:`first_jobs` builds the jobs of step 0 when a chain is submitted, and
  :func:`job_for_member` the job of any member (both with
  :func:`jobchain.submission.member_job`, the submit pipeline's builder);
* :func:`apply_completed` records a member's result (a ``pending`` chain
  becomes ``running``) and, once its whole step has succeeded, returns the jobs
  of the next step (or marks the chain ``succeeded``);
* :func:`apply_failed` halts the chain (``failed``): later steps become ``not_executed``;
* :func:`apply_cancelled` ends the chain at a cancelled member: later steps
  become ``not_executed``, the chain ``cancelled``;
* :func:`apply_redrive` puts a failed member back to ``pending`` and the later
  steps with it, so the chain resumes where it stopped;
* :func:`due_after` derives from the record alone the jobs of the step after
  a completed one that are still to run, for a backend whose transition is in
  two parts (the record first, then the jobs), so that a second pass finds
  the same jobs.

Every function is idempotent: applying the same event twice changes nothing
the second time and enqueues nothing, which is what keeps a step from being
enqueued twice.
"""

from __future__ import annotations

from attrs import evolve

from jobchain.model import (
    ChainRecord,
    ChainRef,
    ChainState,
    ErrorInfo,
    Job,
    Json,
    Step,
    StepMember,
    StepState,
)
from jobchain.submission import member_job

__all__ = [
    "apply_cancelled",
    "apply_completed",
    "apply_failed",
    "apply_redrive",
    "due_after",
    "first_jobs",
    "job_for_member",
]


#: the job that runs a member of a step (built by :func:`jobchain.submission.member_job`)
job_for_member = member_job


def first_jobs(record: ChainRecord, args: tuple[Json, ...], now: float) -> list[Job]:
    """Jobs of the first step; ``args`` are the submit arguments, given to each member."""
    return [member_job(record, 0, m, args, now) for m in range(len(record.steps[0].members))]


def _replace_member(record: ChainRecord, step: int, member: int, new: StepMember) -> ChainRecord:
    old_step = record.steps[step]
    members = list(old_step.members)
    members[member] = new
    steps = list(record.steps)
    steps[step] = evolve(old_step, members=tuple(members))
    return evolve(record, steps=tuple(steps))


def _member(record: ChainRecord, ref: ChainRef) -> StepMember | None:
    if ref.step >= len(record.steps):
        return None
    members = record.steps[ref.step].members
    return members[ref.member] if ref.member < len(members) else None


def apply_completed(
    record: ChainRecord,
    ref: ChainRef,
    result: Json,
    *,
    started_at: float | None,
    finished_at: float,
    now: float,
    result_sig: str | None = None,
) -> tuple[ChainRecord, list[Job]]:
    """Record a member's result; return the new record and the next step's jobs, if it is due.

    ``result_sig`` is the worker's signature of the result (``Completed.result_sig``),
    kept with the member so that the next step's jobs carry it.
    """
    member = _member(record, ref)
    if member is None or member.state in (StepState.SUCCEEDED, StepState.NOT_EXECUTED):
        return record, []
    if record.state is ChainState.PENDING:
        record = evolve(record, state=ChainState.RUNNING)
    record = _replace_member(
        record,
        ref.step,
        ref.member,
        evolve(
            member,
            state=StepState.SUCCEEDED,
            result=result,
            result_sig=result_sig,
            error=None,
            started_at=started_at,
            finished_at=finished_at,
        ),
    )
    step = record.steps[ref.step]
    if record.state is not ChainState.RUNNING or step.state is not StepState.SUCCEEDED:
        return record, []
    following = ref.step + 1
    if following == len(record.steps):
        return evolve(record, state=ChainState.SUCCEEDED, finished_at=now), []
    previous = (step.result,)
    jobs = [
        job_for_member(record, following, m, previous, now)
        for m in range(len(record.steps[following].members))
    ]
    return record, jobs


def due_after(record: ChainRecord, step: int, now: float) -> list[Job]:
    """The pending members' jobs of the step after ``step``, once ``step`` has completed in a running chain.

    What :func:`apply_completed` returns when it completes ``step``, minus the
    members that have since completed or failed; empty when the chain is not
    running, ``step`` is not completed or is the last.
    """
    following = step + 1
    if (
        record.state is not ChainState.RUNNING
        or following >= len(record.steps)
        or record.steps[step].state is not StepState.SUCCEEDED
    ):
        return []
    previous = (record.steps[step].result,)
    return [
        job_for_member(record, following, m, previous, now)
        for m, member in enumerate(record.steps[following].members)
        if member.state in (StepState.PENDING, StepState.RUNNING)
    ]


def apply_failed(record: ChainRecord, ref: ChainRef, error: ErrorInfo, *, now: float) -> ChainRecord:
    """Record a member's permanent failure and halt the chain."""
    member = _member(record, ref)
    if member is None or member.state is StepState.FAILED:
        return record
    record = _replace_member(
        record, ref.step, ref.member, evolve(member, state=StepState.FAILED, error=error, finished_at=now)
    )
    if record.state is ChainState.CANCELLED:  # a group member failing after another was cancelled
        return record
    steps = list(record.steps)
    for index in range(ref.step + 1, len(steps)):
        steps[index] = _set_all(steps[index], StepState.NOT_EXECUTED)
    return evolve(record, steps=tuple(steps), state=ChainState.FAILED, finished_at=now)


def apply_cancelled(record: ChainRecord, ref: ChainRef, *, now: float) -> ChainRecord:
    """Record a member cancelled and end the chain: later steps ``not_executed``, the chain ``cancelled``.

    A cancelled member of a group ends the chain too: the chain does not wait
    for the group's other members (they run to their end unless cancelled
    themselves, and their results advance nothing). A member already
    finished, or a chain already ended, is left as it is.
    """
    member = _member(record, ref)
    if member is None or member.state in (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELLED):
        return record
    if record.state.finished:  # a chain ended already (a pending one has not started: it ends here)
        return record
    record = _replace_member(
        record, ref.step, ref.member, evolve(member, state=StepState.CANCELLED, finished_at=now)
    )
    steps = list(record.steps)
    for index in range(ref.step + 1, len(steps)):
        steps[index] = _set_all(steps[index], StepState.NOT_EXECUTED)
    return evolve(record, steps=tuple(steps), state=ChainState.CANCELLED, finished_at=now)


def apply_redrive(record: ChainRecord, ref: ChainRef) -> ChainRecord:
    """Put a failed member back to pending and resume the chain from its step."""
    member = _member(record, ref)
    if member is None or member.state is not StepState.FAILED:
        return record
    record = _replace_member(
        record, ref.step, ref.member, evolve(member, state=StepState.PENDING, error=None, finished_at=None)
    )
    if record.failed_step() is not None:
        # another member of a group is still failed: the chain stays failed until it is re-driven too
        return record
    steps = list(record.steps)
    for index in range(ref.step + 1, len(steps)):
        steps[index] = _set_all(steps[index], StepState.PENDING)
    return evolve(record, steps=tuple(steps), state=ChainState.RUNNING, finished_at=None)


def _set_all(step: Step, state: StepState) -> Step:
    return evolve(step, members=tuple(evolve(m, state=state) for m in step.members))
