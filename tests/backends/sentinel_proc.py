"""A Sentinel group of a test's own on loopback: a master, a replica and three Sentinels.

Every process is a ``redis-server`` this object started (Sentinels run as
``redis-server sentinel.conf --sentinel``, each with a writable config file
in its own directory, which Sentinel rewrites) and only those are signalled,
by PID::

    group = SentinelGroupProcess(tmp_path / "sentinel")   # master + replica + 3 Sentinels, quorum 2
    group.start()                                          # RedisUnavailable if it cannot be started
    group.url("redis-lists")       # redis-lists+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster/0
    group.failover()                                       # SENTINEL FAILOVER mymaster
    group.close()

The master is started with ``min-replicas-to-write 1`` (unless
``min_replicas=False``): once its replica is
promoted (the replica drops its link at once) the old master refuses writes
with ``NOREPLICAS`` instead of acknowledging writes that the failover
discards. The replica is started without it, so the new master takes writes
while the old one has not yet been turned into its replica.

That leaves a window: the old master refuses writes only once it has read
the closed link, and what it acknowledged until then (or had not yet sent to
the replica at the promotion) is gone. On an idle machine it is well under a
millisecond; on a loaded 2-core machine it measured 7 to 17 ms, long enough
for one acknowledged submit at 100 a second to be lost in 11 of 40 runs.
``failover(pause_writes=True)`` closes it: the old master holds writes
(``CLIENT PAUSE … WRITE``) from before the promotion until it has dropped
the replica, the switchover an operator runs to lose nothing.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from redis_proc import RedisProcess, RedisUnavailable, free_port, redis_server_binary

__all__ = ["SERVICE", "SentinelGroupProcess", "SentinelProcess"]

SERVICE = "mymaster"
#: a replica's full sync starts at once (the default waits 5 s for more replicas to share it)
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")


class SentinelProcess:
    """One Sentinel (``redis-server CONF --sentinel``) on a free loopback port, watching ``SERVICE``."""

    def __init__(
        self,
        directory: Path,
        master_port: int,
        *,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 4000,
    ) -> None:
        self.directory = Path(directory)
        self.port = free_port()
        self.myid = secrets.token_hex(20)
        #: the other Sentinels as (port, myid), written to the config so that they need not find each other
        self.known: list[tuple[int, str]] = []
        #: replicas as ports, written to the config likewise
        self.known_replicas: list[int] = []
        self.master_port = master_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.directory / "sentinel.conf"

    @property
    def logfile(self) -> Path:
        return self.directory / "sentinel.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **options: Any) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options.setdefault("socket_timeout", 5)
        return redis.Redis(
            host="127.0.0.1", port=self.port, decode_responses=True, retry=Retry(NoBackoff(), 0), **options
        )

    def start(self, timeout: float = 10.0) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RedisUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    "daemonize no",
                    f'dir "{self.directory}"',
                    f'logfile "{self.logfile}"',
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} {self.quorum}",
                    f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                    f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    f"sentinel myid {self.myid}",
                    *(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {p} {i}" for p, i in self.known),
                    *(f"sentinel known-replica {SERVICE} 127.0.0.1 {p}" for p in self.known_replicas),
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            [binary, str(self.conf), "--sentinel"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        import redis

        client = self.client(socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if not self.running or time.monotonic() > deadline:
                    self.close()
                    raise RedisUnavailable(f"Sentinel did not start on port {self.port}: {self._log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        if self.proc is None or not self.running:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class SentinelGroupProcess:
    """A master, a replica of it and ``sentinels`` Sentinels (quorum 2), all on 127.0.0.1."""

    def __init__(
        self, directory: Path, *, sentinels: int = 3, appendfsync: str = "always", min_replicas: bool = True
    ) -> None:
        self.directory = Path(directory)
        guard = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10") if min_replicas else ()
        self.master = RedisProcess(
            self.directory / "node-a", appendfsync=appendfsync, extra_args=(*_FAST_SYNC, *guard)
        )
        self.replica = RedisProcess(
            self.directory / "node-b",
            appendfsync=appendfsync,
            extra_args=(*_FAST_SYNC, "--replicaof", "127.0.0.1", str(self.master.port)),
        )
        self.sentinels = [
            SentinelProcess(self.directory / f"sentinel-{i}", self.master.port) for i in range(sentinels)
        ]

    @property
    def nodes(self) -> list[RedisProcess]:
        return [self.master, self.replica]

    def url(self, scheme: str, query: str = "") -> str:
        """``SCHEME+sentinel://127.0.0.1:P1,…/mymaster/0`` for ``scheme`` redis-lists or redis-streams."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{scheme}+sentinel://{hosts}/{SERVICE}/0" + (f"?{query}" if query else "")

    def start(self, timeout: float = 20.0) -> None:
        """Start the nodes, wait for the replica to sync, start the Sentinels, wait until they agree."""
        deadline = time.monotonic() + timeout
        try:
            self.master.start()
            self.replica.start()
            self._wait(self._replica_synced, deadline, "the replica to sync")
            for sentinel in self.sentinels:
                sentinel.known = [(s.port, s.myid) for s in self.sentinels if s is not sentinel]
                sentinel.known_replicas = [self.replica.port]
                sentinel.start()
            self._wait(self._sentinels_ready, deadline, "the Sentinels to find the replica and each other")
        except BaseException:
            self.close()  # nothing of a half-started group is left running
            raise

    def _wait(self, check: Any, deadline: float, what: str) -> None:
        while not check():
            if time.monotonic() > deadline:
                self.close()
                raise RedisUnavailable(f"timed out waiting for {what} ({self.directory})")
            time.sleep(0.1)

    def _replica_synced(self) -> bool:
        client = self.replica.client(retries=False, decode_responses=True)
        try:
            return bool(client.info("replication").get("master_link_status") == "up")
        finally:
            client.close()

    def _sentinels_ready(self) -> bool:
        import redis

        others = len(self.sentinels) - 1
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = client.sentinel_master(SERVICE)
                if int(state["num-other-sentinels"]) < others or int(state["num-slaves"]) < 1:
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def master_port(self, sentinel: int = 0) -> int | None:
        """The master's port according to one Sentinel (None if it cannot be asked)."""
        import redis

        client = self.sentinels[sentinel].client(socket_timeout=1)
        try:
            address = client.sentinel_get_master_addr_by_name(SERVICE)
            return None if address is None else int(address[1])
        except redis.RedisError:
            return None
        finally:
            client.close()

    def node(self, port: int) -> RedisProcess:
        return self.master if port == self.master.port else self.replica

    def failover(self, *, pause_writes: bool = False, timeout: float = 10.0) -> float:
        """``SENTINEL FAILOVER mymaster`` on the first Sentinel (a promotion without waiting for a fault).

        Returns once the Sentinel took the command; the promotion follows about
        0.1 to 0.3 s later. With ``pause_writes`` it is a switchover that loses
        no acknowledged write, and returns once the replica has been promoted:

        1. ``CLIENT PAUSE … WRITE`` on the master: writes (and ``PUBLISH``) wait,
           reads go on; it ends by itself after ``timeout`` seconds;
        2. wait until the replica has applied everything the master has;
        3. ``SENTINEL FAILOVER``;
        4. wait until the old master has dropped the promoted replica, so it
           answers every held and later write with ``NOREPLICAS``;
        5. ``CLIENT UNPAUSE``.

        Without the pause, a write the old master acknowledged just before or
        after the promotion may never reach the new one (see the module's
        docstring). Returns the seconds the writes were held (0 without).
        """
        if not pause_writes:
            self._sentinel_failover()
            return 0.0
        old = self.master.client(retries=False, decode_responses=True, socket_timeout=timeout)
        new = self.replica.client(retries=False, decode_responses=True, socket_timeout=timeout)
        deadline = time.monotonic() + timeout

        def wait(check: Any, what: str) -> None:
            while not check():
                if time.monotonic() > deadline:
                    raise AssertionError(f"switchover: timed out waiting for {what}")
                time.sleep(0.005)

        paused = time.monotonic()
        try:
            old.execute_command("CLIENT", "PAUSE", int(timeout * 1000), "WRITE")
            target = int(old.info("replication")["master_repl_offset"])
            wait(
                lambda: int(new.info("replication").get("slave_repl_offset", -1)) >= target,
                "the replica to catch up with the paused master",
            )
            self._sentinel_failover()
            wait(
                lambda: int(old.info("replication")["connected_slaves"]) == 0,
                "the old master to drop the promoted replica",
            )
        finally:
            try:
                old.execute_command("CLIENT", "UNPAUSE")
            finally:
                old.close()
                new.close()
        return time.monotonic() - paused

    def _sentinel_failover(self) -> None:
        client = self.sentinels[0].client()
        try:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        finally:
            client.close()

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for node in self.nodes:
            node.close()

    def __enter__(self) -> SentinelGroupProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
