"""Exceptions raised by jobchain.

The tree::

    JobchainError
    ├── ConfigurationError
    │   ├── UnknownBackendError(LookupError)     .scheme .installed .hint
    │   ├── DuplicateSchemeError                 .scheme .first .second
    │   ├── PluginLoadError                      .entry_point .distribution
    │   ├── WorkerNameTakenError                 .name .host .pid: a live worker holds the name
    │   └── NotSupportedError(NotImplementedError)  .url .capability .supported_by: an optional
    │                                            part of the backend contract the backend lacks
    ├── InvalidJobError(ValueError)              non-JSON args, oversized payload, bad options
    │   ├── UnknownTaskError(LookupError)        .task .known
    │   └── ResultTooLarge                       .task .size .limit: recorded, never retried
    ├── BackendError
    │   ├── BackendUnavailableError(ConnectionError)  .url (password removed)
    │   │   └── SubmitBufferFullError            .max_jobs .max_bytes .held_jobs .held_bytes
    │   ├── BackendAuthError                     .url .reason: credentials or permissions refused
    │   ├── BackendFullError                     .url: out of memory, nothing written
    │   └── SubmitsNotStoredError                .job_ids .chain_ids .jobs .chains
    ├── JobFailedError                           .job_id .error
    │   └── ChainHaltedError                     .chain_id .step
    ├── JobCancelledError                        .job_id: a job or chain was cancelled
    ├── NotReadyError                            .job_id .state
    ├── NotInFailedQueueError(LookupError)       .job_ids .moved: a re-drive of ids not failed
    └── WaitTimeoutError(TimeoutError)           .job_id .timeout

    Fail(Exception)        raised by a task to fail at once, skipping retries
    Cancelled(Exception)   raised by a task that stops at a cancel request: recorded cancelled
    JobTimeout(TimeoutError)  raised inside a task that ran past its timeout
    WorkerLost(Exception)  recorded for a job whose workers kept dying
    BadSignature(Exception)  recorded for a job whose signature did not verify (never run)

Messages say what is wrong and what to do about it; facts travel as
attributes so callers never parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobchain.model import ChainRecord, ErrorInfo, Job

__all__ = [
    "BackendAuthError",
    "BackendError",
    "BackendFullError",
    "BackendUnavailableError",
    "BadSignature",
    "Cancelled",
    "ChainHaltedError",
    "ConfigurationError",
    "DuplicateSchemeError",
    "Fail",
    "InvalidJobError",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeout",
    "JobchainError",
    "NotInFailedQueueError",
    "NotReadyError",
    "NotSupportedError",
    "PluginLoadError",
    "ResultTooLarge",
    "SubmitBufferFullError",
    "SubmitsNotStoredError",
    "UnknownBackendError",
    "UnknownTaskError",
    "WaitTimeoutError",
    "WorkerLost",
    "WorkerNameTakenError",
]


class JobchainError(Exception):
    """Base class of every error jobchain raises on purpose."""


class ConfigurationError(JobchainError):
    """The application, a plugin or a backend URL is set up wrongly."""


class UnknownBackendError(ConfigurationError, LookupError):
    """No installed plugin serves the scheme of a backend URL."""

    def __init__(self, scheme: str, installed: Sequence[str], hint: str = "") -> None:
        self.scheme = scheme
        self.installed = tuple(installed)
        self.hint = hint
        names = ", ".join(self.installed) or "none"
        message = f"no backend for {scheme + '://'!r}; installed: {names}"
        if hint:
            message += f". {hint}"
        super().__init__(message)


class DuplicateSchemeError(ConfigurationError):
    """Two plugins registered a backend for the same URL scheme."""

    def __init__(self, scheme: str, first: str, second: str) -> None:
        self.scheme = scheme
        self.first = first
        self.second = second
        super().__init__(
            f"backend scheme {scheme!r} is registered twice: by {first} and by {second}; "
            "uninstall one of them or set JOBCHAIN_DISABLE_PLUGINS"
        )


class PluginLoadError(ConfigurationError):
    """An installed plugin could not be imported or registered."""

    def __init__(self, entry_point: str, distribution: str, reason: str) -> None:
        self.entry_point = entry_point
        self.distribution = distribution
        self.reason = reason
        super().__init__(f"plugin {entry_point!r} from {distribution} failed to load: {reason}")


class WorkerNameTakenError(ConfigurationError):
    """A worker tried to register under a name that another live worker holds.

    ``host`` and ``pid`` are those the holder registered; its heartbeat is
    still fresh. A name frees when its worker stops, or when its heartbeat
    expires (the worker died): a worker started under it then resumes the
    dead one's jobs.
    """

    def __init__(self, name: str, host: str, pid: int) -> None:
        self.name = name
        self.host = host
        self.pid = pid
        super().__init__(
            f"worker name {name!r} is taken by a live worker (host {host}, pid {pid}); "
            "stop that worker or choose another name (--name)"
        )


class NotSupportedError(ConfigurationError, NotImplementedError):
    """The backend lacks an optional capability of the contract (see :mod:`jobchain.capabilities`).

    ``url`` is the backend's URL (password removed), ``capability`` the name
    of the capability class (``"FailedQueue"``), ``what`` says it in words
    and ``supported_by`` lists installed backend schemes that have it.
    """

    def __init__(self, url: str, capability: str, what: str, supported_by: Sequence[str] = ()) -> None:
        self.url = url
        self.capability = capability
        self.what = what
        self.supported_by = tuple(supported_by)
        if self.supported_by:
            advice = "use a backend that does, e.g. " + ", ".join(f"{s}://" for s in self.supported_by)
        else:
            advice = "no installed backend supports it"
        where = url or "this backend"
        super().__init__(f"{where} does not support {what} (capability {capability}); {advice}")


class InvalidJobError(JobchainError, ValueError):
    """A job cannot be built or stored as given (arguments, options, size)."""


class UnknownTaskError(InvalidJobError, LookupError):
    """A job names a task that the application does not define."""

    def __init__(self, task: str, known: Sequence[str]) -> None:
        self.task = task
        self.known = tuple(sorted(known))
        names = ", ".join(self.known) or "none"
        super().__init__(f"unknown task {task!r}; known tasks: {names}")


class ResultTooLarge(InvalidJobError):  # noqa: N818 - recorded as the error type name
    """A task returned a result over the App's payload limit: the job fails for good, unretried."""

    def __init__(self, task: str, size: int, limit: int) -> None:
        self.task = task
        self.size = size
        self.limit = limit
        super().__init__(
            f"task {task!r} returned a result of {size} bytes, over the limit of {limit} bytes "
            "(App(max_payload=...)); store large data elsewhere and return a reference"
        )


