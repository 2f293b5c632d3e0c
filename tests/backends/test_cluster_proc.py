"""The Redis Cluster test helper (cluster_proc.py) against real redis-servers on loopback.

The 3-master tests share the session's ``redis_cluster`` (each keeps to a hash
tag of its own and leaves the slot map as it found it); the 1-master test
starts a cluster of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

from cluster_proc import SLOTS, ClusterProcess  # noqa: E402
from redis_proc import RedisUnavailable  # noqa: E402


def _node_info(cluster: ClusterProcess, port: int) -> dict[str, str]:
    client = cluster.node_client(port)
    try:
        text = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _dbsize(cluster: ClusterProcess, port: int) -> int:
    client = cluster.node_client(port)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def _count_in_slot(cluster: ClusterProcess, port: int, slot: int) -> int:
    client = cluster.node_client(port)
    try:
        return int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
    finally:
        client.close()


def test_three_masters_cover_every_slot(redis_cluster: ClusterProcess) -> None:
    cluster = redis_cluster
    assert len(cluster.ports) == 3
    assert len(set(cluster.ports)) == 3
    assert cluster.hosts == ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    assert len(set(cluster.ids.values())) == 3
    # contiguous, from 0 to 16383, one range per master, and every node gives the same map
    slot_map = cluster.slot_map()
    assert [owner for _, _, owner in slot_map] == cluster.ports
    assert slot_map[0][0] == 0
    assert slot_map[-1][1] == SLOTS - 1
    assert all(slot_map[i][1] + 1 == slot_map[i + 1][0] for i in range(len(slot_map) - 1))
    assert all(last - first + 1 in (SLOTS // 3, SLOTS // 3 + 1) for first, last, _ in slot_map)
    for port in cluster.ports:
        assert cluster.slot_map(port) == slot_map
        info = _node_info(cluster, port)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == str(SLOTS)
        assert info["cluster_size"] == "3"
        assert info["cluster_known_nodes"] == "3"
    for first, last, owner in slot_map:
        assert cluster.owner(first) == cluster.owner(last) == owner


def test_hash_tags_spread_keys_over_the_nodes(redis_cluster: ClusterProcess) -> None:
    cluster = redis_cluster
    # one hash tag per master: the first tag found whose slot the master serves
    tags: dict[int, str] = {}
    for n in range(1000):
        tags.setdefault(cluster.owner(cluster.keyslot(f"{{cp-tag-{n}}}")), f"cp-tag-{n}")
        if len(tags) == 3:
            break
    assert sorted(tags) == sorted(cluster.ports)
    client = cluster.client()
    try:
        keys = {port: [f"{{{tag}}}:a", f"{{{tag}}}:b"] for port, tag in tags.items()}
        for port, (first, second) in keys.items():
            assert client.keyslot(first) == cluster.keyslot(first) == cluster.keyslot(second)
            client.set(first, port)
            client.rpush(second, "x", "y")
            assert client.mget(first, first) == [str(port), str(port)]  # multi-key within one slot
        for port, names in keys.items():  # each key is on the node serving its slot, and only there
            slot = cluster.keyslot(names[0])
            node = cluster.node_client(port)
            try:
                assert node.exists(*names) == 2
            finally:
                node.close()
            others = [other for other in cluster.ports if other != port]
            assert [_count_in_slot(cluster, other, slot) for other in others] == [0, 0]
            node = cluster.node_client(others[0])
            try:
                with pytest.raises(redis.exceptions.MovedError, match=f"^{slot} 127.0.0.1:{port}$"):
                    node.get(names[0])
            finally:
                node.close()
        cluster.flushall()
        assert [_dbsize(cluster, port) for port in cluster.ports] == [0, 0, 0]
    finally:
        client.close()


class _Load:
    """A thread writing (and reading back) a list, a hash, a stream and new strings in one slot."""

    def __init__(self, cluster: ClusterProcess, tag: str, acked: int) -> None:
        self.client = cluster.client()
        self.tag = tag
        self.acked = acked  # entries in the list, hash and stream: writes the cluster acknowledged
        self.multi_key = 0  # MGETs over keys the migration may have split between the nodes
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def key(self, name: str) -> str:
        return f"{{{self.tag}}}:{name}"

    def _run(self) -> None:
        key = self.key
        try:
            while not self.stopping.is_set():
                n = self.acked
                self.client.rpush(key("list"), n)
                self.client.hset(key("hash"), f"f{n}", n)
                self.client.xadd(key("stream"), {"n": n})
                self.client.set(key(f"new-{n}"), n)
                self.acked = n + 1
                # read back through the redirections: nothing acknowledged is missing
                if self.client.llen(key("list")) != n + 1 or self.client.get(key(f"new-{n}")) != str(n):
                    self.errors.append(f"write {n} not read back")
                self.client.mget(key("s-0"), key("s-99"), key(f"new-{n}"))
                self.multi_key += 1
        except Exception as exc:
            self.errors.append(repr(exc))

    def __enter__(self) -> _Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.client.close()


def _wait(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_migrate_slot_moves_every_key_while_clients_write(redis_cluster: ClusterProcess) -> None:
    cluster = redis_cluster
    tag = "cp-migrate"
    slot = cluster.keyslot(f"{{{tag}}}")
    source = cluster.owner(slot)
    target = next(port for port in cluster.ports if port != source)
    client: Any = cluster.client()
    try:
        client.rpush(f"{{{tag}}}:list", *range(50))
        client.hset(f"{{{tag}}}:hash", mapping={f"f{n}": n for n in range(50)})
        for n in range(50):
            client.xadd(f"{{{tag}}}:stream", {"n": n})
        client.mset({f"{{{tag}}}:s-{n}": n for n in range(100)})
        before = _count_in_slot(cluster, source, slot)
        assert before == 103

        with _Load(cluster, tag, acked=50) as load:  # the list, hash and stream hold 50 entries already
            _wait(lambda: load.acked > 60)
            started = time.monotonic()
            moved = cluster.migrate_slot(slot, target, batch=10, pause=0.01)
            elapsed = time.monotonic() - started
            acked_during = load.acked
            _wait(lambda: load.acked > acked_during + 10, timeout=20.0)  # the load goes on on the target
        assert load.errors == []
        assert load.multi_key > 0

        assert cluster.owner(slot) == target
        assert _count_in_slot(cluster, source, slot) == 0
        # every key: the 103 written before, one new string per acknowledged write (some written
        # to the target directly, through ASK, once the source no longer had them)
        expected = 103 + (load.acked - 50)
        assert _count_in_slot(cluster, target, slot) == expected
        assert before <= moved <= expected
        assert client.llen(f"{{{tag}}}:list") == load.acked
        assert client.hlen(f"{{{tag}}}:hash") == load.acked
        assert client.xlen(f"{{{tag}}}:stream") == load.acked
        assert client.lrange(f"{{{tag}}}:list", 0, -1) == [str(n) for n in range(load.acked)]
        assert elapsed < 10
    finally:
        # leave the shared cluster as it was: the slot back on its owner, the keys gone
        if cluster.owner(slot) != source:
            cluster.migrate_slot(slot, source, batch=1000)
        for key in client.scan_iter(match=f"{{{tag}}}:*", count=1000):
            client.delete(key)
        client.close()
    assert cluster.owner(slot) == source
    assert _count_in_slot(cluster, source, slot) == 0


def test_migrate_slot_to_its_owner_moves_nothing(redis_cluster: ClusterProcess) -> None:
    slot = redis_cluster.keyslot("{cp-noop}")
    assert redis_cluster.migrate_slot(slot, redis_cluster.owner(slot)) == 0


def test_one_master_cluster_owns_every_slot(tmp_path: Path, redis_unavailable: Callable[[str], None]) -> None:
    try:
        cluster = ClusterProcess.start(tmp_path / "cluster", masters=1)
    except RedisUnavailable as exc:
        redis_unavailable(str(exc))
        raise
    with cluster:
        (port,) = cluster.ports
        assert cluster.hosts == f"127.0.0.1:{port}"
        assert cluster.slot_map() == [(0, SLOTS - 1, port)]
        assert cluster.owner(0) == cluster.owner(SLOTS - 1) == port
        client = cluster.client()
        try:
            client.set("{a}:x", 1)
            client.set("{b}:x", 2)
            assert client.get("{a}:x") == "1"
            assert client.get("{b}:x") == "2"
        finally:
            client.close()
        cluster.flushall()
        assert _dbsize(cluster, port) == 0
    assert not cluster.node(port).running
