"""The worker's prefetch: reserved per round trip, adapted to how long jobs run unless fixed."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from click.testing import CliRunner

from jobchain import App, Worker
from jobchain.cli.main import cli
from jobchain.memory import MemoryBackend
from jobchain.model import Delivery
from jobchain.testing import eventually
from jobchain.worker._core import PREFETCH_CAP, PREFETCH_HOLD, PREFETCH_WINDOW, adaptive_prefetch


class CountingBackend(MemoryBackend):
    """A memory backend that records the ``limit`` of every reserve that returned jobs."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []
        self._lock = threading.Lock()

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        got = super().reserve(queues, limit=limit, lease=lease, worker=worker, wait=wait)
        if got:
            with self._lock:
                self.limits.append(limit)
        return got


def _run(jobs: int, seconds: float, **worker_options: int) -> list[int]:
    backend = CountingBackend()
    app = App(backend=backend)

    @app.task
    def work(i: int) -> int:
        if seconds:
            time.sleep(seconds)
        return i

    handles = [work.submit(i) for i in range(jobs)]
    worker = Worker(app, concurrency=4, poll=0.05, **worker_options).start()
    try:
        assert [h.wait(timeout=30) for h in handles] == list(range(jobs))
    finally:
        assert worker.stop(timeout=5)
    return backend.limits


def test_batch_holds_a_window_of_work_per_thread_between_concurrency_and_the_cap() -> None:
    assert adaptive_prefetch(4, 1e-5) == PREFETCH_CAP
    assert adaptive_prefetch(4, PREFETCH_WINDOW) == 4
    assert adaptive_prefetch(4, 10.0) == 4
    assert adaptive_prefetch(4, PREFETCH_WINDOW / 4) == 16
    assert adaptive_prefetch(100, 1e-5) == 100  # never fewer than one per thread


def test_short_jobs_are_reserved_in_larger_batches() -> None:
    limits = _run(600, 0.0)
    assert limits[0] == 4  # nothing is known of the jobs yet: one per thread
    assert max(limits) > 4
    assert max(limits) <= PREFETCH_CAP


def test_long_jobs_are_reserved_one_per_thread() -> None:
    assert set(_run(12, 0.05)) == {4}


def test_a_fixed_prefetch_is_kept() -> None:
    assert set(_run(300, 0.0, prefetch=3)) == {3}


@pytest.mark.parametrize("value", ["0", "1001", "x"])
def test_cli_rejects_a_bad_prefetch(value: str) -> None:
    result = CliRunner().invoke(cli, ["worker", "-c", "nowhere.py", "--prefetch", value])
    assert result.exit_code == 2
    assert "--prefetch" in result.output


def test_a_large_batch_of_jobs_that_turned_long_goes_back_to_the_queue() -> None:
    """Jobs beyond one per thread that waited PREFETCH_HOLD unstarted are released for other workers."""
    backend = CountingBackend()
    app = App(backend=backend)
    gate = threading.Event()

    @app.task
    def short(i: int) -> int:
        return i

    @app.task
    def long(i: int) -> int:
        gate.wait(10)
        return i

    worker = Worker(app, concurrency=2, poll=0.05).start()
    try:
        assert [h.wait(timeout=10) for h in [short.submit(i) for i in range(300)]] == list(range(300))
        assert worker.prefetch > 30  # sized while the jobs were short
        handles = [long.submit(i) for i in range(30)]
        assert eventually(lambda: worker.held() == 30)  # 2 running, 28 waiting in the buffer
        assert eventually(lambda: worker.held() <= 4, timeout=PREFETCH_HOLD + 2)
        [stats] = backend.stats()
        assert stats.ready >= 26  # given back: any worker may take them
        gate.set()
        assert [h.wait(timeout=10) for h in handles] == list(range(30))
    finally:
        gate.set()
        assert worker.stop(timeout=5)

