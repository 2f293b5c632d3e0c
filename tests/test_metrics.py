"""jobchain.metrics in one process: the backend collector's cache and error gauge, JobMetrics on a real
worker (memory backend), the HTTP endpoint and the multi-process directory's life."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

pytest.importorskip("prometheus_client", reason="the metrics extra (prometheus_client) is not installed")
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import jobchain
from jobchain import App
from jobchain.errors import BackendUnavailableError
from jobchain.memory import MemoryBackend
from jobchain.metrics import (
    MULTIPROC_ENV,
    BackendCollector,
    JobMetrics,
    MultiprocessMetrics,
    asgi_app,
    backend_registry,
    serve,
    worker_registry,
)
from jobchain.model import Job, QueueStats
from jobchain.plugins import Plugins


def _app(backend: MemoryBackend | None = None) -> App:
    return App(backend=backend or MemoryBackend(), plugins=Plugins(entry_points=False))


def figures(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry's text exposition, parsed back."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def figure(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return figures(registry).get((name, frozenset(labels.items())))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting(MemoryBackend):
    """A memory backend that counts its stats calls and fails them while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def stats(self) -> list[QueueStats]:
        self.calls += 1
        if self.down:
            raise BackendUnavailableError("memory://", "down for the test")
        return super().stats()


def test_the_collector_reads_the_backend_at_most_once_per_interval() -> None:
    """Scrapes within min_interval reuse the last reading; the next one after it reads again."""
    backend = Counting()
    app = _app(backend)

    @app.task(queue="mail")
    def send() -> None: ...

    send.submit()
    clock = Clock()
    collector = BackendCollector(app, min_interval=5.0, clock=clock)
    registry = CollectorRegistry()
    registry.register(collector)
    assert backend.calls == 0  # registering describes, it does not read
    for _ in range(3):
        assert figure(registry, "jobchain_queue_jobs", queue="mail", state="ready") == 1
    assert backend.calls == 1
    send.submit()
    clock.now += 4.9
    assert figure(registry, "jobchain_queue_jobs", queue="mail", state="ready") == 1  # the cached reading
    clock.now += 0.2
    assert figure(registry, "jobchain_queue_jobs", queue="mail", state="ready") == 2
    assert backend.calls == 2


