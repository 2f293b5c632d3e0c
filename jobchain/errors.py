"""Exceptions raised by jobchain.

The tree::

    JobchainError
    ├── ConfigurationError
    │   ├── UnknownBackendError(LookupError)     .scheme .installed .hint
    │   ├── DuplicateSchemeError                 .scheme .first .second
    │   └── PluginLoadError                      .entry_point .distribution
    ├── InvalidJobError(ValueError)              non-JSON args, oversized payload, bad options
    │   └── UnknownTaskError(LookupError)        .task .known
    ├── BackendError
    │   └── BackendUnavailableError(ConnectionError)  .url (password removed)
    ├── JobFailedError                           .job_id .error
    │   └── ChainHaltedError                     .chain_id .step
    ├── NotReadyError                            .job_id .state
    └── WaitTimeoutError(TimeoutError)           .job_id .timeout

    Fail(Exception)        raised by a task to fail at once, skipping retries
    JobTimeout(TimeoutError)  raised inside a task that ran past its timeout
    WorkerLost(Exception)  recorded for a job whose workers kept dying

Messages say what is wrong and what to do about it; facts travel as
attributes so callers never parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobchain.model import ErrorInfo

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ChainHaltedError",
    "ConfigurationError",
    "DuplicateSchemeError",
    "Fail",
    "InvalidJobError",
    "JobFailedError",
    "JobTimeout",
    "JobchainError",
    "NotReadyError",
    "PluginLoadError",
    "UnknownBackendError",
    "UnknownTaskError",
    "WaitTimeoutError",
    "WorkerLost",
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


class InvalidJobError(JobchainError, ValueError):
    """A job cannot be built or stored as given (arguments, options, size)."""


class UnknownTaskError(InvalidJobError, LookupError):
    """A job names a task that the application does not define."""

    def __init__(self, task: str, known: Sequence[str]) -> None:
        self.task = task
        self.known = tuple(sorted(known))
        names = ", ".join(self.known) or "none"
        super().__init__(f"unknown task {task!r}; known tasks: {names}")


class BackendError(JobchainError):
    """The backend failed to carry out an operation."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The backend cannot be reached."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach backend {url}: {reason}")


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


class NotReadyError(JobchainError):
    """A result was asked for before the job or chain finished."""

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"{job_id} is {state}, not finished; use .wait(timeout) to wait for it")


class WaitTimeoutError(JobchainError, TimeoutError):
    """``wait(timeout)`` gave up before the job or chain finished."""

    def __init__(self, job_id: str, timeout: float, state: str) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.state = state
        super().__init__(f"{job_id} still {state} after waiting {timeout:g}s")


class Fail(Exception):  # noqa: N818 - a signal, not an error
    """Raise from a task to send the job to the failed queue at once, with no retry."""


class JobTimeout(TimeoutError):  # noqa: N818 - mirrors the builtin it subclasses
    """Raised in a task that ran past its ``timeout``."""


class WorkerLost(Exception):  # noqa: N818 - recorded as the error type name
    """Recorded for a job whose lease was lost too many times (its workers kept dying)."""
