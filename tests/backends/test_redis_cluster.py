"""Both Redis backends on a real 3-master Redis Cluster on loopback (the session's ``redis_cluster``).

The whole conformance suite runs on it, opened by ``+cluster`` URL; queues
spread over the shards; a chain crosses shards; and a slot holding a queue
is migrated to another master mid-run with workers and a submitter going:
nothing lost, no CROSSSLOT. Each test keeps to a key prefix of its own (so
its queues have hash tags of their own) and puts back any slot it moves.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from jobchain import App
from jobchain.canvas import chain
from jobchain.clock import ManualClock
from jobchain.errors import ConfigurationError
from jobchain.model import ChainState, JobState
from jobchain.testing import BackendConformance

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

from jobchain_redis import connection  # noqa: E402
from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402
from redis.cluster import RedisCluster, key_slot  # noqa: E402
from redis.exceptions import AskError, MovedError, TryAgainError  # noqa: E402

SCHEMES = {"lists": ("redis-lists", ListsBackend), "streams": ("redis-streams", StreamsBackend)}


def _url(cluster: Any, scheme: str, prefix: str) -> str:
    return f"{scheme}+cluster://{cluster.hosts}/0?prefix={prefix}"


class _OnCluster(BackendConformance):
    """The suite on the Cluster, the backend opened from its ``+cluster`` URL."""

    kind: type[RedisBackend] = ListsBackend
    scheme = "redis-lists"

    @pytest.fixture
    def backend(self, clock: ManualClock, redis_cluster: Any) -> Iterator[RedisBackend]:
        backend = self.kind.from_url(
            _url(redis_cluster, self.scheme, f"c{uuid.uuid4().hex[:10]}"), clock=clock
        )
        assert backend.keys.spread
        yield backend
        backend.delete_everything()
        backend.close()


class TestRedisListsCluster(_OnCluster):
    aging_tolerance = 0.01


class TestRedisStreamsCluster(_OnCluster):
    kind = StreamsBackend
    scheme = "redis-streams"
    aging_tolerance = 0.1


@pytest.fixture(params=sorted(SCHEMES))
def opened(request: pytest.FixtureRequest, redis_cluster: Any) -> Iterator[RedisBackend]:
    """A backend opened through the installed plugin by its ``+cluster`` URL, as the CLI does."""
    from jobchain.plugins import Plugins

    scheme, kind = SCHEMES[request.param]
    backend = Plugins().open_backend(_url(redis_cluster, scheme, f"c{uuid.uuid4().hex[:10]}"))
    assert isinstance(backend, kind)
    yield backend
    backend.delete_everything()
    backend.close()


def _owner(cluster: Any, key: str) -> int:
    return int(cluster.owner(key_slot(key.encode())))


def test_queues_spread_over_the_shards(opened: RedisBackend, redis_cluster: Any) -> None:
    """Twelve queues' keys land on every master, each queue's keys on one."""
    app = App(backend=opened)
    for n in range(12):
        app.task(name=f"t{n}", queue=f"q{n}")(lambda: None).submit()
    owners = {
        q: {_owner(redis_cluster, k) for k in (opened.keys.leases(q), opened.keys.bands(q))}
        for q in [f"q{n}" for n in range(12)]
    }
    assert all(len(ports) == 1 for ports in owners.values())
    assert set().union(*owners.values()) == set(redis_cluster.ports)
    assert sorted(s.queue for s in opened.stats()) == sorted(f"q{n}" for n in range(12))
    assert sum(s.ready for s in opened.stats()) == 12


def test_a_cluster_client_needs_the_spread_layout(redis_cluster: Any) -> None:
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="spread"):
            ListsBackend(client, spread=False)
    finally:
        client.close()


def _queues_on_different_shards(backend: RedisBackend, cluster: Any, count: int) -> list[str]:
    """``count`` queue names whose keys are on ``count`` different masters."""
    found: dict[int, str] = {}
    for n in range(1000):
        name = f"step{n}"
        found.setdefault(_owner(cluster, backend.keys.leases(name)), name)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("no queues on enough shards")


def test_a_chain_crosses_the_shards_with_a_worker(opened: RedisBackend, redis_cluster: Any) -> None:
    """A three-step chain whose steps' queues are on three masters completes, results passed along."""
    queues = _queues_on_different_shards(opened, redis_cluster, 3)
    app = App(backend=opened)
    steps = [app.task(name=f"add{n}", queue=q)(lambda x: x + 1) for n, q in enumerate(queues)]
    with app.worker(concurrency=2, queues=queues, name="w-cross"):
        handle = chain(*steps).submit(0)
        assert handle.wait(timeout=20) == 3
    record = opened.get_chain(handle.id)
    assert record is not None
    assert record.state is ChainState.COMPLETED
    for q in queues:
        assert opened.client.hlen(opened.keys.outbox(q)) == 0


