"""BackendCollector: queue depths, failed-queue sizes and paused queues, read from the backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobchain.capabilities import Pause, Stats
from jobchain.errortext import type_name

if TYPE_CHECKING:
    from jobchain.app import App

__all__ = ["DEFAULT_MIN_INTERVAL", "BackendCollector"]

logger = structlog.get_logger("jobchain.metrics")

#: seconds a reading of the backend is reused before the next scrape reads it again
DEFAULT_MIN_INTERVAL = 5.0

#: the states of :class:`jobchain.model.QueueStats` a queue's jobs are counted in
QUEUE_STATES = ("ready", "delayed", "in_flight")


class BackendCollector(Collector):
    """Reads the backend's counts (``Stats``, ``Pause``) when scraped, at most once per ``min_interval``.

    Scrapes within ``min_interval`` seconds of the last reading get that
    reading again, and scrapes that arrive while a reading is under way wait
    for it, so a burst of scrapes costs the backend one call. A backend that
    fails to answer gives ``jobchain_backend_up 0`` and no queue figures (the
    scrape itself succeeds); the failure is cached like a reading. A backend
    without ``Stats`` gives ``jobchain_backend_up 1`` and no queue figures.

    Queue names are label values, and any writer of the backend can make
    queues: the figures cover the first ``max_queues`` queues by name, and
    ``jobchain_queues`` counts them all (so a gap shows).
    """

    def __init__(
        self,
        app: App,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        max_queues: int = 1000,
    ) -> None:
        if not min_interval >= 0:
            raise ValueError(f"min_interval must be 0 or more seconds, got {min_interval!r}")
        self.app = app
        self.min_interval = min_interval
        self.max_queues = max_queues
        self._clock = clock
        self._lock = threading.Lock()
        self._reading: list[Metric] | None = None
        self._read_at = 0.0
        #: how many times the backend was asked (for tests and curious operators)
        self.readings = 0

    def describe(self) -> Iterator[Metric]:
        """The metric names, without a reading (so registering the collector does not call the backend)."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self._clock()
            if self._reading is None or now - self._read_at >= self.min_interval:
                self._reading = self._read()
                self._read_at = self._clock()
            return iter(self._reading)

    def _read(self) -> list[Metric]:
        self.readings += 1
        depth, failed, paused, count, up, seconds = _families()
        t0 = time.perf_counter()
        try:
            backend = self.app.backend
            if isinstance(backend, Stats):
                stats = sorted(backend.stats(), key=lambda s: s.queue)
                count.add_metric([], len(stats))
                for s in stats[: self.max_queues]:
                    for state in QUEUE_STATES:
                        depth.add_metric([s.queue, state], getattr(s, state))
                    failed.add_metric([s.queue], s.failed)
            if isinstance(backend, Pause):
                for queue in sorted(backend.paused())[: self.max_queues]:
                    paused.add_metric([queue], 1)
        except Exception as exc:  # down, refusing, slow past its timeout: a figure, not a failed scrape
            logger.warning("metrics_backend_failed", error=type_name(exc))
            depth, failed, paused, count, up, seconds = _families()
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        seconds.add_metric([], time.perf_counter() - t0)
        return [depth, failed, paused, count, up, seconds]


def _families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily(
            "jobchain_queue_jobs",
            "Jobs in a queue by state: ready, delayed (waiting for their time), in_flight (leased).",
            labels=["queue", "state"],
        ),
        GaugeMetricFamily(
            "jobchain_failed_queue_jobs", "Jobs of a queue in the failed queue.", labels=["queue"]
        ),
        GaugeMetricFamily("jobchain_queue_paused", "1 for each paused queue.", labels=["queue"]),
        GaugeMetricFamily(
            "jobchain_queues", "Queues the backend counts (figures cover the first max_queues)."
        ),
        GaugeMetricFamily("jobchain_backend_up", "1 if the last reading of the backend's counts succeeded."),
        GaugeMetricFamily(
            "jobchain_backend_read_seconds", "How long the last reading of the backend's counts took."
        ),
    )
