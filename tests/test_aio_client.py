"""The asyncio client: every ``*_async`` entry point on every backend, concurrency, the buffer, the loop.

Backends: memory (native), SQLite and ``http://`` (the App's thread pool),
fakeredis and a real Redis in both layouts, and the spread layout (native,
``redis.asyncio``). Coroutines are driven with ``asyncio.run`` (pytest-asyncio
is not a dependency).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from jobchain import App, Fail, chain
from jobchain.backend import Backend
from jobchain.errors import (
    BackendUnavailableError,
    ChainHaltedError,
    JobFailedError,
    NotReadyError,
    WaitTimeoutError,
)
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRecord, Job, JobState
from jobchain.plugins import Plugins

sys.path.append(str(Path(__file__).resolve().parent / "http"))  # gateway_helpers (tests/http has no __init__)

BACKENDS = [
    "memory",
    "sqlite",
    "http",
    "fakeredis-lists",
    "fakeredis-streams",
    "fakeredis-spread",
    "redis-lists",
    "redis-streams",
]
#: the backends whose hot calls are coroutines (the others go through the App's thread pool)
NATIVE = set(BACKENDS) - {"sqlite"}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Backend, Callable[[], None]]:
    """A fresh backend of ``kind`` and what tears it down."""
    if kind == "memory":
        return MemoryBackend(), lambda: None
    if kind == "sqlite":
        from jobchain_sqlite import SqliteBackend

        return SqliteBackend.from_url(f"sqlite:///{tmp_path / 'jobs.db'}"), lambda: None
    if kind == "http":
        from gateway_helpers import TOKEN, ThreadedGateway
        from jobchain_http import HttpBackend

        gateway = ThreadedGateway(MemoryBackend(), token=TOKEN)
        return HttpBackend(gateway.url, token=TOKEN, delivery="poll"), gateway.stop
    prefix = f"aio-{uuid.uuid4().hex[:8]}"
    if kind.startswith("fakeredis"):
        import fakeredis
        from jobchain_redis import ListsBackend, StreamsBackend

        client = fakeredis.FakeRedis(decode_responses=True)
        cls = StreamsBackend if kind.endswith("streams") else ListsBackend
        return cls(client, prefix=prefix, spread=kind.endswith("spread"), eviction="ignore"), lambda: None
    from jobchain_redis import ListsBackend, StreamsBackend

    url = request.getfixturevalue("redis_server_url").replace("redis://", f"{kind}://")
    cls = StreamsBackend if kind.endswith("streams") else ListsBackend
    backend = cls.from_url(f"{url}?prefix={prefix}")

    def drop() -> None:
        backend.delete_everything()

    return backend, drop


def _declare(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    def double(x: int) -> int:
        return x * 2

    @app.task
    def broken(x: int) -> int:
        raise Fail(f"no {x}")


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    backend, teardown = _backend(kind, request, tmp_path)
    made = App(backend, plugins=Plugins(entry_points=False))
    _declare(made)
    try:
        yield made
    finally:
        made.close()
        teardown()


@pytest.fixture
def worker(app: App) -> Iterator[None]:
    running = app.worker(concurrency=4)
    running.start()
    try:
        yield
    finally:
        running.stop()


def test_native_or_pool_as_documented(app: App, kind: str) -> None:
    """Memory, http:// and Redis on one server serve the coroutines themselves; SQLite uses the pool."""
    assert (app.aio.native() is not None) == (kind in NATIVE)


