"""jobchain: parallel jobs and sequential chains, with retries, priority aging and a failed queue."""

from jobchain.app import App, FailedPage, FailedQueue, Task
from jobchain.backend import Backend
from jobchain.buffer import SubmitBuffer
from jobchain.canvas import Chain, Group, Signature, chain, group
from jobchain.clock import Clock, ManualClock, SystemClock
from jobchain.errors import (
    BackendAuthError,
    BackendError,
    BackendFullError,
    BackendUnavailableError,
    ChainHaltedError,
    ConfigurationError,
    DuplicateSchemeError,
    Fail,
    InvalidJobError,
    JobchainError,
    JobFailedError,
    JobTimeout,
    NotInFailedQueueError,
    NotReadyError,
    NotSupportedError,
    PluginLoadError,
    ResultTooLarge,
    SubmitBufferFullError,
    SubmitsNotStoredError,
    UnknownBackendError,
    UnknownTaskError,
    WaitTimeoutError,
    WorkerLost,
    WorkerNameTakenError,
)
from jobchain.handles import ChainHandle, JobHandle
from jobchain.hookspecs import hookimpl
from jobchain.model import (
    ChainRecord,
    ChainState,
    Delivery,
    ErrorInfo,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    QueueStats,
    StepState,
    WorkerInfo,
)
from jobchain.plugins import Plugins
from jobchain.registry import BackendRegistry
from jobchain.retry import Retry
from jobchain.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "App",
    "Backend",
    "BackendAuthError",
    "BackendError",
    "BackendFullError",
    "BackendRegistry",
    "BackendUnavailableError",
    "Chain",
    "ChainHaltedError",
    "ChainHandle",
    "ChainRecord",
    "ChainState",
    "Clock",
    "ConfigurationError",
    "Delivery",
    "DuplicateSchemeError",
    "ErrorInfo",
    "Fail",
    "FailedEntry",
    "FailedPage",
    "FailedQueue",
    "Group",
    "InvalidJobError",
    "Job",
    "JobFailedError",
    "JobHandle",
    "JobRecord",
    "JobState",
    "JobTimeout",
    "JobchainError",
    "ManualClock",
    "NotInFailedQueueError",
    "NotReadyError",
    "NotSupportedError",
    "PluginLoadError",
    "Plugins",
    "QueueStats",
    "ResultTooLarge",
    "Retry",
    "Signature",
    "StepState",
    "SubmitBuffer",
    "SubmitBufferFullError",
    "SubmitsNotStoredError",
    "SystemClock",
    "Task",
    "UnknownBackendError",
    "UnknownTaskError",
    "WaitTimeoutError",
    "Worker",
    "WorkerInfo",
    "WorkerLost",
    "WorkerNameTakenError",
    "__version__",
    "chain",
    "group",
    "hookimpl",
]
