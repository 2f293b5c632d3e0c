"""How the Redis backends talk to Redis: WATCH/MULTI/EXEC transactions, Cluster routing, the server clock.

A transition is one optimistic transaction (:class:`Transaction`, run by
:func:`transact`): WATCH and the reads in one packet, then MULTI … EXEC. A
:class:`Route` says where it runs: the one server (:class:`Standalone`, also
the master a Sentinel names) or the master of its keys' slot on a Cluster
(:class:`ClusterRoute`, following ``MOVED`` and ``ASK`` and waiting out
``TRYAGAIN``). :class:`ServerClock` follows the server's ``TIME``.

This module is also the public face of the URL parsing
(:mod:`jobchain_redis._url`: :func:`parse_url`, :func:`connect` …) and of the
error boundary (:mod:`jobchain_redis._boundary`: :func:`boundary`,
:func:`wrong_type`), re-exported here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import redis
import redis.cluster
from redis.exceptions import AskError, ClusterDownError, MovedError, SlotNotCoveredError, TryAgainError

from jobchain_redis._boundary import boundary, wrong_type
from jobchain_redis._url import (
    ParsedUrl,
    cluster_node,
    connect,
    decode_tolerantly,
    number_option,
    parse_url,
    public_url,
)
from jobchain_redis._wire import lean_pipeline, pack

__all__ = [
    "ClusterRoute",
    "ParsedUrl",
    "Pipe",
    "Route",
    "ServerClock",
    "Standalone",
    "Transaction",
    "boundary",
    "connect",
    "decode_tolerantly",
    "number_option",
    "parse_url",
    "public_url",
    "transact",
    "wrong_type",
]

#: a redis-py pipeline; its replies are typed as sync/async unions, so it is handled as Any
Pipe: TypeAlias = Any

R = TypeVar("R")

#: seconds a transaction waits out a slot in migration (TRYAGAIN) or a cluster without a quorum
_UNSTABLE_WAIT = 10.0


class ServerClock:
    """The Redis server's clock (``TIME``), read once per ``refresh`` seconds and followed locally.

    Lease and delay arithmetic uses it, so workers whose own clocks drift agree on
    when a lease ends.
    """

    def __init__(self, client: redis.Redis | redis.cluster.RedisCluster, refresh: float = 30.0) -> None:
        self._client: Any = client
        self._refresh = refresh
        self._offset = 0.0
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def now(self) -> float:
        local = time.monotonic()
        if local - self._checked > self._refresh:
            with self._lock:
                before = time.time()
                seconds, micros = self._client.time()
                after = time.time()
                self._offset = seconds + micros / 1e6 - (before + after) / 2
                self._checked = local
        return time.time() + self._offset

    async def now_async(self, client: Any) -> float:
        """:meth:`now` for a coroutine: ``TIME`` read through ``client`` (``redis.asyncio``) when due."""
        local = time.monotonic()
        if local - self._checked > self._refresh:
            before = time.time()
            seconds, micros = await client.time()
            after = time.time()
            with self._lock:
                self._offset = seconds + micros / 1e6 - (before + after) / 2
                self._checked = local
        return time.time() + self._offset


class Transaction:
    """One attempt of an optimistic transaction: WATCH keys, read, then queue writes after MULTI.

    ``watch`` only notes the keys: the next :meth:`read` sends ``WATCH`` and
    the reads in one packet on the transaction's own connection, so a
    transition costs two round trips (WATCH + reads, MULTI … EXEC), not three.
    Replies are parsed by redis-py's response callbacks, as its own commands'.
    """

    def __init__(self, pipe: Pipe, client: redis.Redis, *, asking: bool = False, attempt: int = 1) -> None:
        self._pipe = pipe
        #: 1, then 2, 3 … when the body runs again (a WATCHed key changed, or the reply of an EXEC was lost)
        self.attempt = attempt
        self._client: Any = client
        self._watch: list[str] = []
        self.started = False
        #: the slot is being imported by this node (an ``ASK`` redirection): every command before
        #: MULTI, and MULTI itself, is preceded by ``ASKING``
        self._asking = asking

    def watch(self, *keys: str) -> None:
        self._watch.extend(keys)

    def read(self, queue_reads: Callable[[Pipe], object], *, tolerant: bool = False) -> list[Any]:
        """Send ``WATCH`` (the keys noted) and the reads in one packet; their replies.

        An error reply is raised once every reply is read (``tolerant``: left in
        its place); it carries the key its command named (see :func:`wrong_type`).
        """
        recorder = self._client.pipeline(transaction=False)
        queue_reads(recorder)
        reads: list[tuple[tuple[Any, ...], dict[str, Any]]] = list(recorder.command_stack)
        watch, self._watch = self._watch, []
        commands = ([("WATCH", *watch)] if watch else []) + [args for args, _ in reads]
        if not commands:
            return []
        pipe = self._pipe
        conn = self._connection()
        if self._asking:
            commands = [c for command in commands for c in (("ASKING",), command)]
        replies: list[Any] = []
        error: redis.ResponseError | None = None
        try:
            conn.send_packed_command(pack(conn, commands))
            if watch:
                self._asked(conn)
                pipe.parse_response(conn, "WATCH")
                pipe.watching = True  # reset() then sends UNWATCH if the transaction stops short
            for args, options in reads:
                self._asked(conn)
                try:
                    replies.append(self._client.parse_response(conn, args[0], **dict(options)))
                except redis.ResponseError as exc:  # read every reply, so the connection (and WATCH) stay
                    exc.jobchain_key = str(args[1]) if len(args) > 1 else "?"  # type: ignore[attr-defined]
                    error = error or exc
                    replies.append(exc)
        except BaseException:
            conn.disconnect()  # replies may be left unread: the connection cannot be reused
            raise
        if error is not None and not tolerant:
            raise error
        return replies

    def _connection(self) -> Any:
        pipe = self._pipe
        if pipe.connection is None:
            pipe.connection = pipe.connection_pool.get_connection()
        return pipe.connection

    def _asked(self, conn: Any) -> None:
        if self._asking:
            conn.read_response()  # ASKING's OK (an error here is raised as it is)

    def multi(self) -> Pipe:
        if not self.started:
            if self._watch:
                if self._asking:
                    self.read(lambda r: None)  # WATCH with its ASKING
                else:
                    self._pipe.watch(*self._watch)
                    self._watch = []
            self._pipe.multi()
            # a connection lost during EXEC is a WatchError for transact (which runs the body again on
            # what Redis now holds), never a blind re-send of the same MULTI by redis-py's own retry: a
            # MULTI applied but whose reply was lost would be applied twice
            self._pipe.watching = True
            self.started = True
        return self._pipe

    def ask_before_exec(self) -> None:
        """On an importing node, ``ASKING`` just before MULTI: the flag lasts for the whole MULTI."""
        if self._asking:
            conn = self._connection()
            conn.send_command("ASKING")
            conn.read_response()


def transact(
    client: redis.Redis,
    body: Callable[[Transaction], R],
    *,
    tolerate: tuple[str, ...] = (),
    asking: bool = False,
) -> tuple[R, list[Any]]:
    """Run ``body`` until its EXEC goes through; return its value and the EXEC results.

    ``tolerate`` names error codes (``BUSYGROUP``) that a command inside the
    MULTI may answer without failing the transaction: its slot in the results
    holds the error instead. ``asking``: ``client`` is the node an ``ASK``
    redirection named (see :class:`ClusterRoute`).

    A connection lost during EXEC leaves it unknown whether the EXEC was
    applied: the body runs again once, on a new connection, and reads what
    Redis holds (a body without WATCH must then check, see
    :attr:`Transaction.attempt`); a second loss is raised.
    """
    delay = 0.0005
    attempt = 0
    lost = 0
    with lean_pipeline(client, transaction=True) as pipe:
        while True:
            attempt += 1
            tx = Transaction(pipe, client, asking=asking, attempt=attempt)
            try:
                value = body(tx)
                if not tx.started:
                    return value, []
                tx.ask_before_exec()
                results = list(pipe.execute(raise_on_error=not tolerate))
                for result in results:
                    if isinstance(result, redis.ResponseError) and not str(result).startswith(tolerate):
                        raise result
                return value, results
            except redis.WatchError as exc:
                cause = exc.__context__
                if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
                    lost += 1
                    if lost > 1:
                        raise cause from None
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
            finally:
                pipe.reset()


class Route:
    """Where a transaction runs: the server (:class:`Standalone`) or its slot's master (a Cluster)."""

    def transact(
        self, on: str, body: Callable[[Transaction], R], *, tolerate: tuple[str, ...] = ()
    ) -> tuple[R, list[Any]]:
        """Run ``body`` as :func:`transact` does, on the node holding key ``on`` (and all keys it touches)."""
        raise NotImplementedError


