"""Everything a backend author needs, from one module: ``from jobchain.contract import ...``.

The map
=======

**The required core.** Subclass :class:`Backend` and implement its six
abstract methods; each is batched (one call, many jobs):

* ``enqueue(jobs, chains)``: store chain records and jobs, all or nothing;
  an id that exists is skipped.
* ``reserve(queues, limit=, lease=, worker=, wait=)``: lease the most urgent
  ready jobs (:func:`order_key` ranks them; FIFO among equals), as
  :class:`Delivery` objects with a fresh token; a lease that ends unsettled
  makes the job ready again.
* ``extend(deliveries, lease)``: push leases still held.
* ``settle(outcomes)``: apply :class:`Completed`, :class:`Retried`,
  :class:`Failed`, :class:`Released` (and, with :class:`Cancel`,
  :class:`Aborted`) outcomes, each atomically, rejecting
  a stale token; return a :class:`SettleResult` per outcome. A job of a chain
  advances its :class:`ChainRecord` with the pure functions of
  :mod:`jobchain.workflow` (``apply_completed`` returns the next step's
  jobs, ``apply_failed`` halts the chain) inside the same atomic step.
  A :class:`Retried` or :class:`Failed` outcome also appends its
  ``recorded_error`` (the retried one carries its backoff in ``retry_in``)
  to the job's error history with :func:`kept_errors`, which keeps the
  last :data:`MAX_KEPT_ERRORS`, in the same atomic step; success, cancel
  and re-drive keep the history.
* ``get_job(id)`` / ``get_chain(id)``: a :class:`JobRecord` (its
  ``errors``: that history, oldest first) / :class:`ChainRecord`, or None.

``now``, ``enqueue_new``, ``settle_and_take``, ``mark_running`` and ``close``
have working defaults; override them to save round trips or to count
crashes.

**Optional capabilities.** Declare one by inheriting it next to
:class:`Backend` and implement all its methods (see
:mod:`jobchain.capabilities`): :class:`FailedQueue`, :class:`WorkerRegistry`,
:class:`Stats`, :class:`Pause`, :class:`Browse`, :class:`Uniqueness` (its
shared rules in :mod:`jobchain.uniqueness`); declared for coming features
and :class:`Cancel` (its report is a :class:`CancelReport`), :class:`RateLimits`
and :class:`ConcurrencyLimits` (their shared rules in :mod:`jobchain.limits`); declared for
coming features (provisional): :class:`ScheduleSlots`. :class:`AsyncClient` serves the
asyncio client's hot calls as coroutines (without it, the App's thread pool runs the sync calls).
Code that uses a backend asks
with :func:`supports` or :func:`require`; a missing capability is a
:class:`NotSupportedError`.

**Errors to raise.** :class:`BackendUnavailableError` when the store cannot
be reached (clients buffer and workers retry), :class:`BackendAuthError`
when credentials are refused, :class:`BackendFullError` when nothing could be
written, :class:`NotInFailedQueueError` from ``redrive``,
:class:`WorkerNameTakenError` from ``heartbeat`` (:func:`name_taken` decides),
:class:`InvalidJobError` / :class:`ConfigurationError` for bad input or URLs.

**Registering.** A plugin module defines
``@hookimpl def jobchain_register_backends(registry: BackendRegistry)`` and
calls ``registry.add("scheme", MyBackend.from_url, summary=...)``; the
distribution declares it under the ``jobchain`` entry-point group. The
factory gets the URL and keyword options (``clock=``, ``aging_interval=``)
that :class:`Backend.__init__` takes.

**Proving it.** Run :class:`jobchain.testing.suite.CoreConformance` and the
suite of every capability declared (``FailedQueueConformance``,
``WorkerRegistryConformance``, ``StatsConformance``, ``PauseConformance``,
``CancelConformance``), or
``BackendConformance`` for all of them; time moves with :class:`ManualClock`.
``examples/minimal_backend.py`` is a complete backend on the core alone.
"""

from __future__ import annotations

from jobchain import workflow
from jobchain.aging import DEFAULT_AGING_INTERVAL, effective_priority, order_key
from jobchain.aio import PerLoop
from jobchain.backend import Backend, name_taken
from jobchain.capabilities import (
    AsyncClient,
    Browse,
    Cancel,
    CancelReport,
    Capability,
    ConcurrencyLimits,
    FailedQueue,
    JobPage,
    Pause,
    RateLimits,
    ScheduleSlots,
    Stats,
    Uniqueness,
    WorkerRegistry,
    capabilities,
    require,
    supports,
)
from jobchain.clock import Clock, ManualClock, SystemClock
from jobchain.errors import (
    BackendAuthError,
    BackendError,
    BackendFullError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidJobError,
    JobchainError,
    NotInFailedQueueError,
    NotSupportedError,
    WorkerNameTakenError,
)
from jobchain.hookspecs import hookimpl
from jobchain.model import (
    MAX_KEPT_ERRORS,
    UNREADABLE_TASK,
    Aborted,
    ChainRecord,
    ChainRef,
    ChainState,
    Completed,
    Delivery,
    ErrorInfo,
    Failed,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    Json,
    Outcome,
    QueueStats,
    Released,
    Retried,
    SettleResult,
    Step,
    StepMember,
    StepState,
    WorkerInfo,
    errors_from_wire,
    kept_errors,
)
from jobchain.registry import BackendFactory, BackendRegistry

__all__ = [
    "DEFAULT_AGING_INTERVAL",
    "MAX_KEPT_ERRORS",
    "UNREADABLE_TASK",
    "Aborted",
    "AsyncClient",
    "Backend",
    "BackendAuthError",
    "BackendError",
    "BackendFactory",
    "BackendFullError",
    "BackendRegistry",
    "BackendUnavailableError",
    "Browse",
    "Cancel",
    "CancelReport",
    "Capability",
    "ChainRecord",
    "ChainRef",
    "ChainState",
    "Clock",
    "Completed",
    "ConcurrencyLimits",
    "ConfigurationError",
    "Delivery",
    "ErrorInfo",
    "Failed",
    "FailedEntry",
    "FailedQueue",
    "InvalidJobError",
    "Job",
    "JobPage",
    "JobRecord",
    "JobState",
    "JobchainError",
    "Json",
    "ManualClock",
    "NotInFailedQueueError",
    "NotSupportedError",
    "Outcome",
    "Pause",
    "PerLoop",
    "QueueStats",
    "RateLimits",
    "Released",
    "Retried",
    "ScheduleSlots",
    "SettleResult",
    "Stats",
    "Step",
    "StepMember",
    "StepState",
    "SystemClock",
    "Uniqueness",
    "WorkerInfo",
    "WorkerNameTakenError",
    "WorkerRegistry",
    "capabilities",
    "effective_priority",
    "errors_from_wire",
    "hookimpl",
    "kept_errors",
    "name_taken",
    "order_key",
    "require",
    "supports",
    "workflow",
]
