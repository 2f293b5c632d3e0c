"""A Redis Cluster of a test's own on loopback: ``masters`` redis-servers, no replicas, all slots covered.

Every process is a ``redis-server --cluster-enabled yes`` this object started
(one :class:`~redis_proc.RedisProcess` per node, each in a directory of its
own) and only those are signalled, by PID::

    cluster = ClusterProcess.start(tmp_path / "cluster")   # 3 masters, slots split evenly; RedisUnavailable
    cluster.hosts                                          # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
    rc = cluster.client()                                  # redis.cluster.RedisCluster, decode_responses
    slot = cluster.keyslot("{job}:queue")
    cluster.owner(slot)                                    # port of the master serving the slot
    cluster.migrate_slot(slot, to_port, batch=10, pause=0.05)  # the online resharding protocol
    cluster.stop()                                         # or: with ClusterProcess.start(...) as cluster:

The cluster is built without ``redis-cli --cluster create``: each node gets a
distinct config epoch and its range of slots (``CLUSTER ADDSLOTSRANGE``), then
every pair of nodes is introduced (``CLUSTER MEET``), and ``start`` returns once
every node reports ``cluster_state:ok`` and all of them give the same
``CLUSTER SLOTS``. Each node's bus port is a free port of its own
(``cluster-port``), not ``port + 10000``, which may be above 65535.

redis-server 7.0 keeps a master's cluster state ``fail`` for 2 s after it
starts (``CLUSTER_WRITABLE_DELAY``, not configurable): a start takes a little
over 2 s, whatever the number of masters.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from redis_proc import RedisProcess, RedisUnavailable, free_port

__all__ = ["SLOTS", "ClusterProcess"]

#: the number of hash slots of a Redis Cluster
SLOTS = 16384
HOST = "127.0.0.1"

#: (first slot, last slot, port of the master), sorted: one node's view of the slot map
SlotMap = list[tuple[int, int, int]]


def _node_args(bus_port: int, config: Path) -> tuple[str, ...]:
    return (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(config),
        "--cluster-node-timeout",
        "2000",
        "--cluster-port",
        str(bus_port),
        # CLUSTER SLOTS and MOVED name 127.0.0.1 even for a node that has met no other (a 1-master cluster)
        "--cluster-announce-ip",
        HOST,
    )


def _bus_port(node: RedisProcess) -> int:
    return int(node.extra_args[node.extra_args.index("--cluster-port") + 1])


class ClusterProcess:
    """A running Redis Cluster of ``len(ports)`` masters on 127.0.0.1 (build it with :meth:`start`)."""

    def __init__(self, directory: Path, nodes: list[RedisProcess]) -> None:
        self.directory = Path(directory)
        #: one RedisProcess per master, in slot order (the first owns slot 0)
        self.nodes = nodes
        #: port -> CLUSTER MYID
        self.ids: dict[int, str] = {}

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        directory: Path,
        masters: int = 3,
        *,
        appendonly: bool = False,
        appendfsync: str = "always",
        timeout: float = 30.0,
    ) -> ClusterProcess:
        """Start ``masters`` nodes, split the 16384 slots evenly among them, wait until all agree.

        Raises :class:`RedisUnavailable` (after stopping whatever it started) when
        redis-server is missing, a node does not start, or the cluster does not
        become ``ok`` within ``timeout`` seconds.
        """
        if not 1 <= masters <= SLOTS:
            raise ValueError(f"masters must be between 1 and {SLOTS}, not {masters}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cluster = cls(directory, [])
        deadline = time.monotonic() + timeout
        try:
            with ThreadPoolExecutor(min(masters, 8)) as pool:  # in parallel: each start waits for a PING
                futures = [
                    pool.submit(cls._start_node, directory, appendonly, appendfsync) for _ in range(masters)
                ]
            cluster.nodes = [future.result() for future in futures if future.exception() is None]
            for future in futures:
                future.result()  # the first node that did not start, if any (the others are stopped)
            cluster._create()
            cluster.wait_ok(deadline - time.monotonic())
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @staticmethod
    def _start_node(directory: Path, appendonly: bool, appendfsync: str, attempts: int = 3) -> RedisProcess:
        """One node on a fresh pair of free ports (client and bus); new ports if another process took them."""
        for attempt in range(attempts):
            port, bus_port = free_port(), free_port()
            while bus_port == port:
                bus_port = free_port()
            node_dir = directory / f"node-{port}"
            node = RedisProcess(
                node_dir,
                port=port,
                appendonly=appendonly,
                appendfsync=appendfsync,
                extra_args=_node_args(bus_port, node_dir / f"nodes-{port}.conf"),
            )
            try:
                node.start()
                return node
            except RedisUnavailable:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _create(self) -> None:
        """Distinct config epochs, an even share of the slots each, then every pair of nodes MEETs."""
        count = len(self.nodes)
        clients = [self.node_client(node.port) for node in self.nodes]
        try:
            for index, client in enumerate(clients):
                self.ids[self.nodes[index].port] = client.execute_command("CLUSTER", "MYID")
                # what redis-cli --cluster create does: no epoch collision to resolve afterwards
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                first, last = index * SLOTS // count, (index + 1) * SLOTS // count - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for index, client in enumerate(clients):
                for other in self.nodes[index + 1 :]:
                    client.execute_command("CLUSTER", "MEET", HOST, other.port, _bus_port(other))
        finally:
            for client in clients:
                client.close()

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every node reports ``cluster_state:ok`` and all give one slot map covering every slot.

        After :meth:`start`, and after a node was restarted (``cluster.node(port).start()``,
        ~2 s: a restarted master stays ``fail`` that long). RedisUnavailable on timeout.
        """
        self._wait(self._converged, time.monotonic() + timeout, "every node to report cluster_state:ok")

    def _wait(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        import redis

        while True:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"timed out waiting for {what}: {self.describe()}")
            time.sleep(0.02)

    def _converged(self) -> bool:
        """Every node ``cluster_state:ok``, knowing every other, with one slot map covering every slot."""
        dead = [node.port for node in self.nodes if not node.running]
        if dead:
            raise RedisUnavailable(f"redis-server on port(s) {dead} exited: {self.describe()}")
        views = []
        for port in self.ports:
            client = self.node_client(port, socket_timeout=2)
            try:
                info = client.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info:
                    return False
                if f"cluster_known_nodes:{len(self.ports)}\r" not in info:
                    return False  # a handshake still pending: MEET leaves a temporary node behind
                views.append(self._slot_map(client))
            finally:
                client.close()
        first = views[0]
        covered = sum(last - start + 1 for start, last, _ in first)
        return covered == SLOTS and all(view == first for view in views)

    @staticmethod
    def _slot_map(client: Any) -> SlotMap:
        return sorted(
            (int(entry[0]), int(entry[1]), int(entry[2][1]))
            for entry in client.execute_command("CLUSTER", "SLOTS")
        )

    def describe(self) -> str:
        """Each node's ``cluster_state`` and slot map, for an error message."""
        import redis

        parts = []
        for node in self.nodes:
            client = self.node_client(node.port, socket_timeout=1)
            try:
                info = client.execute_command("CLUSTER", "INFO")
                state = next((line for line in info.splitlines() if line.startswith("cluster_state")), "?")
                parts.append(f"{node.port}: {state} slots={self._slot_map(client)}")
            except redis.RedisError as exc:
                parts.append(f"{node.port}: {exc!r} (log: {node._log_tail(3)})")
            finally:
                client.close()
        return "; ".join(parts)

    # --- addresses and clients --------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def bus_ports(self) -> list[int]:
        """Each node's cluster bus port (``cluster-port``), in the order of :attr:`ports`."""
        return [_bus_port(node) for node in self.nodes]

    @property
    def hosts(self) -> str:
        """``127.0.0.1:P1,127.0.0.1:P2,...``: the seed list of a cluster URL."""
        return ",".join(f"{HOST}:{port}" for port in self.ports)

    def node(self, port: int) -> RedisProcess:
        """The RedisProcess on ``port``: to kill, stop or restart one node (it rejoins from nodes.conf)."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node of this cluster on port {port} (ports: {self.ports})")

    def client(self, **options: Any) -> Any:
        """A ``redis.cluster.RedisCluster`` seeded with every node, decode_responses=True (caller closes)."""
        from redis.cluster import ClusterNode, RedisCluster

        options.setdefault("decode_responses", True)
        options.setdefault("socket_timeout", 5)
        return RedisCluster(startup_nodes=[ClusterNode(HOST, port) for port in self.ports], **options)

    def node_client(self, port: int, **options: Any) -> Any:
        """A plain ``redis.Redis`` to one node, ``decode_responses=True``, no retries (caller closes)."""
        options.setdefault("decode_responses", True)
        return self.node(port).client(retries=False, **options)

    def _each(self, command: Callable[[Any], Any], ports: list[int] | None = None) -> dict[int, Any]:
        results = {}
        for port in self.ports if ports is None else ports:
            client = self.node_client(port)
            try:
                results[port] = command(client)
            finally:
                client.close()
        return results

    # --- slots ------------------------------------------------------------------------------------

    @staticmethod
    def keyslot(key: str) -> int:
        """The hash slot of ``key`` (hash tags honoured), computed here as CLUSTER KEYSLOT would."""
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    def slot_map(self, port: int | None = None) -> SlotMap:
        """``[(first, last, owner port), ...]`` as node ``port`` (default: the first) sees it."""
        return self._each(self._slot_map, [self.ports[0] if port is None else port]).popitem()[1]

    def owners(self, slot: int) -> dict[int, int | None]:
        """Each node's answer to "who serves ``slot``": node port -> owner port (None: not covered)."""
        return {
            port: next((owner for first, last, owner in view if first <= slot <= last), None)
            for port, view in self._each(self._slot_map).items()
        }

    def owner(self, slot: int) -> int:
        """The port of the master serving ``slot``; every node is asked, and they must agree."""
        answers = self.owners(slot)
        distinct = set(answers.values())
        if len(distinct) != 1 or None in distinct:
            raise AssertionError(f"the nodes disagree on the owner of slot {slot}: {answers}")
        return int(distinct.pop())

    def flushall(self) -> None:
        """``FLUSHALL`` on every master."""
        self._each(lambda client: client.flushall())

    # --- resharding -------------------------------------------------------------------------------

    def migrate_slot(self, slot: int, to_port: int, *, batch: int = 10, pause: float = 0.0) -> int:
        """Move ``slot`` to the master on ``to_port`` online, as ``redis-cli --cluster reshard`` does.

        ``CLUSTER SETSLOT slot IMPORTING`` on the target, ``MIGRATING`` on the
        source, then ``CLUSTER GETKEYSINSLOT`` + ``MIGRATE ... KEYS`` ``batch``
        keys at a time, sleeping ``pause`` seconds after each batch (clients see
        ASK redirections, and TRYAGAIN for multi-key commands over keys on both
        sides, meanwhile), until the source holds no key of the slot (keys
        written during the move are moved too), and finally ``CLUSTER SETSLOT
        slot NODE`` on the target, the source and every other master. Returns
        the number of keys moved (0 when ``to_port`` already serves the slot).
        """
        import redis

        if batch < 1:
            raise ValueError("batch must be at least 1")
        source_port = self.owner(slot)
        self.node(to_port)
        if source_port == to_port:
            return 0
        source_id, target_id = self.ids[source_port], self.ids[to_port]
        source, target = self.node_client(source_port, socket_timeout=10), self.node_client(to_port)
        moved = 0
        try:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                try:
                    reply = source.execute_command("MIGRATE", HOST, to_port, "", 0, 5000, "KEYS", *keys)
                except redis.ResponseError as exc:
                    raise RuntimeError(f"MIGRATE of {len(keys)} keys of slot {slot} failed: {exc}") from exc
                if reply != "NOKEY":  # NOKEY: every one of them was deleted (or expired) meanwhile
                    moved += len(keys)
                if pause:
                    time.sleep(pause)
            # the target first: once it owns the slot, a client the source sends there by ASK is served
            target.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            source.close()
            target.close()
        others = [port for port in self.ports if port not in (source_port, to_port)]
        self._each(
            lambda client: client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id), others
        )
        self._wait(
            lambda: set(self.owners(slot).values()) == {to_port},
            time.monotonic() + 10,
            f"every node to name {to_port} the owner of slot {slot}",
        )
        return moved

    # --- stopping ---------------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every node this object started (by PID), wait; SIGKILL whatever is still running."""
        procs = [node.proc for node in self.nodes if node.running and node.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def __enter__(self) -> ClusterProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ClusterProcess(ports={self.ports}, dir={str(self.directory)!r})"