def test_concurrent_scrapes_share_one_reading() -> None:
    """Scrapes arriving together while the backend is read wait for that reading instead of making more."""
    backend = Counting()
    collector = BackendCollector(_app(backend), min_interval=60.0)
    registry = CollectorRegistry()
    registry.register(collector)
    threads = [threading.Thread(target=generate_latest, args=(registry,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert backend.calls == 1


def test_a_failing_backend_is_a_gauge_not_a_failed_scrape() -> None:
    """jobchain_backend_up is 0 and the queue figures are left out while the backend fails; 1 once back."""
    backend = Counting()
    app = _app(backend)

    @app.task
    def work() -> None: ...

    work.submit()
    clock = Clock()
    registry = CollectorRegistry()
    registry.register(BackendCollector(app, min_interval=1.0, clock=clock))
    backend.down = True
    seen = figures(registry)
    assert seen[("jobchain_backend_up", frozenset())] == 0
    assert not [name for name, _ in seen if name.startswith(("jobchain_queue", "jobchain_failed"))]
    figures(registry)
    assert backend.calls == 1  # the failure is cached like a reading
    backend.down = False
    clock.now += 1.0
    assert figure(registry, "jobchain_backend_up") == 1
    assert figure(registry, "jobchain_queue_jobs", queue="default", state="ready") == 1


def test_the_collector_refuses_a_negative_interval() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        BackendCollector(_app(), min_interval=-1)


def test_backend_registry_counts_failed_and_paused_queues() -> None:
    """The reusable registry (the dashboard's): failed-queue size and paused queues, from the backend."""
    app = _app()

    @app.task
    def bad() -> None:
        raise jobchain.Fail("no")

    handle = bad.submit()
    with app.worker(concurrency=1, poll=0.02):
        deadline = time.monotonic() + 10
        while handle.status() != "failed" and time.monotonic() < deadline:
            time.sleep(0.02)
    app.pause("default")
    registry = backend_registry(app, min_interval=0)
    assert figure(registry, "jobchain_failed_queue_jobs", queue="default") == 1
    assert figure(registry, "jobchain_queue_paused", queue="default") == 1
    assert figure(registry, "jobchain_backend_up") == 1


def test_job_metrics_follow_a_real_worker() -> None:
    """Outcomes, histograms and in-flight from a worker's events, a job cancelled while it ran included."""
    app = _app()
    registry = worker_registry(app, min_interval=0)
    started = threading.Event()

    @app.task
    def ok(n: int) -> int:
        return n

    @app.task
    def waits() -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not jobchain.current_job().cancel_requested and time.monotonic() < deadline:
            time.sleep(0.01)

    handles = [ok.submit(i) for i in range(3)]
    held = waits.submit()
    with app.worker(concurrency=2, poll=0.02, name="w1"):
        assert [h.wait(10) for h in handles] == [0, 1, 2]
        assert started.wait(10)
        assert figure(registry, "jobchain_jobs_in_flight", queue="default", task="waits") == 1
        held.cancel()
        deadline = time.monotonic() + 10
        while held.status() != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert figure(registry, "jobchain_worker_up", worker="w1") == 1
    assert held.status() == "cancelled"
    assert figure(registry, "jobchain_jobs_total", queue="default", task="ok", outcome="succeeded") == 3
    assert figure(registry, "jobchain_jobs_total", queue="default", task="waits", outcome="cancelled") == 1
    assert figure(registry, "jobchain_jobs_in_flight", queue="default", task="waits") == 0
    assert figure(registry, "jobchain_job_duration_seconds_count", queue="default", task="ok") == 3
    assert figure(registry, "jobchain_job_wait_seconds_count", queue="default", task="waits") == 1
    assert figure(registry, "jobchain_worker_up", worker="w1") == 0  # stopped


def test_a_job_failed_before_it_started_is_never_in_flight() -> None:
    """A failure without a start (an expired job, an unknown task) counts once and leaves in-flight alone."""
    metrics = JobMetrics()
    job = Job(id="j1", task="gone", enqueued_at=0.0)
    error = jobchain.ErrorInfo(type="UnknownTaskError", message="gone", attempt=1, at=1.0)
    metrics.jobchain_job_failed(job=job, error=error, duration=0.0)
    assert (
        figure(metrics.registry, "jobchain_jobs_total", queue="default", task="gone", outcome="failed") == 1
    )
    assert figure(metrics.registry, "jobchain_jobs_in_flight", queue="default", task="gone") is None
    assert (
        figure(metrics.registry, "jobchain_job_duration_seconds_count", queue="default", task="gone") is None
    )


def test_the_wait_runs_from_when_the_job_became_due() -> None:
    """Wait is start minus the later of enqueue time and not_before (a delay or a retry's backoff)."""
    metrics = JobMetrics(clock=lambda: 110.0)
    metrics.jobchain_job_started(job=Job(id="a", task="t", enqueued_at=100.0))
    metrics.jobchain_job_started(job=Job(id="b", task="t", enqueued_at=100.0, not_before=108.0))
    metrics.jobchain_job_started(job=Job(id="c", task="t", enqueued_at=100.0, not_before=120.0))
    assert figure(metrics.registry, "jobchain_job_wait_seconds_sum", queue="default", task="t") == 12.0
    # a run that ends twice (a hard abort, then its thread returning) leaves in-flight once
    metrics.jobchain_job_cancelled(job=Job(id="a", task="t", enqueued_at=100.0), duration=0.0)
    metrics.jobchain_job_cancelled(job=Job(id="a", task="t", enqueued_at=100.0), duration=0.0)
    assert figure(metrics.registry, "jobchain_jobs_in_flight", queue="default", task="t") == 2


def test_the_endpoint_serves_metrics_and_nothing_else() -> None:
    registry = CollectorRegistry()
    JobMetrics(registry).jobchain_worker_started(worker="w")
    server = serve(registry, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert "jobchain_worker_up" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
        assert missing.value.code == 404
        missing.value.close()
        with pytest.raises(OSError):
            serve(registry, "127.0.0.1", server.port)  # taken
    finally:
        server.close()


def test_the_asgi_app_answers_with_the_exposition() -> None:
    import asyncio

    registry = CollectorRegistry()
    JobMetrics(registry).jobchain_worker_started(worker="w")
    app = asgi_app(registry)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    assert b'jobchain_worker_up{worker="w"} 1.0' in sent[1]["body"]


def test_the_multiprocess_directory_is_made_handed_down_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "/somewhere/else")
    mp = MultiprocessMetrics()
    assert os.environ[MULTIPROC_ENV] == mp.path
    assert os.path.isdir(mp.path)
    assert figures(mp.registry()) == {}  # no process wrote anything yet
    mp.process_ended(123456)  # nothing of that pid: no error
    mp.close()
    assert os.environ[MULTIPROC_ENV] == "/somewhere/else"
    assert not os.path.exists(mp.path)


def test_task_labels_are_capped() -> None:
    """Beyond max_tasks (queue, task) pairs, jobs count under task "_other": a backend cannot flood series."""
    metrics = JobMetrics(max_tasks=2)
    error = jobchain.ErrorInfo(type="UnknownTaskError", message="?", attempt=1, at=1.0)
    for i in range(5):
        metrics.jobchain_job_failed(
            job=Job(id=f"j{i}", task=f"t{i}", enqueued_at=0.0), error=error, duration=0.0
        )
    seen = {
        dict(labels)["task"]: value
        for (name, labels), value in figures(metrics.registry).items()
        if name == "jobchain_jobs_total"
    }
    assert seen == {"t0": 1, "t1": 1, "_other": 3}


def test_queue_figures_are_capped_and_the_queues_counted() -> None:
    """Beyond max_queues queues (by name) the figures stop; jobchain_queues still counts every queue."""
    app = _app()
    for name in ("c", "a", "b"):
        app.task(name=f"t_{name}", queue=name)(lambda: None).submit()
    registry = CollectorRegistry()
    registry.register(BackendCollector(app, min_interval=0, max_queues=2))
    seen = figures(registry)
    assert seen[("jobchain_queues", frozenset())] == 3
    listed = {dict(labels)["queue"] for (name, labels) in seen if name == "jobchain_failed_queue_jobs"}
    assert listed == {"a", "b"}
