"""Rate and concurrency limits applied by workers (memory backend, real threads, short windows)."""

from __future__ import annotations

import threading
import time

import pytest

from jobchain import App
from jobchain.errors import ConfigurationError
from jobchain.limits import Limits, gcra_take, key_of, parse_rate
from jobchain.memory import MemoryBackend
from jobchain.plugins import Plugins
from jobchain.worker import Worker


def test_parse_rate_reads_windows() -> None:
    assert parse_rate("100/s") == ((100, 1.0),)
    assert parse_rate("10/s; 1000/h") == ((10, 1.0), (1000, 3600.0))
    assert parse_rate("5/10s;2/m;1/d") == ((5, 10.0), (2, 60.0), (1, 86400.0))
    for bad in ("", "10", "0/s", "10/x", "a/s"):
        with pytest.raises(ConfigurationError):
            parse_rate(bad)


def test_gcra_take_spaces_tokens_and_reserves_in_order() -> None:
    state: dict[str, float] = {}
    waits = []
    for _ in range(4):
        wait, new = gcra_take(state, [(2, 1.0)], 100.0, 1, 10.0)
        assert new is not None
        state = new
        waits.append(wait)
    assert waits == pytest.approx([0.0, 0.0, 0.5, 1.0])


def test_limit_keys_come_from_arguments() -> None:
    assert key_of(None, ["a"], (1,), {}) == ""
    assert key_of(("customer",), ["customer", "n"], ("acme", 3), {}) == "acme"
    assert key_of(lambda args, kwargs: f"k{args[0]}", [], (7,), {}) == "k7"
    assert Limits.build() is None
    with pytest.raises(ConfigurationError, match="rate_key= needs"):
        Limits.build(rate_key="x")
    with pytest.raises(ConfigurationError, match="concurrency must be"):
        Limits.build(concurrency=0)


def _app() -> App:
    return App(backend=MemoryBackend(), plugins=Plugins(entry_points=False))


def test_a_rate_limit_spaces_the_runs_across_threads() -> None:
    app = _app()
    starts: list[float] = []

    @app.task(rate_limit="2/s")
    def tick(i: int) -> int:
        starts.append(time.monotonic())
        return i

    tick.submit_many([(i,) for i in range(5)])
    Worker(app, concurrency=4, poll=0.05).run(burst=True)
    assert len(starts) == 5
    starts.sort()
    # two at once, then one every 0.5 s: the fifth starts >= 1.5 s after the first
    assert starts[4] - starts[0] >= 1.4
    records = app.jobs.list("default", "succeeded", limit=10).records
    assert [r.job.attempt for r in records] == [1] * 5  # waiting used no attempt


def test_a_concurrency_limit_per_key_is_never_exceeded() -> None:
    app = _app()
    lock = threading.Lock()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    @app.task(concurrency=1, concurrency_key="customer")
    def work(customer: str, i: int) -> None:
        with lock:
            running[customer] = running.get(customer, 0) + 1
            peak[customer] = max(peak.get(customer, 0), running[customer])
        time.sleep(0.05)
        with lock:
            running[customer] -= 1

    work.submit_many([(c, i) for i in range(4) for c in ("a", "b")])
    Worker(app, concurrency=4, poll=0.05).run(burst=True)
    assert peak == {"a": 1, "b": 1}


def test_a_queue_limit_applies_to_every_task_of_the_queue() -> None:
    app = _app()
    app.limit_queue("slow", concurrency=1)
    lock = threading.Lock()
    now = [0]
    peak = [0]

    def body() -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.03)
        with lock:
            now[0] -= 1

    one = app.task(name="one", queue="slow")(lambda: body())
    two = app.task(name="two", queue="slow")(lambda: body())
    for _ in range(3):
        one.submit()
        two.submit()
    Worker(app, queues=["slow"], concurrency=4, poll=0.05).run(burst=True)
    assert peak == [1]


def test_a_held_job_is_counted_in_the_heartbeat_and_by_status() -> None:
    """A job waiting for a slot keeps its attempt and lease, and its worker reports it held."""
    app = _app()
    gate = threading.Event()

    @app.task(concurrency=1)
    def blocked(i: int) -> int:
        gate.wait(10)
        return i

    first, second = blocked.submit(1), blocked.submit(2)
    with app.worker(concurrency=2, poll=0.02, heartbeat_ttl=0.3):
        deadline = time.monotonic() + 5
        while not any(w.held for w in app.workers()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [w.held for w in app.workers()] == [1]
        gate.set()
        assert (first.wait(timeout=10), second.wait(timeout=10)) == (1, 2)
    assert app.backend.get_job(second.id).job.attempt == 1  # type: ignore[union-attr]


def test_a_held_job_that_is_cancelled_never_runs() -> None:
    app = _app()
    gate = threading.Event()
    ran: list[int] = []

    @app.task(concurrency=1)
    def blocked(i: int) -> int:
        ran.append(i)
        gate.wait(10)
        return i

    first, second = blocked.submit(1), blocked.submit(2)
    with app.worker(concurrency=2, poll=0.02, heartbeat_ttl=0.3):
        deadline = time.monotonic() + 5
        while not any(w.held for w in app.workers()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert second.cancel().requested == (second.id,)  # leased, held: asked to stop
        deadline = time.monotonic() + 5
        while second.status() != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.02)
        gate.set()
        assert first.wait(timeout=10) == 1
    assert second.status() == "cancelled"
    assert ran == [1]
