"""A key of the wrong type planted in a queue's structures: that queue stops cleanly, the others flow.

A string where jobchain keeps a list, a stream, a sorted set or a hash (a
ready band, the leases, the delayed set, a job's hash) makes every command on
that key fail with ``WRONGTYPE``. The transition that meets it must fail
closed (nothing of it applied, the key left as it is), the key must be named
in the log, the worker must neither die nor spin on it, and every other queue
(and, for a job's hash, every other job of the same queue) must keep flowing.
Both Redis backends, on the session's real redis-server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from jobchain import App
from jobchain.clock import ManualClock
from jobchain.model import Job, JobState
from jobchain.testing import make_job
from jobchain.worker import Worker

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

from jobchain_redis import _guard  # noqa: E402
from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402

#: seconds a blocked queue waits before it is tried again, shortened for the test
BLOCK_WAIT = 0.5
GARBAGE = b"not what jobchain keeps here"


@pytest.fixture(params=["lists", "streams"])
def backend(request: pytest.FixtureRequest, redis_server_url: str) -> Iterator[RedisBackend]:
    kind = ListsBackend if request.param == "lists" else StreamsBackend
    url = redis_server_url.replace("redis://", f"redis-{request.param}://")
    made: RedisBackend = kind.from_url(f"{url}?prefix=wt{uuid.uuid4().hex[:10]}")
    yield made
    made.delete_everything()
    made.close()


@pytest.fixture
def raw(redis_server_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_server_url)
    yield client
    client.close()


def _band_key(backend: RedisBackend, job: Job) -> str:
    band = backend._band(job)
    return (
        backend.keys.ready("q1", band)
        if isinstance(backend, ListsBackend)
        else backend.keys.stream("q1", band)
    )


#: where to plant the string, given the backend and q1's jobs; whether q1's other jobs still run
PLANTS: dict[str, tuple[Callable[[RedisBackend, list[Job]], str], bool]] = {
    "band": (lambda b, jobs: _band_key(b, jobs[0]), False),
    "leases": (lambda b, jobs: b.keys.leases("q1"), False),
    "delayed": (lambda b, jobs: b.keys.delayed("q1"), False),
    "job-hash": (lambda b, jobs: b.keys.job(jobs[0].id), True),
}


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _succeeded(backend: RedisBackend, jobs: list[Job]) -> bool:
    return all((r := backend.get_job(j.id)) is not None and r.state is JobState.SUCCEEDED for j in jobs)


@pytest.mark.parametrize("where", list(PLANTS))
def test_wrong_type_key_fails_closed_and_the_rest_flows(
    backend: RedisBackend, raw: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_guard, "BLOCK_WAIT", BLOCK_WAIT)
    seen: list[str] = []
    app = App(backend=backend)

    @app.task(name="noop")
    def noop(*args: object) -> str:
        seen.append("noop")
        return "ok"

    clock = ManualClock(backend.now())
    first = [make_job(clock, "noop", queue="q1") for _ in range(4)]
    second = [make_job(clock, "noop", queue="q2") for _ in range(6)]
    backend.enqueue(first + second)
    plant, others_run = PLANTS[where]
    key = plant(backend, first)
    raw.delete(key)
    raw.set(key, GARBAGE)

    worker = Worker(app, queues=["q1", "q2"], concurrency=2, lease=5.0, poll=0.05)
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        worker.start()
        try:
            assert _wait(lambda: _succeeded(backend, second)), "the other queue stopped flowing"
            if others_run:  # a job hash of the wrong type takes only its job out
                assert _wait(lambda: _succeeded(backend, first[1:])), "the queue's other jobs stopped"
                assert _wait(lambda: backend.get_failed(first[0].id) is not None)
            else:
                time.sleep(3 * BLOCK_WAIT)  # the queue is tried again meanwhile: it must neither spin nor run
            assert all(t.is_alive() for t in worker._threads), "a worker thread died"
            elapsed = time.monotonic() - started
            assert raw.get(key) == GARBAGE, "the planted key was changed: the transition did not fail closed"
            named = [e for e in logs if e["event"] == "redis_key_wrong_type" and e.get("key") == key]
            assert named, f"the key was not named in the log: {[e['event'] for e in logs]}"
            assert len(named) <= elapsed / BLOCK_WAIT + 3, f"{len(named)} tries in {elapsed:.1f}s: it spins"
            if where == "job-hash":
                entry = backend.get_failed(first[0].id)
                assert entry is not None
                assert entry.error.type == "UnreadableJob"
                assert key in entry.error.message
                assert backend.client.zscore(backend.keys.leases("q1"), first[0].id) is None
                record = backend.get_job(first[0].id)
                assert record is not None
                assert record.state is JobState.FAILED
                assert len(named) == 1, "the job was met more than once"
            else:
                # nothing of q1 ran or was leased while its key was wrong; once it is fixed, q1 resumes
                assert not any(backend.get_job(j.id).state is JobState.SUCCEEDED for j in first)  # type: ignore[union-attr]
                assert {s.queue for s in backend.stats()} == {"q1", "q2"}  # the key counts as empty
                raw.delete(key)
                if where != "band":  # (the band held q1's jobs: they went with it)
                    assert _wait(lambda: _succeeded(backend, first)), (
                        "q1 did not resume once its key was fixed"
                    )
        finally:
            assert worker.stop(timeout=10.0)
    failed = [e.job.id for e in backend.failed()]
    assert failed == ([first[0].id] if where == "job-hash" else [])


def test_job_hash_replaced_while_its_job_runs(backend: RedisBackend, raw: Any) -> None:
    """The running job's hash turns into a string: its outcome is refused, the others settle, it is filed."""
    gate, started = threading.Event(), threading.Event()
    app = App(backend=backend)

    @app.task(name="slow")
    def slow() -> str:
        started.set()
        gate.wait(10)
        return "slow"

    @app.task(name="noop")
    def noop() -> str:
        return "ok"

    clock = ManualClock(backend.now())
    held = make_job(clock, "slow", queue="q1")
    backend.enqueue([held])
    worker = Worker(app, queues=["q1"], concurrency=2, lease=1.0, poll=0.05)
    key = backend.keys.job(held.id)
    with structlog.testing.capture_logs() as logs:
        worker.start()
        try:
            assert started.wait(10)
            raw.delete(key)
            raw.set(key, GARBAGE)
            others = [make_job(ManualClock(backend.now()), "noop", queue="q1") for _ in range(4)]
            backend.enqueue(others)
            gate.set()
            assert _wait(lambda: _succeeded(backend, others)), "the other jobs stopped settling"
            assert _wait(lambda: backend.get_failed(held.id) is not None), "the job was not filed"
            assert raw.get(key) == GARBAGE
            assert all(t.is_alive() for t in worker._threads)
        finally:
            gate.set()
            worker.stop(timeout=10.0)
    assert any(e["event"] == "redis_key_wrong_type" and e.get("key") == key for e in logs)
    assert worker.counters.rejected == 1
    assert worker.counters.done == 4