class Standalone(Route):
    """One server, or the master a Sentinel names: every key is on it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def transact(
        self, on: str, body: Callable[[Transaction], R], *, tolerate: tuple[str, ...] = ()
    ) -> tuple[R, list[Any]]:
        return transact(self.client, body, tolerate=tolerate)


class ClusterRoute(Route):
    """Transactions on a Redis Cluster: each on the master of its keys' slot, through its own connection.

    redis-py's cluster client sends the single commands and the pipelines
    without WATCH; a WATCH/MULTI/EXEC goes straight to the node (the
    node's plain client), so that it keeps the two-round-trip shape of
    :class:`Transaction`. Redirections are followed here:

    * ``MOVED``: the slot has a new master (a migration finished, a
      failover); the slot map is updated and the transaction runs again there.
    * ``ASK``: the slot is being migrated and the keys are already on the
      target; the transaction runs on the target with ``ASKING``.
    * ``TRYAGAIN`` (the keys are split between the two nodes mid-migration),
      ``CLUSTERDOWN``: waited out with a short backoff, for up to
      ``unstable_wait`` seconds, then the last error is raised (the backend
      reports it as unavailable).

    Nothing of a transaction that met a redirection was applied (the error
    comes before EXEC, or aborts it), so running it again is safe.
    """

    def __init__(self, cluster: redis.cluster.RedisCluster, *, unstable_wait: float = _UNSTABLE_WAIT) -> None:
        self.cluster: Any = cluster
        self.unstable_wait = unstable_wait

    def transact(
        self, on: str, body: Callable[[Transaction], R], *, tolerate: tuple[str, ...] = ()
    ) -> tuple[R, list[Any]]:
        cluster = self.cluster
        deadline = time.monotonic() + self.unstable_wait
        delay = 0.002
        target: Any = None  # the node an ASK named
        while True:
            node = target if target is not None else cluster.get_node_from_key(on)
            try:
                return transact(
                    cluster.get_redis_connection(node), body, tolerate=tolerate, asking=target is not None
                )
            except MovedError as exc:  # first: redis-py derives MovedError from AskError
                cluster.nodes_manager.move_slot(exc)
                target = None
                error: redis.RedisError = exc
            except AskError as exc:
                target = cluster.get_node(host=exc.host, port=exc.port) or cluster_node(exc.host, exc.port)
                error = exc
            except (TryAgainError, ClusterDownError, SlotNotCoveredError) as exc:
                target = None
                error = exc  # type: ignore[assignment]  # a RedisError
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            except (redis.ConnectionError, redis.TimeoutError):
                with contextlib.suppress(redis.RedisError):  # a master went away: who holds what now?
                    cluster.nodes_manager.initialize()
                raise
            if time.monotonic() > deadline:
                raise error