@pytest.mark.usefixtures("worker")
def test_every_entry_point(app: App) -> None:
    """Jobs, chains, many submits, browsing, stats, cancel and the failed queue, all awaited."""
    add, double, broken = app.tasks["add"], app.tasks["double"], app.tasks["broken"]

    async def main() -> None:
        job = await add.submit_async(2, 3)
        assert await job.wait_async(10) == 5
        assert await job.status_async() == "succeeded"
        assert await job.result_async() == 5
        record = await job.record_async()
        assert record is not None
        assert record.state is JobState.SUCCEEDED
        assert (await app.jobs.get_async(job.id)) == record

        chained = await app.submit_async(add.s(1, 2) >> double >> double)
        assert await chained.wait_async(10) == 12
        assert await chained.status_async() == "succeeded"
        assert await chained.result_async() == 12
        shown = await chained.record_async()
        assert shown is not None
        assert [s.members[0].result for s in shown.steps] == [3, 6, 12]

        handles = await app.submit_many_async([add.s(i, i) for i in range(5)] + [chain(add.s(1, 1), double)])
        assert [await h.wait_async(10) for h in handles] == [0, 2, 4, 6, 8, 4]

        failing = await broken.submit_async(7)
        with pytest.raises(JobFailedError):
            await failing.wait_async(10)
        halted = await app.submit_async(add.s(1, 1) >> broken >> double)
        with pytest.raises(ChainHaltedError):
            await halted.wait_async(10)
        page = await app.failed.list_async(task="broken")
        assert {e.job.id for e in page} >= {failing.id}
        entry = await app.failed.show_async(failing.id)
        assert entry is not None
        assert entry.job.task == "broken"
        assert await app.failed.redrive_async([failing.id]) == [failing.id]
        with pytest.raises(JobFailedError):
            await failing.wait_async(10)  # fails again: back in the failed queue
        assert await app.failed.purge_async() >= 1
        assert (await app.failed.list_async()) == []

        later = await add.submit_async(1, 1, countdown=3600)
        assert await later.status_async() == "delayed"
        report = await later.cancel_async()
        assert later.id in report.cancelled
        assert await later.status_async() == "cancelled"
        waiting = await app.submit_later_async(chain(add.s(1, 1), double), (), countdown=3600)
        assert (await waiting.cancel_async()).cancelled
        assert await waiting.status_async() == "cancelled"

        listed = await app.jobs.list_async("default", "succeeded", limit=1000)
        assert job.id in {r.job.id for r in listed.records}
        counts = await app.jobs.counts_async("default")
        assert counts[JobState.CANCELLED] >= 1
        stats = {s.queue: s for s in await app.stats_async()}
        assert stats["default"].ready == 0
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open

    run(main())


def test_waits_time_out_as_the_sync_waits_do(app: App) -> None:
    """No worker: wait_async raises WaitTimeoutError, result_async NotReadyError, for jobs and chains."""
    add, double = app.tasks["add"], app.tasks["double"]
    with pytest.raises(WaitTimeoutError, match="still queued"):
        add.submit(1, 1).wait(0.05)  # the sync twin raises the same

    async def main() -> None:
        job = await add.submit_async(1, 2)
        with pytest.raises(WaitTimeoutError, match="still queued"):
            await job.wait_async(0.05)
        with pytest.raises(NotReadyError):
            await job.result_async()
        chained = await app.submit_async(add.s(1, 2) >> double)
        with pytest.raises(WaitTimeoutError, match="still pending"):
            await chained.wait_async(0.05)
        with pytest.raises(NotReadyError):
            await chained.result_async()
        assert await app.job("nope").status_async() == "unknown"
        assert await app.chain("nope").status_async() == "unknown"
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open

    run(main())


def test_many_coroutines_submit_at_once(app: App) -> None:
    """Hundreds of concurrent submits (jobs and chains): every id unique, every one stored."""
    add, double = app.tasks["add"], app.tasks["double"]

    async def main() -> list[Any]:
        jobs = [add.submit_async(i, 1) for i in range(300)]
        chains = [app.submit_async(add.s(i, 1) >> double) for i in range(100)]
        handles = await asyncio.gather(*jobs, *chains)
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open
        return list(handles)

    handles = run(main())
    assert len({h.id for h in handles}) == 400
    assert all(app.backend.get_job(h.id) is not None for h in handles[:300])
    assert all(app.backend.get_chain(h.id) is not None for h in handles[300:])


