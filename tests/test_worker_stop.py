"""Prompt stop: an idle worker stops at once, on memory and on a real Redis, and loses nothing it reserved."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from jobchain import App
from jobchain.backend import Backend
from jobchain.memory import MemoryBackend
from jobchain.plugins import Plugins

#: what an idle stop must take; measured ~0.02 s on memory and ~0.03 s on Redis (docs/guide.md),
#: asserted generously so that a loaded machine does not make it flaky
BOUND = 0.3


@pytest.fixture(params=["memory", "redis-lists", "redis-streams"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    pytest.importorskip("jobchain_redis", reason="jobchain-redis is not installed")
    from jobchain_redis.lists import ListsBackend
    from jobchain_redis.streams import StreamsBackend

    kind = {"redis-lists": ListsBackend, "redis-streams": StreamsBackend}[request.param]
    url = request.getfixturevalue("redis_server_url").replace("redis://", f"{request.param}://")
    made: Backend = kind.from_url(url + f"?prefix=stop{uuid.uuid4().hex[:8]}")
    yield made
    made.close()


def _app(backend: Backend) -> App:
    app = App(backend, plugins=Plugins(entry_points=False))
    app.task(name="add", queue="q")(_add)
    return app


def _add(a: int, b: int) -> int:
    return a + b


def test_an_idle_worker_stops_at_once(backend: Backend) -> None:
    """start() then stop() of an idle worker (default 1 s poll) returns well within its poll."""
    app = _app(backend)
    worker = app.worker(concurrency=2).start()
    time.sleep(0.1)  # the fetcher is in its blocking reserve now
    began = time.monotonic()
    assert worker.stop(timeout=5)
    took = time.monotonic() - began
    print(f"idle stop took {took * 1000:.1f} ms")
    assert took < BOUND


def test_a_job_submitted_just_before_stop_is_run_by_the_next_worker(backend: Backend) -> None:
    """Whatever a reserve returns after stop() went on without it is released, not lost."""
    app = _app(backend)
    first = app.worker(concurrency=1, name="first").start()
    time.sleep(0.1)
    handle = app.submit("add", 1, 2)
    first.stop(timeout=5)
    assert first.held() == 0
    second = app.worker(concurrency=1, name="second").start()
    try:
        assert handle.wait(timeout=10) == 3
    finally:
        second.stop(timeout=5)


class _Unwakeable(MemoryBackend):
    """A backend whose blocking reserve cannot be woken, like a blocking read on a server."""

    def wake(self, worker: str) -> None:
        return None


def test_a_reserve_left_blocking_at_stop_releases_what_it_returns_later() -> None:
    """stop() does not wait out a reserve that keeps blocking; the job it then leases is released."""
    backend = _Unwakeable()
    app = _app(backend)
    first = app.worker(concurrency=1, name="first", poll=2.0).start()
    time.sleep(0.1)
    began = time.monotonic()
    assert first.stop(timeout=5)
    assert time.monotonic() - began < BOUND
    assert first._fetcher is not None
    assert first._fetcher.is_alive()  # still in its reserve
    handle = app.submit("add", 2, 3)  # that reserve leases it now, then gives it back
    first._fetcher.join(5)
    assert handle.status() in ("queued", "pending")
    with app.worker(concurrency=1, name="second"):
        assert handle.wait(timeout=10) == 5


# the memory backend wakes the reserve, so nothing is left behind there (see _Unwakeable)
@pytest.mark.parametrize("backend", ["redis-lists", "redis-streams"], indirect=True)
def test_a_job_leased_by_the_reserve_stop_left_behind_is_run_by_the_next_worker(backend: Backend) -> None:
    """On Redis the blocking read outlives stop(): what it leases then goes back to the queue."""
    app = _app(backend)
    first = app.worker(concurrency=1, name="first").start()
    time.sleep(0.1)
    assert first.stop(timeout=5)
    fetcher = first._fetcher
    assert fetcher is not None
    handle = app.submit("add", 4, 5)  # the blocking read still in flight may lease it: it is released
    fetcher.join(5)
    assert not fetcher.is_alive()
    with app.worker(concurrency=1, name="second"):
        assert handle.wait(timeout=10) == 9
