"""Bad data in Redis goes to the failed queue with its reason and stored text; workers keep running.

Each case writes something a worker cannot run straight into Redis, next to
good jobs, then runs a real :class:`~jobchain.worker.Worker` over the backend:
the good jobs succeed, the bad one is filed in the failed queue once (no
redelivery loop), and the worker is still alive afterwards. Every case runs on
both Redis backends, on fakeredis and on the session's real redis-server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from jobchain import App
from jobchain.clock import ManualClock
from jobchain.model import UNREADABLE_TASK, FailedEntry, Job
from jobchain.testing import make_job
from jobchain.worker import Worker

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402

KINDS = {"lists": ListsBackend, "streams": StreamsBackend}


@pytest.fixture(params=["lists-fake", "streams-fake", "lists-server", "streams-server"])
def backend(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    kind, where = request.param.split("-")
    prefix = f"bad{uuid.uuid4().hex[:10]}"
    if where == "fake":
        client = fakeredis.FakeRedis(decode_responses=True)
        made: RedisBackend = KINDS[kind](client, prefix=prefix)
    else:
        url = request.getfixturevalue("redis_server_url").replace("redis://", f"redis-{kind}://")
        made = KINDS[kind].from_url(f"{url}?prefix={prefix}")  # type: ignore[attr-defined]
    yield made
    made.delete_everything()
    made.close()


def _app(backend: RedisBackend, seen: list[str]) -> App:
    app = App(backend=backend)

    @app.task(name="noop")
    def noop(*args: object) -> str:
        seen.append("noop")
        return "ok"

    return app


def _run_worker(app: App, expect_failed: int) -> Worker:
    worker = Worker(app, concurrency=2, lease=5.0, poll=0.05, queues=["default"])
    worker.start()
    assert worker.drain(timeout=20.0), "the worker did not drain the queue"
    deadline = time.monotonic() + 10.0
    while len(app.backend.failed()) < expect_failed and time.monotonic() < deadline:
        time.sleep(0.02)
    return worker


def _fresh_job(backend: RedisBackend, task: str = "noop") -> Job:
    return make_job(ManualClock(backend.now()), task)


def _only_failed(backend: RedisBackend) -> FailedEntry:
    entries = backend.failed()
    assert len(entries) == 1, f"expected one failed entry, got {[e.job.id for e in entries]}"
    return entries[0]


def _assert_survives(worker: Worker, app: App, seen: list[str]) -> None:
    """The worker still runs jobs after the bad one, and nothing was left in flight."""
    before = len(seen)
    app.backend.enqueue([_fresh_job(app.backend)])  # type: ignore[arg-type]
    assert worker.drain(timeout=20.0)
    deadline = time.monotonic() + 10.0
    while len(seen) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(seen) == before + 1, "the worker stopped running jobs after the bad one"
    assert all(t.is_alive() for t in worker._threads), "a worker thread died"
    assert worker.stop(timeout=10.0)


Inject = Callable[[RedisBackend], str]


def _garbage_entry(backend: RedisBackend) -> str:
    """A ready entry that names no stored job: random bytes in the list or stream."""
    junk = "\u2603\x00 not a job id " + uuid.uuid4().hex
    probe = _fresh_job(backend)
    client = backend.client
    if isinstance(backend, ListsBackend):
        band = backend._band(probe)
        client.rpush(backend.keys.ready("default", band), junk)
        client.zadd(backend.keys.bands("default"), {str(band): band})
    else:
        band = backend._band(probe)
        stream = backend.keys.stream("default", band)
        if not client.exists(stream):
            client.xgroup_create(stream, "jobchain", id="0", mkstream=True)
        client.xadd(stream, {"garbage": junk})
        client.zadd(backend.keys.bands("default"), {str(band): band})
        client.zadd(backend.keys.fresh("default"), {str(band): band})
    return junk


def _missing_fields(backend: RedisBackend) -> str:
    """A job whose hash lost its payload field."""
    job = _fresh_job(backend)
    backend.enqueue([job])
    backend.client.hdel(backend.keys.job(job.id), "job")
    return job.id


def _unknown_version(backend: RedisBackend) -> str:
    """A job whose payload says a wire version this jobchain does not know."""
    job = _fresh_job(backend)
    backend.enqueue([job])
    text = json.dumps({**job.to_wire(), "v": 99})
    backend.client.hset(backend.keys.job(job.id), "job", text)
    return text


def _not_json(backend: RedisBackend) -> str:
    """A job whose payload is not JSON at all."""
    job = _fresh_job(backend)
    backend.enqueue([job])
    backend.client.hset(backend.keys.job(job.id), "job", "{not json \xff")
    return "{not json \xff"


@pytest.mark.parametrize(
    ("inject", "reason"),
    [
        (_garbage_entry, "no"),
        (_missing_fields, "no payload"),
        (_unknown_version, "version 99 is not known"),
        (_not_json, ""),
    ],
    ids=["garbage-entry", "hash-missing-fields", "unknown-version", "payload-not-json"],
)
def test_unreadable_job_is_failed_with_its_reason_and_text(
    backend: RedisBackend, inject: Inject, reason: str
) -> None:
    """The bad job lands in the failed queue once, with why and what was stored; good jobs still run."""
    seen: list[str] = []
    app = _app(backend, seen)
    good = [_fresh_job(backend) for _ in range(5)]
    marker = inject(backend)
    backend.enqueue(good)
    worker = _run_worker(app, expect_failed=1)
    entry = _only_failed(backend)
    assert entry.job.task == UNREADABLE_TASK
    assert entry.error.type == "UnreadableJob"
    assert reason in entry.error.message
    assert entry.raw is not None
    if inject is _garbage_entry and isinstance(backend, StreamsBackend):
        assert json.loads(entry.raw) == {"garbage": marker}  # the entry's fields, as stored
    elif inject is _garbage_entry:
        assert entry.job.id == marker  # a list holds the id alone: the failed entry is filed under it
    elif inject is not _missing_fields:
        assert entry.raw == marker
    assert seen.count("noop") >= 5
    assert all(backend.get_job(j.id).state.value == "succeeded" for j in good)  # type: ignore[union-attr]
    assert backend.redrive([entry.job.id]) == [], "an unreadable job must not be re-driven"
    _assert_survives(worker, app, seen)
    assert len(backend.failed()) == 1, "the bad job was delivered again"


def test_job_naming_an_unknown_task_fails_without_retrying(backend: RedisBackend) -> None:
    """A job for a task the worker does not have fails at once with UnknownTaskError, naming it."""
    seen: list[str] = []
    app = _app(backend, seen)
    stray = _fresh_job(backend, task="no.such.task")
    backend.enqueue([stray])
    worker = _run_worker(app, expect_failed=1)
    entry = _only_failed(backend)
    assert entry.job.id == stray.id
    assert entry.error.type == "UnknownTaskError"
    assert "no.such.task" in entry.error.message
    assert entry.raw is None
    _assert_survives(worker, app, seen)
    assert [e.job.id for e in backend.failed()] == [stray.id]