class BackendError(JobchainError):
    """The backend failed to carry out an operation."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The backend cannot be reached."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach backend {url}: {reason}")


class BackendAuthError(BackendError):
    """The backend refused the credentials or the permissions (wrong password, unknown user, ACL).

    Not a :class:`BackendUnavailableError`: retrying does not help, so it is
    reported at once, and a worker meeting it stops.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"authentication failed for backend {url}: {reason}")


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


class SubmitBufferFullError(BackendUnavailableError):
    """A submit could not be stored and the client's submit buffer has no room for it.

    Raised instead of buffering, never instead of storing: the submit was not
    accepted, nothing of it is kept. ``needed_*`` is what this submit needed,
    ``held_*`` what the buffer holds, ``max_*`` its limits.
    """

    def __init__(
        self,
        url: str,
        *,
        needed_jobs: int,
        needed_bytes: int,
        held_jobs: int,
        held_bytes: int,
        max_jobs: int,
        max_bytes: int,
    ) -> None:
        self.needed_jobs = needed_jobs
        self.needed_bytes = needed_bytes
        self.held_jobs = held_jobs
        self.held_bytes = held_bytes
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        super().__init__(
            url,
            f"the submit buffer is full: it holds {held_jobs} of max_jobs={max_jobs} jobs and "
            f"{_size(held_bytes)} of max_bytes={max_bytes} ({_size(max_bytes)}) while it waits for the "
            "backend; "
            f"this submit ({needed_jobs} job{'s' if needed_jobs != 1 else ''}, {_size(needed_bytes)}) "
            "was not accepted. "
            "Retry once the backend is back, or raise the limits: App(buffer=SubmitBuffer(...))",
        )