def test_waiting_takes_no_thread_per_waiter(app: App, kind: str) -> None:
    """Two hundred coroutines waiting at once use at most the pool's few threads, none of their own."""
    add = app.tasks["add"]

    async def main() -> tuple[int, int]:
        handles = [await add.submit_async(i, i) for i in range(200)]
        before = sum(1 for t in threading.enumerate() if not t.name.startswith("AnyIO"))
        waits = [asyncio.ensure_future(h.wait_async(0.3)) for h in handles]
        await asyncio.sleep(0.1)
        ours = [t for t in threading.enumerate() if not t.name.startswith("AnyIO")]  # not the gateway's
        during = len(ours)
        pool = sum(1 for t in ours if t.name.startswith("jobchain-aio"))
        for w in waits:
            with pytest.raises(WaitTimeoutError):
                await w
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open
        return during - before, pool

    grown, pool = run(main())
    assert pool <= app.aio.threads
    assert grown < 20  # a thread per waiter would be 200


# --- the submit buffer under asyncio ----------------------------------------------------


class Flaky(MemoryBackend):
    """A memory backend that can be down (every submit raises BackendUnavailableError, nothing stored).

    ``native``: serve the coroutines itself (else the App's thread pool runs the sync calls).
    """

    def __init__(self, *, native: bool) -> None:
        super().__init__()
        self.down = False
        self.native = native

    def serves_async(self) -> bool:
        return self.native

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailableError("flaky://", "connection refused (injected)")

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self._check()
        super().enqueue(jobs, chains)

    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self._check()
        super().enqueue_new(jobs, chains)


@pytest.mark.parametrize("native", [True, False], ids=["native", "pool"])
def test_an_awaited_submit_during_an_outage_is_buffered_then_stored_in_order(native: bool) -> None:
    """Down: handles say buffered; back: wait_stored_async returns and the jobs are stored in order."""
    backend = Flaky(native=native)
    app = App(backend, plugins=Plugins(entry_points=False))
    _declare(app)
    add = app.tasks["add"]

    async def main() -> None:
        backend.down = True
        first = await add.submit_async(1, 1)
        chained = await app.submit_async(add.s(1, 1) >> app.tasks["double"])
        assert first.buffered
        assert chained.buffered
        assert await first.status_async() == "buffered"
        assert await chained.status_async() == "buffered"
        with pytest.raises(WaitTimeoutError):
            await first.wait_stored_async(0.05)
        backend.down = False
        later = await add.submit_async(2, 2)  # queues behind what is buffered
        await asyncio.gather(first.wait_stored_async(10), chained.wait_stored_async(10))
        await later.wait_stored_async(10)
        assert await first.status_async() == "queued"
        assert await chained.status_async() == "pending"
        order = [d.job.id for d in backend.reserve(["default"], limit=10, lease=30, worker="w")]
        assert order.index(first.id) < order.index(later.id)
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open

    run(main())


def test_a_real_redis_outage_buffers_awaited_submits() -> None:
    """fakeredis disconnected: the redis.asyncio path raises unavailable, the buffer holds, then stores."""
    import fakeredis
    from jobchain_redis import ListsBackend

    server = fakeredis.FakeServer()
    backend = ListsBackend(fakeredis.FakeRedis(server=server, decode_responses=True), eviction="ignore")
    app = App(backend, plugins=Plugins(entry_points=False))
    _declare(app)

    async def main() -> None:
        assert app.aio.native() is backend
        server.connected = False
        with pytest.raises(BackendUnavailableError):
            await backend.enqueue_new_async([])
        handle = await app.tasks["add"].submit_async(1, 2)
        assert handle.buffered
        server.connected = True
        await handle.wait_stored_async(10)
        assert await handle.status_async() == "queued"
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open

    run(main())


# --- the loop is never blocked ------------------------------------------------------------


