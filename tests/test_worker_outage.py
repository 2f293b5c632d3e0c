"""A backend that fails never kills a worker: it backs off, logs the outage once and settles everything later.

:class:`FlakyBackend` wraps the memory backend and injects faults: the next N
calls fail, or every call fails while a window is open. A call that is in
progress when the window opens fails when it returns (the reply was lost), so
a settlement can be applied and still reported as failed, as with a real
network.
"""

from __future__ import annotations

import itertools
import random
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
import structlog.testing
from hypothesis import given
from hypothesis import strategies as st

from jobchain import App, BackendError, BackendUnavailableError, Worker, chain
from jobchain.backend import Backend
from jobchain.capabilities import FailedQueue, Stats, WorkerRegistry
from jobchain.memory import MemoryBackend
from jobchain.model import (
    ChainRecord,
    ChainState,
    Delivery,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    Outcome,
    QueueStats,
    SettleResult,
    WorkerInfo,
)
from jobchain.outage import Backoff, Outage
from jobchain.plugins import Plugins
from jobchain.testing import eventually as poll

T = TypeVar("T")

#: fast reconnects for tests: 5 ms doubling, capped at 40 ms
FAST = {"reconnect_base": 0.005, "reconnect_cap": 0.04, "poll": 0.02}


class FlakyBackend(Backend, FailedQueue, WorkerRegistry, Stats):
    """The memory backend with injected faults; records every call as ``(operation, monotonic, ok)``.

    It passes every capability of the memory backend through, so it declares them all.
    """

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        super().__init__(clock=self.inner.clock)
        self.url = "flaky://"
        self.calls: list[tuple[str, float, bool]] = []
        self.accepted: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._down = False
        self._fail_next = 0
        self._only: frozenset[str] | None = None
        self._error: Callable[[], Exception] = self._unavailable
        self._hang = 0.0

    def _unavailable(self) -> Exception:
        return BackendUnavailableError(self.url, "ConnectionError: connection refused (injected)")

    def down(
        self,
        only: Sequence[str] | None = None,
        error: Callable[[], Exception] | None = None,
        *,
        hang: float = 0.0,
    ) -> None:
        """Fail every call (or only the ``only`` operations) until :meth:`up`, each after ``hang`` seconds."""
        with self._lock:
            self._only = None if only is None else frozenset(only)
            self._error = error or self._unavailable
            self._hang = hang
            self._down = True

    def up(self) -> None:
        with self._lock:
            self._down = False

    def fail_next(self, count: int, only: Sequence[str], error: Callable[[], Exception]) -> None:
        """Fail the next ``count`` calls of the ``only`` operations with ``error()``."""
        with self._lock:
            self._fail_next, self._only, self._error = count, frozenset(only), error

    def _failing(self, operation: str) -> Exception | None:
        with self._lock:
            if self._only is not None and operation not in self._only:
                return None
            if self._down:
                return self._error()
            if self._fail_next > 0:
                self._fail_next -= 1
                return self._error()
            return None

    def _call(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        error = self._failing(operation)
        if error is not None and self._hang:
            time.sleep(self._hang)  # a backend that does not answer, then times out
        if error is None:
            result = fn(*args, **kwargs)
            with self._lock:
                lost = self._down and (self._only is None or operation in self._only)
            if lost:  # the window opened while the call was in flight: its reply is lost
                error = self._error()
            elif operation == "settle":
                for outcome, answer in zip(args[0], result, strict=True):  # type: ignore[call-overload]
                    if answer.accepted:
                        self.accepted[outcome.delivery.job.id] += 1
        with self._lock:
            self.calls.append((operation, time.monotonic(), error is None))
        if error is not None:
            raise error
        return result

    def count(self, operation: str, *, ok: bool | None = None, since: float = 0.0) -> int:
        with self._lock:
            return sum(
                1 for op, t, good in self.calls if op == operation and t >= since and ok in (None, good)
            )

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self._call("enqueue", self.inner.enqueue, jobs, chains)

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        return self._call(
            "reserve", self.inner.reserve, queues, limit=limit, lease=lease, worker=worker, wait=wait
        )

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        return self._call("extend", self.inner.extend, deliveries, lease)

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        return self._call("settle", self.inner.settle, outcomes)

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.inner.get_job(job_id)

    def get_chain(self, chain_id: str) -> ChainRecord | None:
        return self.inner.get_chain(chain_id)

    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        return self.inner.failed(limit=limit, offset=offset)

    def get_failed(self, job_id: str) -> FailedEntry | None:
        return self.inner.get_failed(job_id)

    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        return self.inner.redrive(job_ids)

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        return self.inner.purge_failed(job_ids)

    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        return self._call("heartbeat", self.inner.heartbeat, info, ttl)

    def remove_worker(self, name: str, instance: str | None = None) -> None:
        self._call("remove_worker", self.inner.remove_worker, name, instance)

    def workers(self) -> list[WorkerInfo]:
        return self.inner.workers()

    def request_stop(self, name: str) -> bool:
        return self.inner.request_stop(name)

    def stats(self) -> list[QueueStats]:
        return self._call("stats", self.inner.stats)


@pytest.fixture
def flaky() -> FlakyBackend:
    return FlakyBackend()


@pytest.fixture
def flaky_app(flaky: FlakyBackend) -> App:
    return App(flaky, plugins=Plugins(entry_points=False))


@pytest.fixture
def workers() -> Any:
    """Start workers; every one is stopped at teardown with the backend up."""
    started: list[tuple[Worker, FlakyBackend]] = []

    def start(app: App, **options: Any) -> Worker:
        for key, value in FAST.items():
            options.setdefault(key, value)
        worker = app.worker(**options).start()
        assert isinstance(app.backend, FlakyBackend)
        started.append((worker, app.backend))
        return worker

    yield start
    for worker, backend in started:
        backend.up()
        worker.stop(timeout=5)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds passed."""
    return poll(check, timeout)


def alive(prefix: str) -> list[str]:
    """Names of the live threads whose name starts with ``prefix``."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))


def job_state(app: App, job_id: str) -> JobState | None:
    record = app.backend.get_job(job_id)
    return None if record is None else record.state


def test_no_thread_dies_during_an_outage(flaky_app: App, flaky: FlakyBackend, workers: Any) -> None:
    """Every call failing for a while ends no thread, and every job then completes, each run once."""
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @flaky_app.task
    def work(n: int) -> int:
        with lock:
            runs[n] += 1
        time.sleep(0.01)
        return n

    handles = flaky_app.submit_many(work.s(n) for n in range(60))
    names = ["outage-a", "outage-b", "outage-c"]
    workers(flaky_app, concurrency=3, slot_names=names, lease=5.0)
    threads = sorted(f"jobchain-{n}" for n in names)
    assert eventually(lambda: sum(runs.values()) >= 10)
    flaky.down()
    time.sleep(0.5)
    assert alive("jobchain-outage-") == threads
    assert "jobchain-monitor" in alive("jobchain-monitor")
    flaky.up()
    assert eventually(lambda: all(job_state(flaky_app, h.id) is JobState.SUCCEEDED for h in handles))
    assert alive("jobchain-outage-") == threads
    assert runs == Counter(range(60))


def test_outcomes_are_settled_exactly_once_after_recovery(
    flaky_app: App, flaky: FlakyBackend, workers: Any
) -> None:
    """Outcomes that could not be settled wait, then are settled once each; chains complete in order."""
    order: list[tuple[int, str]] = []
    lock = threading.Lock()

    @flaky_app.task
    def one(n: int) -> list[int]:
        with lock:
            order.append((n, "one"))
        return [n]

    @flaky_app.task
    def two(acc: list[int]) -> list[int]:
        with lock:
            order.append((acc[0], "two"))
        return [*acc, 2]

    @flaky_app.task
    def three(acc: list[int]) -> list[int]:
        with lock:
            order.append((acc[0], "three"))
        return [*acc, 3]

    flaky.down(only=["settle"])  # jobs run, but nothing can be settled
    chains = flaky_app.submit_many(chain(one.s(n), two, three, name="abc") for n in range(10))
    worker = workers(flaky_app, concurrency=2)
    assert eventually(lambda: len(order) == 10)
    assert eventually(lambda: flaky.count("settle", ok=False) >= 3)
    assert worker.held() == 10  # kept, not dropped
    flaky.up()
    assert eventually(lambda: all(_chain_state(flaky_app, c.id) is ChainState.COMPLETED for c in chains))
    assert eventually(lambda: worker.held() == 0)
    assert [c.result() for c in chains] == [[n, 2, 3] for n in range(10)]
    assert set(flaky.accepted.values()) == {1}
    assert len(flaky.accepted) == 30
    for n in range(10):
        assert [step for m, step in order if m == n] == ["one", "two", "three"]


def _chain_state(app: App, chain_id: str) -> ChainState | None:
    record = app.backend.get_chain(chain_id)
    return None if record is None else record.state


def test_a_settlement_whose_reply_was_lost_is_not_applied_twice(
    flaky_app: App, flaky: FlakyBackend, workers: Any
) -> None:
    """A settle applied by the backend but reported failed is retried and rejected as already done."""
    gate = threading.Event()

    @flaky_app.task
    def slow(n: int) -> int:
        gate.wait(5)
        return n

    @flaky_app.task
    def then(n: int) -> int:
        return n + 1

    handle = flaky_app.submit(chain(slow, then), 1)
    worker = workers(flaky_app, concurrency=1)
    assert eventually(lambda: worker.held() == 1)
    original = flaky.inner.settle

    def settle_then_drop(outcomes: Sequence[Outcome]) -> list[SettleResult]:
        flaky.inner.settle = original  # type: ignore[method-assign]
        flaky.down(only=["settle"])  # applied, then the connection drops before the reply
        return original(outcomes)

    flaky.inner.settle = settle_then_drop  # type: ignore[method-assign]
    gate.set()
    assert eventually(lambda: flaky.count("settle", ok=False) >= 2)
    flaky.up()
    assert handle.wait(timeout=10) == 2
    assert set(flaky.accepted.values()) == {1}
    record = flaky_app.backend.get_chain(handle.id)
    assert record is not None
    assert [s.state.value for s in record.steps] == ["succeeded", "succeeded"]


def test_backoff_is_capped(flaky_app: App, flaky: FlakyBackend, workers: Any) -> None:
    """During a long outage reserve is retried about every ``reconnect_cap`` seconds, not ever more rarely."""

    @flaky_app.task
    def noop() -> None:
        pass

    workers(flaky_app, concurrency=2, reconnect_base=0.01, reconnect_cap=0.04, rng=random.Random(7))
    time.sleep(0.1)
    since = time.monotonic()
    flaky.down()
    time.sleep(1.2)
    flaky.up()
    failed = [t for op, t, ok in flaky.calls if op == "reserve" and not ok and t >= since]
    gaps = [b - a for a, b in itertools.pairwise(failed)]
    # without the cap, 1.2 s of doubling from 10 ms allows about 8 tries; with it, about 40
    assert len(failed) >= 15, failed
    assert statistics.median(gaps) < 0.1


@given(
    base=st.floats(min_value=0.001, max_value=1.0),
    factor=st.floats(min_value=1.0, max_value=100.0),
    failures=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_delay_bounds(base: float, factor: float, failures: int, seed: int) -> None:
    """The n-th delay lies between half of and all of ``min(cap, base * 2**(n-1))``, never above the cap."""
    cap = base * factor
    backoff = Backoff(base=base, cap=cap, rng=random.Random(seed))
    delays = [backoff.next() for _ in range(failures)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(cap, base * 2.0 ** min(n - 1, 64))
        assert ceiling / 2 <= delay <= ceiling <= cap
    backoff.reset()
    assert backoff.next() <= base


def test_backoff_rejects_a_cap_below_its_base() -> None:
    """A cap smaller than the base, or a base that is not positive, is refused."""
    with pytest.raises(ValueError, match="cap"):
        Backoff(base=1.0, cap=0.5)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0.0, cap=1.0)


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    flaky_app: App, flaky: FlakyBackend, workers: Any
) -> None:
    """One backend_unavailable and one backend_recovered (with its duration) per outage, not one per retry."""

    @flaky_app.task
    def noop() -> None:
        pass

    with structlog.testing.capture_logs() as logs:
        workers(flaky_app, concurrency=2, lease=0.3, heartbeat_ttl=0.3)  # the monitor calls often too
        time.sleep(0.1)
        flaky.down()
        time.sleep(0.6)
        flaky.up()
        assert eventually(lambda: any(e["event"] == "backend_recovered" for e in logs))
        time.sleep(0.2)
    assert flaky.count("reserve", ok=False) >= 5
    events = [e for e in logs if e["event"].startswith("backend_")]
    assert [e["event"] for e in events] == ["backend_unavailable", "backend_recovered"]
    down, back = events
    assert down["log_level"] == "warning"
    assert down["error_type"] == "BackendUnavailableError"
    assert 0.4 <= back["outage_seconds"] <= 5.0
    assert back["failed_calls"] >= 5
    assert not [e for e in logs if e["log_level"] in ("warning", "error") and e is not down]


def test_a_backend_error_is_logged_once_per_operation_and_retried(
    flaky_app: App, flaky: FlakyBackend, workers: Any
) -> None:
    """A BackendError (not a connection failure) from settle is logged once with a traceback, and retried."""

    @flaky_app.task
    def double(n: int) -> int:
        return 2 * n

    flaky.fail_next(6, only=["settle"], error=lambda: BackendError("Redis error: READONLY (injected)"))
    with structlog.testing.capture_logs() as logs:
        handles = flaky_app.submit_many(double.s(n) for n in range(5))
        workers(flaky_app, concurrency=2)
        assert [h.wait(timeout=10) for h in handles] == [0, 2, 4, 6, 8]
    events = [(e["event"], e.get("operation")) for e in logs if e["event"].startswith("backend_")]
    assert events == [("backend_error", "settle"), ("backend_error_cleared", "settle")]
    assert set(flaky.accepted.values()) == {1}


def test_a_bug_in_the_backend_kills_no_thread(flaky_app: App, flaky: FlakyBackend, workers: Any) -> None:
    """Any exception from reserve, extend or heartbeat (a RuntimeError, say) is survived as well."""

    @flaky_app.task
    def ok(n: int) -> int:
        return n

    flaky.fail_next(20, only=["reserve", "extend", "heartbeat"], error=lambda: RuntimeError("bug"))
    workers(flaky_app, concurrency=2, slot_names=["bug-a", "bug-b"], lease=0.3, heartbeat_ttl=0.3)
    handle = ok.submit(3)
    assert handle.wait(timeout=10) == 3
    assert alive("jobchain-bug-") == ["jobchain-bug-a", "jobchain-bug-b"]


def test_worker_starts_while_the_backend_is_down(flaky_app: App, flaky: FlakyBackend, workers: Any) -> None:
    """start() does not raise when the backend is down; the worker registers and runs once it returns."""

    @flaky_app.task
    def ok(n: int) -> int:
        return n

    handle = ok.submit(5)
    flaky.down()
    worker = workers(flaky_app, concurrency=1, heartbeat_ttl=0.3)
    time.sleep(0.2)
    assert worker.outage.active
    flaky.up()
    assert handle.wait(timeout=10) == 5
    assert eventually(lambda: [w.name for w in flaky_app.workers()] == [worker.name])


@pytest.mark.parametrize("hang", [0.0, 3.0], ids=["refused", "hanging"])
def test_stop_returns_within_its_timeout_while_the_backend_is_down(
    flaky_app: App, flaky: FlakyBackend, hang: float
) -> None:
    """stop(timeout) returns False in time, logs the ids it left, and those jobs run again after a lease."""
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @flaky_app.task
    def work(n: int) -> int:
        with lock:
            runs[n] += 1
        return n

    flaky.down(only=["settle", "remove_worker"])
    handles = flaky_app.submit_many(work.s(n) for n in range(6))
    worker = flaky_app.worker(concurrency=2, prefetch=2, lease=1.0, **FAST).start()
    assert eventually(lambda: sum(runs.values()) >= 2)
    flaky.down(hang=hang)  # now every call fails, at once or after hanging for seconds
    with structlog.testing.capture_logs() as logs:
        t0 = time.monotonic()
        clean = worker.stop(timeout=0.5)
        took = time.monotonic() - t0
    assert clean is False
    assert took < 2.0, took  # the timeout, and at most half a second to try to unregister
    left = next(e for e in logs if e["event"] == "jobs_left_for_lease_expiry")
    assert left["count"] == len(left["job_ids"]) >= 2
    assert set(left["job_ids"]) <= {h.id for h in handles}
    # nothing is lost: once the backend is back and the leases ran out, another worker runs them
    flaky.up()
    with flaky_app.worker(concurrency=2, **FAST):
        assert [h.wait(timeout=15) for h in handles] == list(range(6))
    assert set(runs) == set(range(6))


def test_drain_waits_through_an_outage(flaky_app: App, flaky: FlakyBackend, workers: Any) -> None:
    """drain() treats a backend it cannot ask as busy: it times out instead of raising."""

    @flaky_app.task
    def ok() -> None:
        pass

    worker = workers(flaky_app, concurrency=1)
    flaky.down()
    assert worker.drain(timeout=0.2) is False
    flaky.up()
    assert worker.drain(timeout=5) is True


def test_outage_tracker_counts_every_failing_call_into_one_outage() -> None:
    """Failures of several operations make one outage; the first success ends it, timed on the clock given."""
    now = [100.0]
    with structlog.testing.capture_logs() as logs:
        outage = Outage(structlog.get_logger("test"), clock=lambda: now[0])
        outage.succeeded("reserve")
        outage.failed("reserve", socket.gaierror("name or service not known"))
        now[0] = 101.0
        outage.failed("settle", BackendUnavailableError("x://", "refused"))
        outage.failed("heartbeat", TimeoutError("timed out"))
        assert outage.active
        now[0] = 103.5
        outage.succeeded("extend")
        assert not outage.active
    assert [(e["event"], e["operation"]) for e in logs] == [
        ("backend_unavailable", "reserve"),
        ("backend_recovered", "extend"),
    ]
    back = logs[1]
    assert (back["outage_seconds"], back["failed_calls"], back["first_failed"]) == (3.5, 3, "reserve")


def test_worker_reserves_nothing_before_its_name_is_registered(
    flaky_app: App, flaky: FlakyBackend, workers: Any
) -> None:
    """While its registration fails the worker reserves nothing (a reserve may resume a namesake's jobs)."""

    @flaky_app.task
    def ok(n: int) -> int:
        return n

    handle = ok.submit(7)
    flaky.down(only=["heartbeat"])
    workers(flaky_app, concurrency=1, heartbeat_ttl=0.3)
    assert eventually(lambda: flaky.count("heartbeat", ok=False) >= 3)
    assert flaky.count("reserve") == 0
    assert job_state(flaky_app, handle.id) is JobState.QUEUED
    flaky.up()
    assert handle.wait(timeout=10) == 7
    with flaky._lock:
        first_beat = min(t for op, t, good in flaky.calls if op == "heartbeat" and good)
        first_reserve = min(t for op, t, _ in flaky.calls if op == "reserve")
    assert first_beat <= first_reserve
