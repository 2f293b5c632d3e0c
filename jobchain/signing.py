"""Payload signing: HMAC-SHA256 over what decides what a worker runs.

Without signing, anyone who can write to the backend's storage (Redis) can
queue any registered task with any arguments. With keys configured
(``App(signing_keys=[...])`` or ``JOBCHAIN_SIGNING_KEYS``), the App signs every
job it submits with the first key and workers accept a signature made with any
of the keys (so keys can be rotated: add the new key in front, deploy, then drop
the old one). A worker checks the signature right before it runs a job; a job
that does not verify, or that is unsigned while signatures are required, is
failed as ``BadSignature`` and never runs, and a re-drive cannot change that:
the re-driven job is checked again.

What a signature covers (the *claims*): the job's id, task, args, kwargs,
queue, priority and chain reference (chain id, step, member). Not covered,
because backends rewrite them on their own (a retry bumps ``attempt`` and sets
``not_before``; a re-drive resets ``attempt``, ``enqueued_at`` and the expiry;
a chain's next step is stamped when it is enqueued): ``attempt``,
``enqueued_at``, ``not_before`` and ``expires_at``. Changing them can delay a
job, expire it or cut its retries short, which someone who can write to the
store can do anyway by deleting it; it cannot make a worker run other code or
other arguments.

Chains: a step after the first is built by the backend from the chain record
and the previous step's result, so it cannot be signed whole at submit. The App
signs each member's static part (the claims above with its bound args, plus the
shape of the step before it: ``["task", 1]`` or ``["group", n]``, or None for an
immutable step) into the chain record (``StepMember.sig``); the worker that
completes a chain step signs its result together with its place in the chain
(``Completed.result_sig``, stored as ``StepMember.result_sig``); the backend
copies the member's signature into the next job (``Job.sig``) and the previous
step's result signatures into ``Job.psig`` (``"t:SIG"`` or ``"g:SIG,SIG,…"``).
The worker of that job checks both: its static part, and that its first
argument is exactly what the previous step's workers returned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobchain.errors import BadSignature, ConfigurationError

if TYPE_CHECKING:
    from jobchain.model import ChainRecord, Job, Json, StepMember

__all__ = [
    "KEYS_ENV",
    "Signer",
    "check_job",
    "previous_sigs",
    "sign_job",
    "sign_member",
    "sign_result",
    "signer_from_config",
]

#: the environment variable the App reads its keys from when given none: comma-separated
KEYS_ENV = "JOBCHAIN_SIGNING_KEYS"

#: a key shorter than this is refused: HMAC is only as strong as its key
MIN_KEY_BYTES = 16

_PREFIX = "v1."
_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _canonical(claims: Mapping[str, Json]) -> bytes:
    """One byte string per claims value: sorted keys, no spaces, ASCII only (lone surrogates escaped)."""
    return _encoder.encode(claims).encode("ascii")


class Signer:
    """HMAC-SHA256 with a list of keys: signs with the first, verifies with any.

    ``required`` (the default) makes a worker fail unsigned jobs; set it to
    False while signing is being rolled out, so jobs queued before it still run.
    The keys are never shown: ``repr`` gives their number only.
    """

    def __init__(self, keys: Iterable[str | bytes], *, required: bool = True) -> None:
        encoded: list[bytes] = []
        for index, key in enumerate(keys):
            raw = key.encode() if isinstance(key, str) else key
            if not isinstance(raw, bytes):
                what = type(key).__name__
                raise ConfigurationError(f"signing key #{index + 1} must be str or bytes, not {what}")
            if len(raw) < MIN_KEY_BYTES:
                raise ConfigurationError(
                    f"signing key #{index + 1} is {len(raw)} bytes; use at least {MIN_KEY_BYTES} "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
            encoded.append(raw)
        if not encoded:
            raise ConfigurationError("signing needs at least one key")
        self._keys = tuple(encoded)
        self.required = required

    def _mac(self, key: bytes, claims: Mapping[str, Json]) -> str:
        digest = hmac.new(key, _canonical(claims), hashlib.sha256).digest()
        return _PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, claims: Mapping[str, Json]) -> str:
        """The signature of ``claims`` with the first key."""
        return self._mac(self._keys[0], claims)

    def verify(self, claims: Mapping[str, Json], signature: object) -> bool:
        """True if ``signature`` was made over ``claims`` with any of the keys."""
        if not isinstance(signature, str) or not signature.startswith(_PREFIX):
            return False
        return any(hmac.compare_digest(self._mac(key, claims), signature) for key in self._keys)

    def __repr__(self) -> str:
        return f"<Signer keys={len(self._keys)} required={self.required}>"


def signer_from_config(
    keys: Sequence[str | bytes] | None, *, required: bool = True, environ: Mapping[str, str] | None = None
) -> Signer | None:
    """The App's signer: ``keys`` if given (``[]`` turns signing off), else ``JOBCHAIN_SIGNING_KEYS``."""
    if keys is None:
        text = (os.environ if environ is None else environ).get(KEYS_ENV, "")
        keys = [k.strip() for k in text.split(",") if k.strip()]
    elif isinstance(keys, str | bytes):
        raise ConfigurationError("signing_keys must be a list of keys, not one string")
    return Signer(keys, required=required) if keys else None


# --- claims --------------------------------------------------------------------------