class BackendFullError(BackendError):
    """The backend refused a write because it is out of memory (or space); nothing was written."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(message)


class SubmitsNotStoredError(BackendError):
    """Buffered submits could not be stored before a deadline (``App.close(timeout)``) or were refused.

    ``jobs`` and ``chains`` are what was not stored: handing them to
    ``Backend.enqueue`` later is safe, it skips ids stored meanwhile (a flush
    under way at the deadline may have gone through).
    """

    def __init__(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], reason: str, *, shown: int = 20
    ) -> None:
        self.jobs = tuple(jobs)
        self.chains = tuple(chains)
        self.job_ids = tuple(job.id for job in self.jobs)
        self.chain_ids = tuple(chain.id for chain in self.chains)
        self.reason = reason
        listed = ", ".join(self.job_ids[:shown])
        more = f" and {len(self.job_ids) - shown} more (all in .job_ids)" if len(self.job_ids) > shown else ""
        of_chains = f"; chains {', '.join(self.chain_ids[:shown])}" if self.chain_ids else ""
        super().__init__(
            f"{len(self.job_ids)} buffered job{'s were' if len(self.job_ids) != 1 else ' was'} "
            f"not stored ({reason}): {listed}{more}{of_chains}"
        )


class JobFailedError(JobchainError):
    """A job (or a chain step) failed permanently; ``.error`` has the details."""

    def __init__(self, job_id: str, error: ErrorInfo | None, message: str | None = None) -> None:
        self.job_id = job_id
        self.error = error
        if message is None:
            what = f"{error.type}: {error.message}" if error is not None else "unknown error"
            message = f"job {job_id} failed: {what}"
        super().__init__(message)


class ChainHaltedError(JobFailedError):
    """A chain stopped at a step that failed permanently."""

    def __init__(self, chain_id: str, step: int, job_id: str, error: ErrorInfo | None) -> None:
        self.chain_id = chain_id
        self.step = step
        what = f"{error.type}: {error.message}" if error is not None else "unknown error"
        super().__init__(job_id, error, f"chain {chain_id} halted at step {step + 1}: {what}")


class JobCancelledError(JobchainError):
    """A job or chain was cancelled (:meth:`jobchain.App.cancel`): it has no result."""

    def __init__(self, job_id: str, what: str = "job") -> None:
        self.job_id = job_id
        super().__init__(f"{what} {job_id} was cancelled")


class NotReadyError(JobchainError):
    """A result was asked for before the job or chain finished."""

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"{job_id} is {state}, not finished; use .wait(timeout) to wait for it")


class NotInFailedQueueError(JobchainError, LookupError):
    """A re-drive named jobs that are not in the failed queue (or cannot be re-driven).

    ``job_ids`` are the ids not re-driven. Raised before anything moved, so
    ``moved`` is empty, except when entries vanished between the check and the
    move (a purge running at the same time) or a third-party backend does not
    check first: then ``moved`` lists the ids that were re-driven all the same.
    """

    def __init__(self, job_ids: Sequence[str], moved: Sequence[str] = (), *, shown: int = 20) -> None:
        self.job_ids = tuple(job_ids)
        self.moved = tuple(moved)
        listed = ", ".join(self.job_ids[:shown])
        more = f" and {len(self.job_ids) - shown} more (all in .job_ids)" if len(self.job_ids) > shown else ""
        if self.moved:
            outcome = (
                f"; the other {len(self.moved)} job{'s were' if len(self.moved) != 1 else ' was'} "
                "re-driven (all in .moved)"
            )
        else:
            outcome = "; nothing was re-driven. Check the ids with `jobchain failed list`"
        super().__init__(f"not in the failed queue: {listed}{more}{outcome}")


class WaitTimeoutError(JobchainError, TimeoutError):
    """``wait(timeout)`` gave up before the job or chain finished."""

    def __init__(self, job_id: str, timeout: float, state: str) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.state = state
        super().__init__(f"{job_id} still {state} after waiting {timeout:g}s")


class Fail(Exception):  # noqa: N818 - a signal, not an error
    """Raise from a task to send the job to the failed queue at once, with no retry."""


class Cancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a task that stops at a cancel request (see :func:`jobchain.current_job`).

    After a cancel request the job is recorded ``cancelled``, never retried and
    never in the failed queue; without one it is a permanent failure, like
    :class:`Fail`.
    """


class JobTimeout(TimeoutError):  # noqa: N818 - mirrors the builtin it subclasses
    """Raised in a task that ran past its ``timeout``."""


class WorkerLost(Exception):  # noqa: N818 - recorded as the error type name
    """Recorded for a job whose lease was lost too many times (its workers kept dying)."""


class BadSignature(Exception):  # noqa: N818 - recorded as the error type name
    """Recorded for a job whose signature did not verify, or that was unsigned where one is required.

    The job never ran; see :mod:`jobchain.signing` and ``docs/security.md``.
    """