def test_a_slot_holding_a_queue_migrates_mid_run_losing_nothing(
    opened: RedisBackend, redis_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Load on a queue (jobs and chains into a second queue) while its slot moves to another master.

    Every acknowledged submit ends succeeded; the transactions met the
    migration's redirections (ASK, TRYAGAIN, MOVED) and followed them; no
    CROSSSLOT and no error reached the submitter; the slot is put back after.
    """
    redirections: Counter[str] = Counter()
    real = connection.transact

    def counting(*args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        except (AskError, TryAgainError, MovedError) as exc:
            redirections[type(exc).__name__] += 1
            raise

    monkeypatch.setattr(connection, "transact", counting)
    hot, other = _queues_on_different_shards(opened, redis_cluster, 2)
    slot = key_slot(opened.keys.leases(hot).encode())
    source = redis_cluster.owner(slot)
    target = next(
        p
        for p in redis_cluster.ports
        if p not in (source, redis_cluster.owner(key_slot(opened.keys.leases(other).encode())))
    )
    app = App(backend=opened)

    @app.task(name="hot", queue=hot)
    def hot_task(n: int) -> int:
        return n

    @app.task(name="tail", queue=other)
    def tail_task(n: int) -> int:
        return n

    submitted: list[str] = []
    chains: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def submitter() -> None:
        n = 0
        while not stop.is_set():
            try:
                submitted.append(hot_task.submit(n).id)
                if n % 5 == 0:
                    chains.append(chain(hot_task, tail_task).submit(n).id)
            except Exception as exc:
                errors.append(exc)
            n += 1
            time.sleep(0.005)

    with structlog.testing.capture_logs() as logs:
        worker = app.worker(concurrency=4, queues=[hot, other], name="w-migrate")
        with worker:
            thread = threading.Thread(target=submitter, daemon=True)
            thread.start()
            time.sleep(1.0)
            moved = redis_cluster.migrate_slot(slot, target, batch=3, pause=0.02)
            time.sleep(1.0)
            stop.set()
            thread.join(10)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                stats = opened.stats()
                if all(s.ready + s.delayed + s.in_flight == 0 for s in stats) and all(
                    (r := opened.get_chain(c)) is not None and r.finished for c in chains
                ):
                    break
                time.sleep(0.1)
    seen = dict(redirections)
    print(f"\nslot {slot}: {moved} keys moved; {len(submitted)} jobs, {len(chains)} chains; {seen}")
    try:
        assert moved > 0
        assert redirections  # the load met the migration
        assert redis_cluster.owner(slot) == target
        assert errors == []
        states = {j: opened.get_job(j) for j in submitted}
        lost = [j for j, r in states.items() if r is None or r.state is not JobState.SUCCEEDED]
        assert lost == [], f"{len(lost)} of {len(submitted)} acknowledged jobs did not succeed"
        assert all(opened.get_chain(c).state is ChainState.COMPLETED for c in chains)  # type: ignore[union-attr]
        assert not [e for e in logs if "CROSSSLOT" in str(e)]
        assert len(submitted) > 50
    finally:
        redis_cluster.migrate_slot(slot, source)


def test_an_evicting_master_is_found_among_the_shards(redis_cluster: Any) -> None:
    """The eviction check reads every master's policy: one evicting shard is enough to refuse."""
    port = redis_cluster.ports[-1]
    node = redis_cluster.node_client(port)
    before = node.config_get("maxmemory-policy")["maxmemory-policy"]
    node.config_set("maxmemory-policy", "allkeys-lru")
    url = _url(redis_cluster, "redis-lists", f"c{uuid.uuid4().hex[:10]}") + "&eviction=refuse"
    backend = ListsBackend.from_url(url)
    try:
        app = App(backend=backend)
        with pytest.raises(ConfigurationError, match="allkeys-lru"):
            app.task(name="t")(lambda: None).submit()
    finally:
        node.config_set("maxmemory-policy", before)
        node.close()
        backend.close()
