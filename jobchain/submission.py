"""The submit pipeline's builder: what is submitted becomes jobs and chain records here, checked once.

Every way in goes through this module: :meth:`App.submit <jobchain.App.submit>`
and ``submit_many``, ``jobchain submit`` and the HTTP gateway's ``/v1/submit``
build with a :class:`Builder`; backends build a chain's later steps with
:func:`member_job` (as :func:`jobchain.workflow.job_for_member`) inside their
transitions. The pieces:

* :func:`check_id` - an explicit id (``task.submit(..., job_id=...)``,
  ``jobchain submit --id``, the HTTP body's ``"id"``): non-empty, at most
  :data:`MAX_ID_LENGTH` characters, printable, no whitespace and no ``/``.
* :class:`Builder` - a signature (task, bound and call-time arguments,
  options) into a signed :class:`~jobchain.model.Job`; a chain or group into its
  :class:`~jobchain.model.ChainRecord` and the jobs of its first step. It checks
  the arguments (JSON every backend can store, within the payload limit; see
  :mod:`jobchain.payload`) and that the task can take them, and signs what it
  builds (:mod:`jobchain.signing`) when it has a signer.
* :func:`make_job` and :func:`member_job` - the plain assembly, pure and
  unchecked, so that a backend's transition pays nothing more for it.

Ids generated here are fresh, so the result may be stored with
``Backend.enqueue_new``; what carries an explicit id must be stored with
``Backend.enqueue``, which skips ids that exist: submitting an id that exists
stores nothing, and the handle returned is the existing job's (or chain's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobchain.canvas import Chain, Group, Signature
from jobchain.errors import InvalidJobError
from jobchain.ids import new_id
from jobchain.model import ChainRecord, ChainRef, Job, Json, Step, StepMember
from jobchain.payload import DEFAULT_MAX_PAYLOAD, check_payload
from jobchain.signing import Signer, previous_sigs, sign_job, sign_member

__all__ = ["MAX_ID_LENGTH", "Builder", "check_id", "make_job", "member_id", "member_job"]

#: the longest explicit id accepted, in characters
MAX_ID_LENGTH = 200

#: stands for the previous step's result when a later step's call is checked at submit
_PLACEHOLDER = object()


def check_id(value: object, what: str = "job id") -> str:
    """``value`` if it can be an explicit id; :class:`InvalidJobError` saying why not otherwise.

    An id is a non-empty str of at most :data:`MAX_ID_LENGTH` printable
    characters without whitespace or ``/`` (ids appear in the HTTP gateway's
    paths, ``/v1/jobs/ID``, and in log lines).
    """
    if not isinstance(value, str):
        raise InvalidJobError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidJobError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidJobError(f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed")
    for index, char in enumerate(value):
        if char.isspace() or not char.isprintable() or char == "/":
            kind = "'/'" if char == "/" else "whitespace" if char.isspace() else "an unprintable character"
            raise InvalidJobError(
                f"{what} {value!r} has {kind} ({char!r}) at index {index}; "
                "use printable characters without whitespace or '/'"
            )
    return value


def member_id(chain_id: str, step: int, member: int) -> str:
    """The job id of a member of a chain submitted under an explicit id: ``CHAIN.STEP.MEMBER``.

    Derived, not random, so that submitting the same chain id again stores
    none of its jobs either.
    """
    return f"{chain_id}.{step}.{member}"


def make_job(
    *,
    job_id: str,
    task: str,
    args: tuple[Json, ...],
    kwargs: Mapping[str, Json],
    queue: str,
    priority: int,
    now: float,
    delay: float | None = None,
    expires: float | None = None,
    chain: ChainRef | None = None,
    sig: str | None = None,
    psig: str | None = None,
) -> Job:
    """A job enqueued at ``now``: ``delay`` and ``expires`` (seconds) become ``not_before``/``expires_at``.

    Pure and unchecked: the arguments were checked when they were submitted.
    """
    return Job(
        id=job_id,
        task=task,
        args=args,
        kwargs=kwargs,
        queue=queue,
        priority=priority,
        enqueued_at=now,
        not_before=now + delay if delay else None,
        expires_at=None if expires is None else now + expires,
        chain=chain,
        sig=sig,
        psig=psig,
    )


def member_job(record: ChainRecord, step: int, member: int, previous: tuple[Json, ...], now: float) -> Job:
    """The job that runs ``member`` of ``step``; ``previous`` is prepended unless immutable.

    Pure: backends call it (as :func:`jobchain.workflow.job_for_member`) inside their
    transitions, so it builds the :class:`Job` itself (what :func:`make_job` does,
    without the extra call on that hot path).
    """
    spec = record.steps[step].members[member]
    takes_result = step > 0 and not spec.immutable
    return Job(
        id=spec.job_id,
        task=spec.task,
        args=spec.args if spec.immutable else previous + spec.args,
        kwargs=spec.kwargs,
        queue=spec.queue,
        priority=spec.priority,
        enqueued_at=now,
        expires_at=None if spec.expires is None else now + spec.expires,
        chain=ChainRef(chain_id=record.id, step=step, member=member),
        sig=spec.sig,
        psig=previous_sigs(record, step) if takes_result and spec.sig is not None else None,
    )


class Builder:
    """Builds what is submitted: checked, with its ids, signed when there is a ``signer``.

    ``max_payload`` bounds a job's arguments (UTF-8 bytes of their JSON);
    ``default_queue`` is the queue of a job known by task name only.
    """

    def __init__(
        self,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        signer: Signer | None = None,
        default_queue: str = "default",
    ) -> None:
        self.max_payload = max_payload
        self.signer = signer
        self.default_queue = default_queue

    def job(
        self,
        sig: Signature,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        now: float,
        job_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
    ) -> Job:
        """The job of ``sig`` called with ``args``/``kwargs`` after its bound ones.

        Options given here win over the signature's, which win over the task's.
        The id is ``job_id``, else the signature's, else a fresh one.
        """
        task = sig.task
        all_args = sig.args + tuple(args)
        all_kwargs = {**sig.kwargs, **kwargs} if kwargs else dict(sig.kwargs)
        check_payload(all_args, all_kwargs, limit=self.max_payload, what=f"task {task.name!r}")
        task.check_call(all_args, all_kwargs)
        explicit = job_id if job_id is not None else sig.job_id
        if priority is None:
            priority = sig.priority if sig.priority is not None else task.priority
        job = make_job(
            job_id=new_id() if explicit is None else check_id(explicit),
            task=task.name,
            args=all_args,
            kwargs=all_kwargs,
            queue=queue or sig.queue or task.queue,
            priority=priority,
            now=now,
            delay=delay if delay is not None else sig.delay,
            expires=task.expires,
        )
        return sign_job(self.signer, job)

    def named_job(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        now: float,
        job_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
    ) -> Job:
        """A job of a task known by its name only (nothing to check the call against but JSON and size)."""
        all_kwargs = dict(kwargs or {})
        check_payload(args, all_kwargs, limit=self.max_payload, what=f"task {task!r}")
        job = make_job(
            job_id=new_id() if job_id is None else check_id(job_id),
            task=task,
            args=tuple(args),
            kwargs=all_kwargs,
            queue=queue or self.default_queue,
            priority=0 if priority is None else priority,
            now=now,
            delay=delay,
        )
        return sign_job(self.signer, job)

    def chain(
        self,
        spec: Chain | Group,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        now: float,
        chain_id: str | None = None,
    ) -> tuple[ChainRecord, list[Job]]:
        """The record of a chain (or a group, a chain of one step) and the jobs of its first step.

        ``args``/``kwargs`` go to each first-step member that is not immutable,
        before its bound ones. With ``chain_id`` the members' job ids are
        derived from it (:func:`member_id`).
        """
        if isinstance(spec, Group):
            spec = Chain(steps=(spec,), kind="group")
        kwargs = kwargs or {}
        check_payload(args, kwargs, limit=self.max_payload, what="chain")
        if chain_id is not None:
            check_id(chain_id, "chain id")
        steps = []
        for index, item in enumerate(spec.steps):
            sigs = item.members if isinstance(item, Group) else (item,)
            members = tuple(
                self._member(
                    sig,
                    index == 0,
                    args,
                    kwargs,
                    new_id() if chain_id is None else member_id(chain_id, index, position),
                )
                for position, sig in enumerate(sigs)
            )
            steps.append(Step(kind="group" if isinstance(item, Group) else "task", members=members))
        record_id = new_id() if chain_id is None else chain_id  # made after the members' (ids sort by time)
        record = ChainRecord(id=record_id, name=spec.name, kind=spec.kind, steps=tuple(steps), created_at=now)
        if self.signer is not None:
            record = self._sign_members(record, args)
        first = [member_job(record, 0, m, args, now) for m in range(len(record.steps[0].members))]
        return record, first

    def _member(
        self, sig: Signature, first: bool, args: tuple[Any, ...], kwargs: Mapping[str, Any], job_id: str
    ) -> StepMember:
        task = sig.task
        if sig.unique_key is not None or sig.unique_for is not None:
            raise InvalidJobError(
                f"task {task.name!r}: a chain or group step cannot be unique; submit the chain "
                "under an explicit id instead (an id that exists stores nothing)"
            )
        merged = {**sig.kwargs, **kwargs} if first and kwargs else dict(sig.kwargs)
        check_payload(sig.args, merged, limit=self.max_payload, what=f"task {task.name!r}")
        if first or sig.immutable:
            task.check_call((sig.args if sig.immutable else tuple(args) + sig.args), merged)
        else:
            task.check_call((_PLACEHOLDER, *sig.args), merged)
        return StepMember(
            job_id=job_id,
            task=task.name,
            args=sig.args,
            kwargs=merged,
            queue=sig.queue or task.queue,
            priority=sig.priority if sig.priority is not None else task.priority,
            immutable=sig.immutable,
            expires=task.expires,
        )

    def _sign_members(self, record: ChainRecord, args: tuple[Any, ...]) -> ChainRecord:
        """The record with every member's static part signed (the first step's with the submit's args)."""
        steps = []
        for index, step in enumerate(record.steps):
            members = tuple(
                sign_member(
                    self.signer,
                    record,
                    index,
                    m,
                    spec.args if index > 0 or spec.immutable else args + spec.args,
                )
                for m, spec in enumerate(step.members)
            )
            steps.append(Step(kind=step.kind, members=members))
        return ChainRecord(
            id=record.id, name=record.name, kind=record.kind, steps=tuple(steps), created_at=record.created_at
        )
