"""Bad data in Redis goes to the failed queue with its reason and stored text; workers keep running.

Each case writes something a worker cannot run straight into Redis, next to
good jobs, then runs a real :class:`~jobchain.worker.Worker` over the backend:
the good jobs succeed, the bad one is filed in the failed queue once (no
redelivery loop), and the worker is still alive afterwards. Every case runs on
both Redis backends, on fakeredis and on the session's real redis-server.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from jobchain import App, chain
from jobchain.clock import ManualClock
from jobchain.errors import BackendError
from jobchain.model import UNREADABLE_TASK, FailedEntry, Job, JobState
from jobchain.testing import make_job
from jobchain.worker import Worker

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402

KINDS = {"lists": ListsBackend, "streams": StreamsBackend}

#: a client that writes bytes as they are (no decoding), per backend: what plants invalid UTF-8
_RAW: dict[int, Any] = {}
#: bytes that are not UTF-8
BAD = b"\xff\xfe\xc3("


@pytest.fixture(params=["lists-fake", "streams-fake", "lists-server", "streams-server"])
def backend(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    kind, where = request.param.split("-")
    prefix = f"bad{uuid.uuid4().hex[:10]}"
    if where == "fake":
        server = fakeredis.FakeServer()
        client = fakeredis.FakeRedis(server=server, decode_responses=True)  # strict: the backend relaxes it
        made: RedisBackend = KINDS[kind](client, prefix=prefix)
        raw = fakeredis.FakeRedis(server=server)
    else:
        server_url = request.getfixturevalue("redis_server_url")
        url = server_url.replace("redis://", f"redis-{kind}://")
        made = KINDS[kind].from_url(f"{url}?prefix={prefix}")  # type: ignore[attr-defined]
        raw = redis.Redis.from_url(server_url)
    _RAW[id(made)] = raw
    yield made
    del _RAW[id(made)]
    raw.close()
    made.delete_everything()
    made.close()


def _raw(backend: RedisBackend) -> Any:
    return _RAW[id(backend)]


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


# --- bytes that are not UTF-8 ------------------------------------------------------------------------


def _kept_bytes(raw: str | None) -> bytes:
    """The bytes a failed entry kept of undecodable data (``base64:...``)."""
    assert raw is not None
    assert raw.startswith("base64:"), raw
    return base64.b64decode(raw.removeprefix("base64:").split("\n")[0])


def _reads_survive(backend: RedisBackend, *job_ids: str) -> None:
    """Every read command answers (no UnicodeDecodeError, no traceback) while bad bytes are stored."""
    backend.stats()
    backend.failed()
    backend.workers()
    for job_id in job_ids:
        backend.get_job(job_id)
        backend.get_failed(job_id)


def _bad_ready_entry(backend: RedisBackend) -> bytes:
    """A ready entry whose job id is not UTF-8 (a list element; a stream entry's id field)."""
    probe = _fresh_job(backend)
    band = backend._band(probe)
    raw = _raw(backend)
    junk = b"job-" + BAD
    if isinstance(backend, ListsBackend):
        raw.rpush(backend.keys.ready("default", band), junk)
    else:
        stream = backend.keys.stream("default", band)
        if not raw.exists(stream):
            raw.xgroup_create(stream, "jobchain", id="0", mkstream=True)
        raw.xadd(stream, {"id": junk})
        raw.zadd(backend.keys.fresh("default"), {str(band): band})
    raw.zadd(backend.keys.bands("default"), {str(band): band})
    raw.sadd(backend.keys.queues, "default")
    return junk


def _bad_payload(backend: RedisBackend) -> bytes:
    """A ready job whose payload is not UTF-8."""
    job = _fresh_job(backend)
    backend.enqueue([job])
    payload = b'{"v":1,"id":"' + job.id.encode() + b'","task":"noop' + BAD + b'"}'
    _raw(backend).hset(backend.keys.job(job.id), "job", payload)
    _reads_survive(backend, job.id)
    return payload


def _bad_delayed_payload(backend: RedisBackend) -> bytes:
    """A delayed job whose payload is not UTF-8 by the time it is due."""
    job = _fresh_job(backend)
    backend.enqueue([attrs.evolve(job, not_before=backend.now() + 0.3)])
    payload = b"{" + BAD * 3
    _raw(backend).hset(backend.keys.job(job.id), "job", payload)
    _reads_survive(backend, job.id)
    return payload


@pytest.mark.parametrize(
    "inject",
    [_bad_ready_entry, _bad_payload, _bad_delayed_payload],
    ids=["ready-entry", "payload", "delayed"],
)
def test_undecodable_bytes_are_filed_as_unreadable(
    backend: RedisBackend, inject: Callable[..., bytes]
) -> None:
    """Invalid UTF-8 goes to the failed queue, bytes kept base64-encoded; good jobs behind it still run."""
    seen: list[str] = []
    app = _app(backend, seen)
    good = [_fresh_job(backend) for _ in range(5)]
    planted = inject(backend)
    backend.enqueue(good)
    worker = _run_worker(app, expect_failed=1)
    entry = _only_failed(backend)
    assert entry.job.task == UNREADABLE_TASK
    assert entry.error.type == "UnreadableJob"
    assert "not valid UTF-8" in entry.error.message
    assert planted in _kept_bytes(entry.raw)
    assert all(backend.get_job(j.id).state is JobState.SUCCEEDED for j in good)  # type: ignore[union-attr]
    _reads_survive(backend, entry.job.id)
    assert backend.get_failed(entry.job.id) == entry
    assert backend.redrive([entry.job.id]) == []
    _assert_survives(worker, app, seen)
    assert len(backend.failed()) == 1, "the bad job was delivered again"


@pytest.mark.parametrize("field", ["state", "token", "worker"])
def test_undecodable_job_fields_do_not_stop_the_queue(backend: RedisBackend, field: str) -> None:
    """A job hash field other than the payload holding invalid UTF-8: reads answer, the queue flows."""
    seen: list[str] = []
    app = _app(backend, seen)
    odd = _fresh_job(backend)
    backend.enqueue([odd])
    _raw(backend).hset(backend.keys.job(odd.id), field, BAD)
    shown = backend.get_job(odd.id)
    assert shown is not None
    if field == "state":
        assert shown.state is JobState.FAILED
        assert shown.error is not None
        assert shown.error.type == "UnreadableJob"
        assert "field state is not valid UTF-8" in shown.error.message
    _reads_survive(backend, odd.id)
    good = [_fresh_job(backend) for _ in range(5)]
    backend.enqueue(good)
    worker = _run_worker(app, expect_failed=0)
    assert all(backend.get_job(j.id).state is JobState.SUCCEEDED for j in good)  # type: ignore[union-attr]
    after = backend.get_job(odd.id)
    assert after is not None
    # its payload is fine: it ran, or it was filed as unreadable, but it is not stuck in flight
    assert after.state in (JobState.SUCCEEDED, JobState.FAILED), after
    if after.state is JobState.FAILED:
        assert after.error is not None
        assert after.error.type == "UnreadableJob"
    _reads_survive(backend, odd.id)
    _assert_survives(worker, app, seen)


def test_undecodable_chain_record_does_not_block_its_jobs(backend: RedisBackend) -> None:
    """A chain record that is not UTF-8: its job settles (the chain stays put), get_chain says why."""
    seen: list[str] = []
    app = _app(backend, seen)
    flow = chain(app.tasks["noop"], app.tasks["noop"], name="pair")
    handle = flow.submit()
    _raw(backend).set(backend.keys.chain(handle.id), b'{"v":1,' + BAD)
    with pytest.raises(BackendError, match=f"chain {handle.id} cannot be read.*not valid UTF-8"):
        backend.get_chain(handle.id)
    good = [_fresh_job(backend) for _ in range(3)]
    backend.enqueue(good)
    worker = _run_worker(app, expect_failed=0)
    assert all(backend.get_job(j.id).state is JobState.SUCCEEDED for j in good)  # type: ignore[union-attr]
    assert seen.count("noop") >= 4, "the chain's first step did not run, or blocked the others"
    stats = {s.queue: s for s in backend.stats()}
    assert stats["default"].in_flight == 0
    _assert_survives(worker, app, seen)


def test_undecodable_failed_entry_is_listed(backend: RedisBackend) -> None:
    """A failed job whose stored error is not UTF-8 is listed as unreadable, not a crash of `failed`."""
    seen: list[str] = []
    app = _app(backend, seen)
    stray = _fresh_job(backend, task="no.such.task")
    backend.enqueue([stray])
    worker = _run_worker(app, expect_failed=1)
    assert worker.stop(timeout=10.0)
    _raw(backend).hset(backend.keys.job(stray.id), "error", b'{"type":"' + BAD + b'"}')
    entry = _only_failed(backend)
    assert entry.job.id == stray.id
    assert entry.error.type == "UnreadableJob"
    assert BAD in _kept_bytes(entry.raw)
    assert backend.get_failed(stray.id) == entry
    _reads_survive(backend, stray.id)
    assert backend.purge_failed([stray.id]) == 1
    assert backend.failed() == []


def test_undecodable_worker_registration_is_listed(backend: RedisBackend) -> None:
    """A worker registration that is not UTF-8 is listed as unreadable; the others as they are."""
    raw = _raw(backend)
    raw.set(backend.keys.worker("odd"), b'{"name":"' + BAD + b'"}')
    raw.zadd(backend.keys.workers, {"odd": backend.now() + 60})
    listed = backend.workers()
    assert [(w.name, w.state) for w in listed] == [("odd", "unreadable")]


def test_unreadable_data_is_capped(backend: RedisBackend) -> None:
    """A failed entry keeps at most 64 KiB of what was stored, and says how much it cut."""
    seen: list[str] = []
    app = _app(backend, seen)
    job = _fresh_job(backend)
    backend.enqueue([job])
    payload = BAD * 40_000  # 160,000 bytes
    _raw(backend).hset(backend.keys.job(job.id), "job", payload)
    worker = _run_worker(app, expect_failed=1)
    entry = _only_failed(backend)
    assert entry.raw is not None
    assert entry.raw.endswith(f"[cut: first 65536 of {len(payload)} bytes kept]")
    assert _kept_bytes(entry.raw) == payload[:65536]
    assert worker.stop(timeout=10.0)
