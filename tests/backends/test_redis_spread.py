"""The spread key layout (a Redis Cluster's): a hash tag per queue and per chain, two-part chain steps.

Run on one node (fakeredis and the session's redis-server), where every key
is reachable, so that each test can look at the keys and cut a transition
in the middle; tests/backends/test_redis_cluster.py runs the layout on a
real 3-master Cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jobchain import App
from jobchain.canvas import chain, group
from jobchain.clock import ManualClock
from jobchain.model import ChainState
from jobchain.testing import completed, failed, queue_stats, reserve, reserve_one

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis import common  # noqa: E402
from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.connection import parse_url  # noqa: E402
from jobchain_redis.keys import Keys  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402
from redis.cluster import key_slot  # noqa: E402


@pytest.fixture(params=["lists-fake", "streams-fake", "lists-server", "streams-server"])
def backend(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[RedisBackend]:
    kind, where = request.param.split("-")
    cls = ListsBackend if kind == "lists" else StreamsBackend
    if where == "fake":
        client: Any = fakeredis.FakeRedis(decode_responses=True)
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_server_url"), decode_responses=True)
    made = cls(client, prefix=f"s{uuid.uuid4().hex[:8]}", clock=clock, spread=True)
    yield made
    made.delete_everything()
    client.close()


def _tasks(app: App) -> tuple[Any, Any, Any]:
    @app.task(queue="fetch")
    def fetch(x: int) -> int:
        return x + 1

    @app.task(queue="parse")
    def parse(x: int) -> int:
        return x * 2

    @app.task(queue="store")
    def store(x: int) -> int:
        return x

    return fetch, parse, store


def _outbox(backend: RedisBackend, queue: str) -> dict[str, str]:
    return dict(backend.client.hgetall(backend.keys.outbox(queue)))


def _cut_after_first_part(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the chain's second part fail as if Redis went away after the job's transaction."""

    def gone(event: common.ChainEvent) -> None:
        raise redis.ConnectionError("connection lost (injected)")

    monkeypatch.setattr(backend._outbox, "advance", gone)


def _sweep_now(backend: RedisBackend, clock: ManualClock) -> None:
    """Let the next reserve look at the outboxes, with the entries past their grace."""
    backend._outbox.swept_at = float("-inf")
    clock.advance(common.OUTBOX_GRACE)


def test_each_queue_and_chain_has_a_tag_of_its_own() -> None:
    """Keys of one queue share a slot; two queues, a chain and the registry may sit on other shards."""
    keys = Keys("app", spread=True)
    one = {key_slot(k.encode()) for k in (keys.job("j1", "q1"), keys.bands("q1"), keys.leases("q1"))}
    one |= {key_slot(keys.ready("q1", 3).encode()), key_slot(keys.outbox("q1").encode())}
    assert len(one) == 1
    others = {key_slot(keys.leases("q2").encode()), key_slot(keys.chain("c1").encode())}
    assert one.isdisjoint(others)
    assert keys.job("j1", "q1") == "{app:q:q1}:job:j1"
    assert keys.workers == "{app}:workers"
    with pytest.raises(ValueError, match="needs its queue"):
        keys.job("j1")
    assert Keys("app").job("j1", "q1") == Keys("app").job("j1") == "{app}:job:j1"


