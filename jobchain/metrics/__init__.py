"""Prometheus metrics for jobchain (needs ``pip install 'jobchain[metrics]'``, i.e. prometheus_client).

Every metric is described in ``docs/metrics.md``. Two sources feed them:

* :class:`JobMetrics`, a plugin on the event hooks of the workers of one
  process: jobs by outcome, run and wait times, in flight, worker up, chains;
* :class:`BackendCollector`, read from the backend when scraped (at most once
  per ``min_interval`` seconds): queue depth by state, failed-queue size,
  paused queues, and ``jobchain_backend_up``.

``jobchain worker --metrics-port PORT`` serves both. To expose them from your
own program or another server (the dashboard mounts ``/metrics`` this way)::

    backend_registry(app: App, *, min_interval: float = 5.0) -> CollectorRegistry
        # a new registry holding a BackendCollector of ``app``'s backend
    worker_registry(app: App, *, min_interval: float = 5.0) -> CollectorRegistry
        # the same, plus a JobMetrics plugin registered on ``app.plugins``
    asgi_app(registry: CollectorRegistry) -> ASGI app
        # answers a GET with the text exposition: mount it at /metrics (Starlette: Mount("/metrics", app))
    serve(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> MetricsServer
        # GET /metrics on a daemon thread; .port, .url, .close(); OSError if it cannot bind

and the parts they are made of::

    JobMetrics(registry: CollectorRegistry | None = None, *, buckets=DEFAULT_BUCKETS, clock=time.time,
               max_tasks: int = 1000)
        # the plugin: app.plugins.register(JobMetrics(registry)); .registry
    BackendCollector(app: App, *, min_interval: float = 5.0, clock=time.monotonic, max_queues: int = 1000)
        # registry.register(BackendCollector(app)); reads the backend when collected, cached

For several processes, :class:`MultiprocessMetrics` is the supervising
process's side of prometheus_client's multi-process mode (a private
directory, handed to the children through ``PROMETHEUS_MULTIPROC_DIR``).

Only this package imports prometheus_client. Importing it without
prometheus_client raises :class:`ImportError` (``name="prometheus_client"``)
whose message says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from prometheus_client import CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by tests/cli/test_cli_metrics.py
    raise ImportError(
        "Prometheus metrics need prometheus_client: pip install 'jobchain[metrics]'", name="prometheus_client"
    ) from exc

from jobchain.metrics._backend import DEFAULT_MIN_INTERVAL, BackendCollector
from jobchain.metrics._events import DEFAULT_BUCKETS, JobMetrics
from jobchain.metrics._serving import MULTIPROC_ENV, MetricsServer, MultiprocessMetrics, asgi_app, serve

if TYPE_CHECKING:
    from jobchain.app import App

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MIN_INTERVAL",
    "MULTIPROC_ENV",
    "BackendCollector",
    "JobMetrics",
    "MetricsServer",
    "MultiprocessMetrics",
    "asgi_app",
    "backend_registry",
    "serve",
    "worker_registry",
]


def backend_registry(app: App, *, min_interval: float = DEFAULT_MIN_INTERVAL) -> CollectorRegistry:
    """A new registry with a :class:`BackendCollector` of ``app``'s backend (no job events)."""
    registry = CollectorRegistry()
    registry.register(BackendCollector(app, min_interval=min_interval))
    return registry


def worker_registry(app: App, *, min_interval: float = DEFAULT_MIN_INTERVAL) -> CollectorRegistry:
    """A new registry with the backend's counts and the job events of ``app``'s workers in this process.

    Registers a :class:`JobMetrics` on ``app.plugins``; call it before the workers start.
    """
    registry = backend_registry(app, min_interval=min_interval)
    app.plugins.register(JobMetrics(registry))
    return registry
