"""What both Redis backends share: URL parsing, the server clock, WATCH/MULTI/EXEC and error conversion.

URL form: ``redis-lists://[user:password@]host:port/db?prefix=app&socket_timeout=5``
(``rediss-lists://`` for TLS). Query options jobchain reads itself are
``prefix`` (key prefix, default ``jobchain``) and ``band`` (band width in
aging intervals); every other option (``socket_timeout``,
``socket_connect_timeout``, ``max_connections``, ``ssl_ca_certs`` …) goes to
redis-py's connection pool.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from jobchain.errors import BackendError, BackendUnavailableError, ConfigurationError

__all__ = [
    "ParsedUrl",
    "Pipe",
    "ServerClock",
    "Transaction",
    "boundary",
    "parse_url",
    "public_url",
    "transact",
]

#: a redis-py pipeline; its replies are typed as sync/async unions, so it is handled as Any
Pipe: TypeAlias = Any

P = ParamSpec("P")
R = TypeVar("R")

#: query options that jobchain reads itself; the rest go to redis-py
_OWN_OPTIONS = ("prefix", "band")


class ParsedUrl:
    """A backend URL split into the redis-py URL and jobchain's own options."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if not scheme.endswith(("-lists", "-streams")) or not scheme.startswith(("redis", "rediss")):
            raise ConfigurationError(f"not a Redis backend URL: {public_url(url)!r}")
        tls = scheme.startswith("rediss")
        query = parse_qsl(parts.query, keep_blank_values=True)
        self.options: dict[str, str] = {k: v for k, v in query if k in _OWN_OPTIONS}
        rest = [(k, v) for k, v in query if k not in _OWN_OPTIONS]
        self.redis_url = urlunsplit(
            ("rediss" if tls else "redis", parts.netloc or "localhost:6379", parts.path, urlencode(rest), "")
        )
        self.public = public_url(url)


def parse_url(url: str) -> ParsedUrl:
    return ParsedUrl(url)


def public_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


class ServerClock:
    """The Redis server's clock (``TIME``), read once per ``refresh`` seconds and followed locally.

    Lease and delay arithmetic uses it, so workers whose own clocks drift agree on
    when a lease ends.
    """

    def __init__(self, client: redis.Redis, refresh: float = 30.0) -> None:
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


def boundary(method: Callable[P, R]) -> Callable[P, R]:
    """Convert redis-py errors into jobchain's at the backend's public methods."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            url = getattr(args[0], "url", "redis")
            raise BackendUnavailableError(url, f"{type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis error: {type(exc).__name__}: {exc}") from exc

    return wrapper


class Transaction:
    """One attempt of an optimistic transaction: WATCH keys, read, then queue writes after MULTI.

    ``watch`` only notes the keys: the next :meth:`read` sends ``WATCH`` and
    the reads in one packet on the transaction's own connection, so a
    transition costs two round trips (WATCH + reads, MULTI … EXEC), not three.
    Replies are parsed by redis-py's response callbacks, as its own commands'.
    """

    def __init__(self, pipe: Pipe, client: redis.Redis) -> None:
        self._pipe = pipe
        self._client: Any = client
        self._watch: list[str] = []
        self.started = False

    def watch(self, *keys: str) -> None:
        self._watch.extend(keys)

    def read(self, queue_reads: Callable[[Pipe], object]) -> list[Any]:
        recorder = self._client.pipeline(transaction=False)
        queue_reads(recorder)
        reads: list[tuple[tuple[Any, ...], dict[str, Any]]] = list(recorder.command_stack)
        watch, self._watch = self._watch, []
        commands = ([("WATCH", *watch)] if watch else []) + [args for args, _ in reads]
        if not commands:
            return []
        pipe = self._pipe
        conn = pipe.connection
        if conn is None:
            conn = pipe.connection = pipe.connection_pool.get_connection()
        replies: list[Any] = []
        error: redis.ResponseError | None = None
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            if watch:
                pipe.parse_response(conn, "WATCH")
            for args, options in reads:
                try:
                    replies.append(self._client.parse_response(conn, args[0], **dict(options)))
                except redis.ResponseError as exc:  # read every reply, so the connection (and WATCH) stay
                    error = error or exc
                    replies.append(exc)
        except BaseException:
            conn.disconnect()  # replies may be left unread: the connection cannot be reused
            raise
        if error is not None:
            raise error
        return replies

    def multi(self) -> Pipe:
        if not self.started:
            if self._watch:
                self._pipe.watch(*self._watch)
                self._watch = []
            self._pipe.multi()
            self.started = True
        return self._pipe


def transact(
    client: redis.Redis, body: Callable[[Transaction], R], *, tolerate: tuple[str, ...] = ()
) -> tuple[R, list[Any]]:
    """Run ``body`` until its EXEC goes through; return its value and the EXEC results.

    ``tolerate`` names error codes (``BUSYGROUP``) that a command inside the
    MULTI may answer without failing the transaction: its slot in the results
    holds the error instead.
    """
    delay = 0.0005
    with client.pipeline(transaction=True) as pipe:
        while True:
            tx = Transaction(pipe, client)
            try:
                value = body(tx)
                if not tx.started:
                    return value, []
                results = list(pipe.execute(raise_on_error=not tolerate))
                for result in results:
                    if isinstance(result, redis.ResponseError) and not str(result).startswith(tolerate):
                        raise result
                return value, results
            except redis.WatchError:
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
            finally:
                pipe.reset()