def test_a_chain_across_three_queues_runs_through_the_outboxes(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """Each step lands in its own queue; the outboxes are empty once the settle returns."""
    app = App(backend=backend)
    handle = chain(*_tasks(app)).submit(1)
    value: Any = 1
    for queue, result in (("fetch", 2), ("parse", 4)):
        delivery = reserve_one(backend, [queue])
        assert delivery.job.args == (value,)
        [settled] = backend.settle([completed(delivery, result, clock=clock)])
        assert settled.accepted
        assert settled.chain is None
        assert _outbox(backend, queue) == {}
        value = result
    last = reserve_one(backend, ["store"])
    [settled] = backend.settle([completed(last, 4, clock=clock)])
    assert settled.chain is not None
    assert settled.chain.state is ChainState.COMPLETED
    record = backend.get_chain(handle.id)
    assert record is not None
    assert record.result == 4


def test_a_settler_cut_off_between_the_parts_leaves_the_step_to_the_sweep(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job is settled, its event waits in the outbox, and a reserver's sweep enqueues the next step."""
    app = App(backend=backend)
    handle = chain(*_tasks(app)).submit(1)
    delivery = reserve_one(backend, ["fetch"])
    with monkeypatch.context() as patch:
        _cut_after_first_part(backend, patch)
        [settled] = backend.settle([completed(delivery, 2, clock=clock)])
    assert settled.accepted
    assert len(_outbox(backend, "fetch")) == 1
    assert queue_stats(backend, "fetch").in_flight == 1  # its settlement is not over: nothing looks idle
    assert reserve(backend, ["parse"]) == []  # the next step waits for the second part
    record = backend.get_job(delivery.job.id)
    assert record is not None
    assert record.result == 2
    _sweep_now(backend, clock)
    assert reserve(backend, ["fetch"]) == []  # a reserve of the step's own queue sweeps its outbox
    assert _outbox(backend, "fetch") == {}
    [following] = reserve(backend, ["parse"])
    assert following.job.args == (2,)
    chain_record = backend.get_chain(handle.id)
    assert chain_record is not None
    assert chain_record.steps[0].members[0].result == 2


def test_the_second_part_run_twice_enqueues_the_next_step_once(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settler and a sweep both finishing the same event store one next step."""
    app = App(backend=backend)
    chain(*_tasks(app)).submit(1)
    delivery = reserve_one(backend, ["fetch"])
    real = backend._outbox.advance
    with monkeypatch.context() as patch:
        _cut_after_first_part(backend, patch)
        backend.settle([completed(delivery, 2, clock=clock)])
    [raw] = _outbox(backend, "fetch").items()
    event = common.ChainEvent.from_json(*raw)
    real(event)
    real(event)
    assert len(reserve(backend, ["parse"])) == 1
    assert reserve(backend, ["parse"]) == []


def test_an_event_swept_after_the_next_step_finished_changes_nothing(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """Replaying a step's event once the chain has moved on neither re-runs nor rewinds anything."""
    app = App(backend=backend)
    fetch, parse, store = _tasks(app)
    handle = chain(fetch, parse, store).submit(1)
    first = reserve_one(backend, ["fetch"])
    backend.settle([completed(first, 2, clock=clock)])
    second = reserve_one(backend, ["parse"])
    backend.settle([completed(second, 4, clock=clock)])
    stale = common.ChainEvent(
        queue="fetch",
        job_id=first.job.id,
        field="replayed",
        ref=first.job.chain,  # type: ignore[arg-type]
        completed=True,
        result=2,
        finished_at=clock.now(),
        at=clock.now(),
    )
    before = backend.get_chain(handle.id)
    assert backend._outbox.advance(stale) is None
    assert backend.get_chain(handle.id) == before
    assert reserve(backend, ["parse"]) == []
    assert len(reserve(backend, ["store"])) == 1


def test_a_group_across_queues_starts_the_next_step_once(backend: RedisBackend, clock: ManualClock) -> None:
    """Members in two queues (two slots) complete; the step after them is enqueued once, results in order."""
    app = App(backend=backend)
    fetch, parse, store = _tasks(app)
    handle = chain(group(fetch.s(), parse.s()), store).submit(3)
    one = reserve_one(backend, ["fetch"])
    two = reserve_one(backend, ["parse"])
    results = backend.settle([completed(two, "b", clock=clock), completed(one, "a", clock=clock)])
    assert [r.accepted for r in results] == [True, True]
    [following] = reserve(backend, ["store"])
    assert following.job.args == (["a", "b"],)
    assert reserve(backend, ["store"]) == []
    backend.settle([completed(following, "done", clock=clock)])
    record = backend.get_chain(handle.id)
    assert record is not None
    assert record.state is ChainState.COMPLETED


def test_a_failed_step_halts_its_chain_and_redrive_resumes_it(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """The halt goes through the outbox too; re-driving re-opens the chain (its slot) then the job."""
    app = App(backend=backend)
    handle = chain(*_tasks(app)).submit(1)
    backend.settle([completed(reserve_one(backend, ["fetch"]), 2, clock=clock)])
    broken = reserve_one(backend, ["parse"])
    [settled] = backend.settle([failed(broken, clock=clock)])
    assert settled.chain is not None
    assert settled.chain.state is ChainState.HALTED
    assert _outbox(backend, "parse") == {}
    assert [e.job.id for e in backend.failed()] == [broken.job.id]
    assert backend.redrive([broken.job.id]) == [broken.job.id]
    record = backend.get_chain(handle.id)
    assert record is not None
    assert record.state is ChainState.RUNNING
    again = reserve_one(backend, ["parse"])
    backend.settle([completed(again, 4, clock=clock)])
    backend.settle([completed(reserve_one(backend, ["store"]), 4, clock=clock)])
    record = backend.get_chain(handle.id)
    assert record is not None
    assert record.state is ChainState.COMPLETED


def test_records_and_the_failed_queue_span_every_queue(backend: RedisBackend, clock: ManualClock) -> None:
    """get_job finds a job in any queue; the failed queue lists every queue's failures, oldest first."""
    app = App(backend=backend)
    fetch, parse, _ = _tasks(app)
    jobs = [fetch.submit(1), parse.submit(2), fetch.submit(3)]
    assert [r.job.queue for j in jobs if (r := backend.get_job(j.id)) is not None] == [
        "fetch",
        "parse",
        "fetch",
    ]
    order = [reserve_one(backend, ["parse"]), *reserve(backend, ["fetch"])]
    for delivery in order:
        clock.advance(1.0)
        backend.settle([failed(delivery, clock=clock)])
    assert [e.job.id for e in backend.failed()] == [d.job.id for d in order]
    assert [e.job.id for e in backend.failed(limit=1, offset=1)] == [order[1].job.id]
    assert backend.get_failed(order[2].job.id) is not None
    assert backend.purge_failed([order[0].job.id]) == 1
    assert backend.get_job(order[0].job.id) is None
    assert backend.purge_failed() == 2
    assert backend.failed() == []
    assert queue_stats(backend, "fetch").failed == 0


def test_the_queue_list_is_written_apart_once_per_queue(backend: RedisBackend) -> None:
    """The queue list is in the application's slot: noted before the first job, not in each transaction."""
    app = App(backend=backend)
    fetch, parse, _ = _tasks(app)
    fetch.submit(1)
    parse.submit(1)
    fetch.submit(2)
    assert sorted(backend.client.smembers(backend.keys.queues)) == ["fetch", "parse"]
    assert sorted(s.queue for s in backend.stats()) == ["fetch", "parse"]


def test_a_cluster_url_is_parsed_into_its_startup_nodes() -> None:
    """``+cluster``: the hosts are startup nodes (6379 by default), the db is 0, passwords are hidden."""
    parsed = parse_url(
        "redis-streams+cluster://u:secret@10.0.0.1:7000,10.0.0.2/0?prefix=app&socket_timeout=2"
    )
    assert parsed.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert parsed.options == {"prefix": "app"}
    assert "secret" not in parsed.public
    assert "socket_timeout=2" in parsed.redis_url
    assert parse_url("rediss-lists+cluster://h:7000").tls


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis-lists+cluster://h:7000/3", "only db 0"),
        ("redis-lists+cluster:///0", "lists the cluster nodes"),
        ("redis-lists+cluster://h:notaport/0", "bad cluster node address"),
        ("redis-lists+shards://h:7000/0", "not a Redis backend URL"),
    ],
)
def test_a_bad_cluster_url_is_refused_clearly(url: str, message: str) -> None:
    from jobchain.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        parse_url(url)


class _Nodes:
    def __init__(self) -> None:
        self.moved: list[Any] = []
        self.initialized = 0

    def move_slot(self, exc: Any) -> None:
        self.moved.append(exc)

    def initialize(self) -> None:
        self.initialized += 1


class _Cluster:
    """Just what ClusterRoute asks of redis-py's cluster client: the node of a key, a node's client."""

    def __init__(self) -> None:
        self.nodes_manager = _Nodes()

    def get_node_from_key(self, key: str) -> str:
        return f"owner-of-{key}"

    def get_node(self, host: str, port: int) -> str:
        return f"{host}:{port}"

    def get_redis_connection(self, node: str) -> str:
        return f"client-of-{node}"


def _route_with(
    monkeypatch: pytest.MonkeyPatch, replies: list[BaseException | str], wait: float = 1.0
) -> tuple[Any, list[tuple[str, bool]]]:
    """A ClusterRoute whose transactions answer ``replies`` in turn (an error is raised)."""
    from jobchain_redis import connection

    calls: list[tuple[str, bool]] = []

    def scripted(client: str, body: Any, *, tolerate: tuple[str, ...] = (), asking: bool = False) -> Any:
        calls.append((client, asking))
        reply = replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply, []

    monkeypatch.setattr(connection, "transact", scripted)
    return connection.ClusterRoute(_Cluster(), unstable_wait=wait), calls  # type: ignore[arg-type]


def test_the_route_follows_moved_to_the_new_master(monkeypatch: pytest.MonkeyPatch) -> None:
    moved = redis.exceptions.MovedError("3999 127.0.0.1:7002")
    route, calls = _route_with(monkeypatch, [moved, "done"])
    assert route.transact("k", lambda tx: None) == ("done", [])
    assert route.cluster.nodes_manager.moved == [moved]  # the slot map learns the new owner
    assert calls == [("client-of-owner-of-k", False), ("client-of-owner-of-k", False)]


def test_the_route_follows_ask_with_asking_on_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = redis.exceptions.AskError("3999 127.0.0.1:7003")
    route, calls = _route_with(monkeypatch, [asked, "done"])
    assert route.transact("k", lambda tx: None) == ("done", [])
    assert calls == [("client-of-owner-of-k", False), ("client-of-127.0.0.1:7003", True)]
    assert route.cluster.nodes_manager.moved == []  # ASK is for this transaction only


def test_the_route_waits_out_tryagain_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    again = redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot")
    route, calls = _route_with(monkeypatch, [again, again, "done"])
    assert route.transact("k", lambda tx: None) == ("done", [])
    route, calls = _route_with(monkeypatch, [again] * 1000, wait=0.05)
    with pytest.raises(redis.exceptions.TryAgainError):
        route.transact("k", lambda tx: None)
    assert 2 <= len(calls) < 1000


def test_a_slot_that_stays_unstable_is_unavailable_not_an_error(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRYAGAIN past the wait (or CLUSTERDOWN) reaches the caller as BackendUnavailableError."""
    from jobchain.errors import BackendUnavailableError

    def unstable(*args: Any, **kwargs: Any) -> Any:
        raise redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot")

    monkeypatch.setattr(backend._store, "transact", unstable)
    app = App(backend=backend, buffer=None)
    with pytest.raises(BackendUnavailableError, match="TryAgainError"):
        app.task(name="t", queue="fetch")(lambda: None).submit()