def _claims(
    *,
    job_id: str,
    task: str,
    args: Sequence[Json],
    kwargs: Mapping[str, Json],
    queue: str,
    priority: int,
    chain: Sequence[Json] | None,
    prev: Sequence[Json] | None,
) -> dict[str, Json]:
    return {
        "v": 1,
        "id": job_id,
        "task": task,
        "args": list(args),
        "kwargs": dict(kwargs),
        "queue": queue,
        "priority": priority,
        "chain": None if chain is None else list(chain),
        "prev": None if prev is None else list(prev),
    }


def _result_claims(chain_id: str, step: int, member: int, result: Json) -> dict[str, Json]:
    return {"v": 1, "result_of": [chain_id, step, member], "result": result}


def _chain(job: Job) -> list[Json] | None:
    return None if job.chain is None else [job.chain.chain_id, job.chain.step, job.chain.member]


def sign_job(signer: Signer | None, job: Job) -> Job:
    """``job`` signed over its whole arguments (a job on its own, or a chain's first step)."""
    if signer is None:
        return job
    from attrs import evolve

    claims = _claims(
        job_id=job.id,
        task=job.task,
        args=job.args,
        kwargs=job.kwargs,
        queue=job.queue,
        priority=job.priority,
        chain=_chain(job),
        prev=None,
    )
    return evolve(job, sig=signer.sign(claims), psig=None)


def sign_member(
    signer: Signer | None, record: ChainRecord, step: int, member: int, args: Sequence[Json]
) -> StepMember:
    """Member ``member`` of ``step`` of ``record`` with its signature set.

    ``args`` are the arguments the member's job will carry apart from the
    previous step's result: for the first step the submit's arguments and the
    bound ones; for a later step the bound ones.
    """
    spec = record.steps[step].members[member]
    if signer is None:
        return spec
    from attrs import evolve

    prev: list[Json] | None = None
    if step > 0 and not spec.immutable:
        before = record.steps[step - 1]
        prev = [before.kind, len(before.members)]
    claims = _claims(
        job_id=spec.job_id,
        task=spec.task,
        args=args,
        kwargs=spec.kwargs,
        queue=spec.queue,
        priority=spec.priority,
        chain=[record.id, step, member],
        prev=prev,
    )
    return evolve(spec, sig=signer.sign(claims))


def sign_result(signer: Signer | None, job: Job, result: Json) -> str | None:
    """The signature of a chain step's result, for the next step's job to carry; None when not needed."""
    if signer is None or job.chain is None:
        return None
    ref = job.chain
    return signer.sign(_result_claims(ref.chain_id, ref.step, ref.member, result))


def previous_sigs(record: ChainRecord, step: int) -> str | None:
    """``Job.psig`` for a member of ``step`` that takes the previous step's result; None if unsigned."""
    if step == 0:
        return None
    before = record.steps[step - 1]
    sigs = [m.result_sig for m in before.members]
    if any(s is None for s in sigs):
        return None
    return ("t:" if before.kind == "task" else "g:") + ",".join(s for s in sigs if s is not None)


# --- verification ----------------------------------------------------------------------


def check_job(signer: Signer | None, job: Job) -> BadSignature | None:
    """Why ``job`` must not run (a :class:`BadSignature` to record), or None when it may."""
    if signer is None:
        return None
    if job.sig is None:
        if not signer.required:
            return None
        return BadSignature(
            "the job is unsigned and this worker requires signed jobs; it was not submitted by an App "
            "with the signing keys (or was queued before signing was turned on)"
        )
    args: Sequence[Json] = job.args
    prev: list[Json] | None = None
    if job.psig is not None:
        problem = _check_previous(signer, job)
        if problem is not None:
            return problem
        kind, _, sigs = job.psig.partition(":")
        prev = ["task" if kind == "t" else "group", len(sigs.split(","))]
        args = job.args[1:]
    claims = _claims(
        job_id=job.id,
        task=job.task,
        args=args,
        kwargs=job.kwargs,
        queue=job.queue,
        priority=job.priority,
        chain=_chain(job),
        prev=prev,
    )
    if signer.verify(claims, job.sig):
        return None
    return BadSignature(
        "the job's signature does not verify: its id, task, arguments, queue, priority or chain "
        "reference changed after it was signed, or it was signed with a key this worker does not have"
    )


def _check_previous(signer: Signer, job: Job) -> BadSignature | None:
    """Check that the first argument is what the previous step's workers returned and signed."""
    assert job.psig is not None
    kind, sep, joined = job.psig.partition(":")
    ref = job.chain
    if not sep or kind not in ("t", "g") or ref is None or ref.step == 0 or not job.args:
        return BadSignature("the job's previous-result signatures are malformed")
    sigs = joined.split(",")
    previous: Any = job.args[0]
    if kind == "t":
        results = [previous] if len(sigs) == 1 else None
    else:
        results = list(previous) if isinstance(previous, list) and len(previous) == len(sigs) else None
    if results is None:
        return BadSignature("the previous step's result does not match its signatures")
    for member, (result, sig) in enumerate(zip(results, sigs, strict=True)):
        if not signer.verify(_result_claims(ref.chain_id, ref.step - 1, member, result), sig):
            return BadSignature(
                f"the previous step's result (member {member + 1}) does not verify: it was changed after "
                "the worker that returned it signed it, or signed with a key this worker does not have"
            )
    return None
