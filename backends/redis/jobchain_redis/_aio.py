"""The asyncio client of the Redis backends: submits and record reads with ``redis.asyncio``.

:class:`AsyncRedis` serves the :class:`~jobchain.capabilities.AsyncClient`
capability of :class:`~jobchain_redis.common.RedisBackend`. Nothing here
decides what to write: the transaction is the one :mod:`._enqueue` builds
(:meth:`Enqueuer.enqueue_async` fills a ``redis.asyncio`` pipeline with the
same ``_store`` that fills the synchronous one) and the records are read and
parsed by :mod:`._records` (:meth:`Records.job_keys`, :meth:`Records.job_from`).
The tests run the same assertions, and compare every key written, through
both paths.

**Which clients.** The asyncio client is made from the backend's own client:
a plain ``redis.Redis`` (a ``redis-lists://`` or ``redis-streams://`` URL,
TLS and Unix sockets included, the spread layout too) gets a
``redis.asyncio.Redis`` with the same connection settings, and a fakeredis
client gets fakeredis' asyncio twin on the same fake server. A Sentinel
master (its pool follows failovers) and a Cluster are not served natively
yet: :meth:`AsyncRedis.serves` is False, and the App runs their synchronous
calls in its thread pool (correct, only a thread hop slower).

**Event loops.** A ``redis.asyncio`` connection belongs to the loop that
opened it, so each loop gets its own client (and pool), made on first use
and closed by :meth:`AsyncRedis.close` (``await app.close_async()``). The
pool is bounded (:data:`CONNECTIONS`): a thousand coroutines waiting on jobs
share that many connections and queue for them, rather than opening a
connection each.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from jobchain.aio import PerLoop
from jobchain_redis._boundary import converted
from jobchain_redis._wire import pack
from jobchain_redis.safety import is_oom, oom_error

__all__ = [
    "CONNECTIONS",
    "CONNECTION_WAIT",
    "AsyncRedis",
    "async_boundary",
    "async_factory",
    "exchange",
    "multi_exec",
]

P = ParamSpec("P")
R = TypeVar("R")

_CLASSES: dict[str, Any] = {
    "Connection": redis.asyncio.connection.Connection,
    "SSLConnection": redis.asyncio.connection.SSLConnection,
    "UnixDomainSocketConnection": redis.asyncio.connection.UnixDomainSocketConnection,
}


#: connections of one event loop's client: coroutines beyond that many wait for one (never a connection each)
CONNECTIONS = 32
#: seconds a coroutine waits for a free connection before the call fails as unavailable
CONNECTION_WAIT = 20.0

#: what places a fakeredis client on its fake server (the server itself, or the key it is found by)
_FAKE_SETTINGS = ("server", "host", "port", "version", "server_type", "decode_responses", "encoding_errors")


def _accepted(cls: Any) -> set[str]:
    """The keyword arguments an asyncio connection class (and its bases) accepts."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names - {"self", "args", "kwargs"}


def async_factory(client: Any) -> Callable[[], Any] | None:
    """What makes an asyncio client like ``client`` (one per event loop), or None if none can be made."""
    if isinstance(client, redis.cluster.RedisCluster) or not isinstance(client, redis.Redis):
        return None
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if "server" in kwargs:  # fakeredis: its asyncio client on the same fake server
        fake: Any = importlib.import_module("fakeredis.aioredis")
        same = {k: kwargs[k] for k in _FAKE_SETTINGS if k in kwargs}
        return lambda: fake.FakeRedis(
            connection_pool_class=redis.asyncio.BlockingConnectionPool, max_connections=CONNECTIONS, **same
        )
    if type(pool) is not redis.ConnectionPool:  # a Sentinel's master-following pool, a blocking pool …
        return None
    cls = _CLASSES.get(pool.connection_class.__name__)
    if cls is None or not issubclass(pool.connection_class, redis.connection.AbstractConnection):
        return None
    accepted = _accepted(cls)
    settings = {k: v for k, v in kwargs.items() if k in accepted and k not in ("retry", "connection_pool")}

    def make() -> Any:
        # one quick retry, as the synchronous client: never a blind re-send (see connection.transact)
        async_pool = redis.asyncio.BlockingConnectionPool(
            max_connections=CONNECTIONS,
            timeout=CONNECTION_WAIT,
            connection_class=cls,
            retry=AsyncRetry(NoBackoff(), 1),
            **settings,
        )
        return redis.asyncio.Redis.from_pool(async_pool)  # closing the client closes its pool

    return make


class AsyncRedis:
    """One asyncio client per event loop, made from the backend's synchronous client.

    The clients live in a :class:`~jobchain.aio.PerLoop`: closed by :meth:`close`
    (``await app.close_async()``), or else when their loop shuts down.
    """

    def __init__(self, client: Any) -> None:
        self._make = async_factory(client)
        self._clients: PerLoop[Any] = PerLoop(self._make or _none, _aclose)

    def serves(self) -> bool:
        """True when an asyncio client can be made for this backend's connection."""
        return self._make is not None

    async def client(self) -> Any:
        """The running loop's client (made now if it has none)."""
        return await self._clients.get()

    async def close(self) -> None:
        """Close the running loop's client and its connections (the next call makes a new one)."""
        await self._clients.close()


def _none() -> Any:
    raise AssertionError("no asyncio client can be made for this connection (serves() is False)")


async def _aclose(client: Any) -> None:
    await client.aclose()


async def exchange(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` on an asyncio connection in one packet; every reply, error replies in place."""
    await conn.send_packed_command(pack(conn, commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except redis.ResponseError as exc:  # read every reply, so the connection stays in step
            replies.append(exc)
    return replies


async def multi_exec(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any] | None:
    """MULTI, ``commands``, EXEC in one packet: EXEC's replies, None if a watched key changed.

    Errors are raised as redis-py raises them: a command refused while queued
    (``OOM`` …) aborts the transaction and is raised; an error reply inside
    EXEC's is raised too (nothing is retried here).
    """
    replies = await exchange(conn, [("MULTI",), *commands, ("EXEC",)])
    result = replies[-1]
    if isinstance(result, Exception):  # EXECABORT: raise the refusal that caused it
        raise next((r for r in replies[:-1] if isinstance(r, Exception)), result)
    if result is None:
        return None
    for reply in result:
        if isinstance(reply, Exception):
            raise reply
    return list(result)


def async_boundary(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """:func:`~jobchain_redis._boundary.boundary` and :func:`~jobchain_redis.safety.refuse_oom`, awaited."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except redis.RedisError as exc:
            if is_oom(exc):
                raise oom_error(str(getattr(args[0], "url", "redis"))) from exc
            raise converted(args[0], method.__name__.removesuffix("_async"), exc) from exc

    return wrapper
