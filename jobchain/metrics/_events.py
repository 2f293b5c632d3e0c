"""JobMetrics: a plugin turning the worker's event hooks into Prometheus counters, gauges and histograms."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from jobchain.hookspecs import hookimpl
from jobchain.model import ChainRecord, ErrorInfo, Job

__all__ = ["DEFAULT_BUCKETS", "JobMetrics"]

#: histogram buckets in seconds, for run times and waits alike: 5 ms to an hour
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

_JOB_LABELS = ("queue", "task")

#: the task label of jobs beyond ``max_tasks`` distinct (queue, task) pairs
OTHER_TASK = "_other"


class JobMetrics:
    """Prometheus metrics fed by the event hooks: register it with ``app.plugins.register(JobMetrics())``.

    The metrics live in ``registry`` (a new :class:`~prometheus_client.CollectorRegistry`
    by default, so two instances never clash over the process-wide one). In
    prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set
    before it is imported) every process writes its values to that directory
    and the gauges sum over live processes only; see :mod:`jobchain.metrics`.
    ``clock`` gives the wall time the wait of a starting job is measured against.

    Task names become label values. A job's name comes from whoever wrote it
    to the backend, and one with an unknown task still fails (and is counted)
    on a worker, so the number of (queue, task) label pairs is capped at
    ``max_tasks``: jobs beyond it are counted under the task ``_other``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        clock: Callable[[], float] = time.time,
        max_tasks: int = 1000,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        into = self.registry
        self.jobs = Counter(
            "jobchain_jobs",
            "Runs of jobs that ended, by outcome: succeeded, failed (for good), retried, cancelled.",
            (*_JOB_LABELS, "outcome"),
            registry=into,
        )
        self.started = Counter("jobchain_jobs_started", "Runs of jobs started.", _JOB_LABELS, registry=into)
        self.duration = Histogram(
            "jobchain_job_duration_seconds",
            "How long a job's run took, for runs that succeeded, failed or will be retried.",
            _JOB_LABELS,
            buckets=buckets,
            registry=into,
        )
        self.wait = Histogram(
            "jobchain_job_wait_seconds",
            "How long a job waited from becoming due (enqueued, delay or backoff over) to starting.",
            _JOB_LABELS,
            buckets=buckets,
            registry=into,
        )
        self.in_flight = Gauge(
            "jobchain_jobs_in_flight",
            "Jobs running now.",
            _JOB_LABELS,
            registry=into,
            multiprocess_mode="livesum",
        )
        self.worker_up = Gauge(
            "jobchain_worker_up",
            "1 while the worker takes jobs, 0 once it stopped.",
            ("worker",),
            registry=into,
            multiprocess_mode="livemax",
        )
        self.chains = Counter(
            "jobchain_chains",
            "Chains (and groups submitted alone) that ended, by outcome: completed, halted.",
            ("outcome",),
            registry=into,
        )
        self._lock = threading.Lock()
        self.max_tasks = max_tasks
        #: the (queue, task) label pairs seen, up to max_tasks
        self._labels: set[tuple[str, str]] = set()
        #: (job id, attempt) of the runs started and not ended yet: each is let out of in-flight once
        self._running: set[tuple[str, int]] = set()

    # --- the worker -----------------------------------------------------------------------

    @hookimpl
    def jobchain_worker_started(self, worker: str) -> None:
        self.worker_up.labels(worker).set(1)

    @hookimpl
    def jobchain_worker_stopped(self, worker: str) -> None:
        self.worker_up.labels(worker).set(0)

    # --- jobs -------------------------------------------------------------------------------

    def _job_labels(self, job: Job) -> tuple[str, str]:
        """(queue, task), or (queue, "_other") once max_tasks pairs are in use; called under the lock."""
        pair = (job.queue, job.task)
        if pair in self._labels:
            return pair
        if len(self._labels) < self.max_tasks:
            self._labels.add(pair)
            return pair
        return job.queue, OTHER_TASK

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        due = job.enqueued_at if job.not_before is None else max(job.enqueued_at, job.not_before)
        with self._lock:
            queue, task = self._job_labels(job)
            self._running.add((job.id, job.attempt))
        self.started.labels(queue, task).inc()
        self.in_flight.labels(queue, task).inc()
        self.wait.labels(queue, task).observe(max(0.0, self._clock() - due))

    @hookimpl
    def jobchain_job_succeeded(self, job: Job, duration: float) -> None:
        self._ended(job, "succeeded", duration)

    @hookimpl
    def jobchain_job_retrying(self, job: Job, error: ErrorInfo, duration: float) -> None:
        self._ended(job, "retried", duration)

    @hookimpl
    def jobchain_job_failed(self, job: Job, error: ErrorInfo, duration: float) -> None:
        self._ended(job, "failed", duration)

    @hookimpl
    def jobchain_job_cancelled(self, job: Job, duration: float) -> None:
        self._ended(job, "cancelled", None)

    def _ended(self, job: Job, outcome: str, duration: float | None) -> None:
        with self._lock:
            queue, task = self._job_labels(job)
            key = (job.id, job.attempt)
            ran = key in self._running
            self._running.discard(key)
        self.jobs.labels(queue, task, outcome).inc()
        if ran:  # (a job failed before it started, expired say, never was in flight)
            self.in_flight.labels(queue, task).dec()
            if duration is not None:
                self.duration.labels(queue, task).observe(duration)

    # --- chains -----------------------------------------------------------------------------

    @hookimpl
    def jobchain_chain_completed(self, chain: ChainRecord) -> None:
        self.chains.labels("completed").inc()

    @hookimpl
    def jobchain_chain_halted(self, chain: ChainRecord) -> None:
        self.chains.labels("halted").inc()
