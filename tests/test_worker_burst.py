"""``Worker.run(burst=True)``: returns once its queues are idle; refuses a backend that cannot count them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jobchain import App
from jobchain.errors import NotSupportedError
from jobchain.memory import MemoryBackend
from jobchain.plugins import Plugins

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from minimal_backend import MinimalBackend


def _app(backend: MemoryBackend | MinimalBackend) -> App:
    app = App(backend, plugins=Plugins(entry_points=False))

    @app.task(name="step")
    def step(n: int) -> int:
        if n > 0:
            app.submit("step", n - 1)
        return n

    return app


def test_run_burst_returns_once_everything_ran() -> None:
    app = _app(MemoryBackend())
    handles = [app.submit("step", 3), app.submit("step", 1)]
    worker = app.worker(concurrency=2, poll=0.02)
    worker.run(burst=True)
    assert [h.status() for h in handles] == ["succeeded", "succeeded"]
    assert worker.counters.done == 6  # 3, 2, 1, 0 and 1, 0
    assert worker.held() == 0


def test_run_burst_needs_stats() -> None:
    worker = _app(MinimalBackend()).worker()
    with pytest.raises(NotSupportedError, match="Stats"):
        worker.run(burst=True)
    assert not worker._threads  # refused before starting