class Slow(MemoryBackend):
    """A backend without a native client whose every submit takes ``delay`` seconds (a slow network)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def serves_async(self) -> bool:
        return False

    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        time.sleep(self.delay)
        super().enqueue_new(jobs, chains)


async def _max_gap(work: Coroutine[Any, Any, Any]) -> float:
    """The longest the loop went without running a ticker that asks for a turn every millisecond."""
    gaps = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    try:
        await work
    finally:
        done.set()
        await tick
    return max(gaps)


def test_a_slow_backend_call_runs_off_the_loop() -> None:
    """Submits that each block a second in the backend (in the App's threads) never stop the loop so long."""
    app = App(Slow(1.0), plugins=Plugins(entry_points=False))
    _declare(app)
    add = app.tasks["add"]

    async def main() -> float:
        gap = await _max_gap(asyncio.gather(*(add.submit_async(i, i) for i in range(8))))
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open
        return gap

    assert run(main()) < 1.0  # were one call made on the loop, the ticker would wait >= 1 s


@pytest.mark.parametrize("kind", ["fakeredis-lists", "redis-lists", "redis-streams", "memory"])
def test_a_thousand_submits_do_no_blocking_io_on_the_loop(app: App, kind: str) -> None:
    """No synchronous Redis command is sent from the loop's thread while 1,000 submits and waits run."""
    import redis.connection

    add = app.tasks["add"]
    loop_threads: set[int] = set()
    sent_from: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def spy(self: Any, command: Any, check_health: bool = True) -> None:
        sent_from.append(threading.get_ident())
        original(self, command, check_health)

    async def main() -> float:
        loop_threads.add(threading.get_ident())
        handles: list[Any] = []

        requests = asyncio.Semaphore(50)  # as a web server would: many requests in flight, not all at once

        async def one(i: int) -> Any:
            async with requests:
                handle = await add.submit_async(i, i)
                await handle.status_async()
                return handle

        async def submit_all() -> None:
            handles.extend(await asyncio.gather(*(one(i) for i in range(1000))))

        gap = await _max_gap(submit_all())
        assert len({h.id for h in handles}) == 1000
        await app.aio.close_loop(app.backend)  # this loop's connections; the App stays open
        return gap

    redis.connection.AbstractConnection.send_packed_command = spy  # type: ignore[method-assign]
    try:
        gap = run(main())
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    assert not loop_threads & set(sent_from)
    if kind.startswith("redis"):
        # real I/O: the loop turns while replies are awaited. (In process, memory and fakeredis answer
        # without suspending, so 1,000 submits run in one go: no probe there.)
        assert gap < 1.0  # a generous bound: the machine is shared


# --- the Redis path is the sync path ----------------------------------------------------


def _dump(client: Any, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (renamed to ``P``) with its value; stream entries without their ids."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=f"*{prefix}*"):
        kind = client.type(key)
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = [fields for _, fields in client.xrange(key)]
            value.append(sorted(g["name"] for g in client.xinfo_groups(key)))
        else:
            value = client.get(key)
        out[key.replace(prefix, "P")] = (kind, value)
    return out


@pytest.mark.parametrize(
    "kind",
    ["fakeredis-lists", "fakeredis-streams", "fakeredis-spread", "redis-lists", "redis-streams"],
)
def test_the_async_path_writes_what_the_sync_path_writes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The same submits through enqueue/enqueue_new and their coroutines leave the same keys and records."""
    from jobchain.clock import ManualClock

    clock = ManualClock(1_800_000_000.0)
    made: list[Backend] = []
    for _ in range(2):
        backend, _teardown = _backend(kind, request, tmp_path)
        request.addfinalizer(_teardown)
        backend.clock = clock
        made.append(backend)
    sync, native = made
    builder = App(MemoryBackend(), plugins=Plugins(entry_points=False))
    _declare(builder)
    add, double = builder.tasks["add"], builder.tasks["double"]

    def submits() -> list[tuple[list[Job], list[ChainRecord], bool]]:
        now = clock.now()
        plain = [builder.builder.job(add.s(i, i).set(job_id=f"j-{i}"), now=now) for i in range(3)]
        later = builder.builder.job(add.s(9, 9).set(job_id="later"), now=now, delay=60.0)
        record, first = builder.builder.chain(add.s(1, 1) >> double, now=now, chain_id="c-1")
        other = builder.builder.job(double.s(5).set(job_id="q-1", queue="other"), now=now)
        return [
            (plain, [], True),
            ([later, other], [], True),
            (list(first), [record], True),
            ([*plain, builder.builder.job(add.s(7, 7).set(job_id="j-new"), now=now)], [], False),
        ]

    for jobs, chains, fresh in submits():
        (sync.enqueue_new if fresh else sync.enqueue)(jobs, chains)

    async def main() -> None:
        for jobs, chains, fresh in submits():
            await (native.enqueue_new_async if fresh else native.enqueue_async)(jobs, chains)  # type: ignore[attr-defined]
        for job_id in ("j-0", "later", "c-1.0.0", "q-1", "j-new", "nope"):
            assert await native.get_job_async(job_id) == sync.get_job(job_id)  # type: ignore[attr-defined]
        assert await native.get_chain_async("c-1") == sync.get_chain("c-1")  # type: ignore[attr-defined]
        assert await native.get_chain_async("nope") is None  # type: ignore[attr-defined]
        await native.close_async()  # type: ignore[attr-defined]

    run(main())
    a, b = _dump(sync.client, sync.keys.prefix), _dump(native.client, native.keys.prefix)  # type: ignore[attr-defined]
    assert a == b
    assert len(a) > 5


def test_eager_apps_run_awaited_submits_to_completion() -> None:
    """Test mode: an awaited submit returns a finished handle, as a plain submit does."""
    app = App(MemoryBackend(), eager=True, plugins=Plugins(entry_points=False))
    _declare(app)

    async def main() -> None:
        handle = await app.tasks["add"].submit_async(2, 2)
        assert await handle.result_async() == 4
        [many] = await app.submit_many_async([app.tasks["add"].s(3, 3)])
        assert await many.result_async() == 6
        await app.close_async()

    run(main())


def test_bad_input_is_refused_before_any_await() -> None:
    """Arguments a task cannot take are an InvalidJobError from the awaited submit, nothing stored."""
    from jobchain.errors import InvalidJobError

    app = App(MemoryBackend(), plugins=Plugins(entry_points=False))
    _declare(app)

    async def main() -> None:
        with pytest.raises(InvalidJobError, match="cannot take these arguments"):
            await app.tasks["add"].submit_async(1, 2, 3)
        await app.close_async()

    run(main())


def test_a_loop_shut_down_by_asyncio_run_closes_its_redis_connections(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """No close_async: asyncio.run's shutdown closes the loop's redis.asyncio client; nothing left to GC."""
    import gc

    backend, teardown = _backend("redis-lists", request, tmp_path)
    request.addfinalizer(teardown)
    app = App(backend, plugins=Plugins(entry_points=False))
    _declare(app)
    left: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = left.append
    try:
        for _ in range(2):
            handle = run(app.tasks["add"].submit_async(1, 2))
            assert run(handle.status_async()) == "queued"
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert [str(u.exc_value) for u in left] == []


@pytest.mark.parametrize("kind", ["fakeredis-lists", "fakeredis-streams", "redis-lists"])
def test_a_lost_exec_reply_is_checked_not_resent(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXEC applied, its reply lost: the job is looked for (WATCH, EXISTS), stored once; two losses raise."""
    import redis
    from jobchain_redis import _enqueue

    from jobchain.testing.helpers import make_job, reserve

    backend, teardown = _backend(kind, request, tmp_path)
    request.addfinalizer(teardown)
    real = _enqueue.multi_exec
    losses = [1]

    async def lossy(conn: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
        result = await real(conn, commands)  # applied on the server ...
        if losses[0] > 0:
            losses[0] -= 1
            raise redis.ConnectionError("the reply was lost (injected)")  # ... but the client never hears
        return result

    monkeypatch.setattr(_enqueue, "multi_exec", lossy)
    job = make_job(backend.clock)

    async def main() -> None:
        await backend.enqueue_new_async([job])  # type: ignore[attr-defined]
        losses[0] = 2
        with pytest.raises(BackendUnavailableError, match="reply was lost"):
            await backend.enqueue_new_async([make_job(backend.clock)])  # type: ignore[attr-defined]
        await backend.close_async()  # type: ignore[attr-defined]

    run(main())
    assert backend._layout.ready_ids("default").count(job.id) == 1  # type: ignore[attr-defined]  # once
    taken = reserve(backend, ["default"], limit=10, lease=30.0, worker="w")
    assert [d.job.id for d in taken if d.job.id == job.id] == [job.id]
