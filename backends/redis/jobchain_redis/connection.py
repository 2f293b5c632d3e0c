"""What both Redis backends share: URL parsing, the server clock, WATCH/MULTI/EXEC and error conversion.

URL form: ``redis-lists://[user:password@]host:port/db?prefix=app&socket_timeout=5``
(``rediss-lists://`` for TLS). Query options jobchain reads itself are
``prefix`` (key prefix, default ``jobchain``) and ``band`` (band width in
aging intervals); every other option (``socket_timeout``,
``socket_connect_timeout``, ``max_connections``, ``ssl_ca_certs`` …) goes to
redis-py's connection pool.

Sentinel form: ``redis-lists+sentinel://[user:password@]host:26379,host2:26379/mymaster/0``
(also ``redis-streams+sentinel://``, and ``rediss-…+sentinel://`` for TLS to
the Sentinels and the data nodes). The hosts are the Sentinels (port 26379
unless given), the path names the master's service and the db. The user and
password are the data nodes'; ``sentinel_username`` and ``sentinel_password``
are the Sentinels' own, and ``master_check`` (seconds, default 1, 0 for never)
is how often a client in use asks the Sentinels whether the master moved (see
:mod:`jobchain_redis.sentinel`). The other options are as for the plain URL.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobchain.errors import BackendError, BackendUnavailableError, ConfigurationError
from jobchain_redis.sentinel import DEFAULT_MASTER_CHECK, FollowingPool, master_client

__all__ = [
    "ParsedUrl",
    "Pipe",
    "ServerClock",
    "Transaction",
    "boundary",
    "connect",
    "parse_url",
    "public_url",
    "transact",
]

#: a redis-py pipeline; its replies are typed as sync/async unions, so it is handled as Any
Pipe: TypeAlias = Any

P = ParamSpec("P")
R = TypeVar("R")

#: seconds a connection attempt may take unless the URL says otherwise (socket_connect_timeout)
DEFAULT_CONNECT_TIMEOUT = 5.0

#: query options that jobchain reads itself; the rest go to redis-py
_OWN_OPTIONS = ("prefix", "band", "eviction", "result_ttl", "orphan_idle")
#: query options of a ``+sentinel`` URL that are not the data nodes' (see the module's docstring)
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "master_check")
#: query options whose values ``public_url`` hides
_SECRET_OPTIONS = ("password", "sentinel_password")
_SENTINEL_PORT = 26379


class ParsedUrl:
    """A backend URL split into the redis-py URL and jobchain's own options.

    For a ``+sentinel`` URL, ``sentinels`` lists the Sentinels' ``(host, port)``
    and ``service`` names the master; ``redis_url`` then carries the data
    nodes' credentials, db and options with a placeholder host, and
    ``sentinel_options`` the options for the Sentinel connections.
    """

    def __init__(self, url: str) -> None:
        self.public = public_url(url)
        parts = urlsplit(url)
        base, _, topology = parts.scheme.lower().partition("+")
        if (
            topology not in ("", "sentinel")
            or not base.endswith(("-lists", "-streams"))
            or not base.startswith(("redis", "rediss"))
        ):
            raise ConfigurationError(f"not a Redis backend URL: {self.public!r}")
        self.tls = base.startswith("rediss")
        query = parse_qsl(parts.query, keep_blank_values=True)
        self.options: dict[str, str] = {k: v for k, v in query if k in _OWN_OPTIONS}
        sentinel = topology == "sentinel"
        self.sentinel_options: dict[str, str] = {
            k: v for k, v in query if sentinel and k in _SENTINEL_OPTIONS
        }
        rest = [(k, v) for k, v in query if k not in _OWN_OPTIONS and k not in self.sentinel_options]
        self.sentinels: tuple[tuple[str, int], ...] = ()
        self.service: str | None = None
        netloc, path = parts.netloc or "localhost:6379", parts.path
        if sentinel:
            userinfo, _, hosts = parts.netloc.rpartition("@")
            self.sentinels = _sentinel_hosts(hosts, self.public)
            self.service, db = _service_and_db(parts.path, self.public)
            netloc = f"{userinfo}@localhost" if userinfo else "localhost"
            path = f"/{db}"
        self.redis_url = urlunsplit(("rediss" if self.tls else "redis", netloc, path, urlencode(rest), ""))


def _sentinel_hosts(hosts: str, public: str) -> tuple[tuple[str, int], ...]:
    """``host:26379,[::1]:26380,host3`` as ``(host, port)`` pairs."""
    found: list[tuple[str, int]] = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        if item.startswith("["):  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        try:
            number = int(port) if port else _SENTINEL_PORT
        except ValueError:
            number = -1
        if not host or not 0 < number < 65536:
            raise ConfigurationError(f"bad Sentinel address {item!r} in {public!r}")
        found.append((unquote(host), number))
    if not found:
        raise ConfigurationError(f"a +sentinel URL lists the Sentinels as host:port,host:port: {public!r}")
    return tuple(found)


def _service_and_db(path: str, public: str) -> tuple[str, int]:
    """``/mymaster/0`` as ``("mymaster", 0)``; the db defaults to 0."""
    segments = path.strip("/").split("/") if path.strip("/") else []
    if not 1 <= len(segments) <= 2 or not segments[0]:
        raise ConfigurationError(
            f"a +sentinel URL's path is /SERVICE or /SERVICE/DB (the master's name in the Sentinels' "
            f"configuration): {public!r}"
        )
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ConfigurationError(f"the db in a +sentinel URL is a number: {public!r}")
    return unquote(segments[0]), int(db)


def connect(parsed: ParsedUrl) -> redis.Redis:
    """A client (``decode_responses=True``) of the URL's server, or of the master the Sentinels name."""
    if parsed.service is None:
        # One quick retry (a pooled connection that died with a restarted server), then the error: a
        # worker backs off itself, where redis-py's default ten retries would stall every call of an
        # outage for seconds. A connect timeout, so a host that drops packets does not hang a call;
        # both are defaults that the URL's own options override.
        return redis.Redis.from_url(
            parsed.redis_url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT,
        )
    try:
        parse: Any = redis.connection.parse_url  # untyped in redis-py
        node: dict[str, Any] = parse(parsed.redis_url)
        check = float(parsed.sentinel_options.get("master_check", DEFAULT_MASTER_CHECK))
    except ValueError as exc:
        raise ConfigurationError(f"{exc} ({parsed.public!r})") from None
    if not check >= 0:
        raise ConfigurationError(f"master_check is a number of seconds >= 0: {parsed.public!r}")
    for placeholder in ("host", "port", "connection_class"):
        node.pop(placeholder, None)
    sentinel_options = {
        k[len("sentinel_") :]: v for k, v in parsed.sentinel_options.items() if k != "master_check"
    }
    return master_client(
        parsed.sentinels,
        parsed.service,
        node,
        tls=parsed.tls,
        sentinel_options=sentinel_options,
        master_check=check,
    )


def parse_url(url: str) -> ParsedUrl:
    return ParsedUrl(url)


def public_url(url: str) -> str:
    """``url`` with its passwords (``user:password@``, ``sentinel_password=``) replaced by ``***``."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k in _SECRET_OPTIONS for k, _ in pairs):
        query = urlencode([(k, "***" if k in _SECRET_OPTIONS else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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


#: the error codes of a server that is not (or no longer) a master taking writes: a failover is under way;
#: redis-py prefixes an error inside a pipeline with "Command # N (…) of pipeline caused error: "
_NOT_MASTER = re.compile(r"(?:^|caused error: )(?:READONLY|NOREPLICAS|MASTERDOWN)\b")


def _not_master(exc: redis.RedisError) -> bool:
    if isinstance(exc, redis.exceptions.ReadOnlyError | redis.exceptions.MasterDownError):
        return True
    return isinstance(exc, redis.ResponseError) and _NOT_MASTER.search(str(exc)) is not None


def _drop_connections(backend: object) -> None:
    """Close the idle connections of ``backend``'s client, and re-ask the Sentinels for the master."""
    pool = getattr(getattr(backend, "client", None), "connection_pool", None)
    if isinstance(pool, FollowingPool):
        pool.recheck()
    if isinstance(pool, redis.ConnectionPool):
        pool.disconnect(inuse_connections=False)


def boundary(method: Callable[P, R]) -> Callable[P, R]:
    """Convert redis-py errors into jobchain's at the backend's public methods.

    A server that refuses writes because it is not a master (``READONLY``: a
    demoted master; ``NOREPLICAS``: a master whose replica was just promoted)
    is unavailable, not an error: the connections are dropped, so the next
    call asks the Sentinels again and finds the new master.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            pool = getattr(getattr(args[0], "client", None), "connection_pool", None)
            if isinstance(pool, FollowingPool):  # the master may have moved: ask before the next call
                pool.recheck()
            url = getattr(args[0], "url", "redis")
            raise BackendUnavailableError(url, f"{type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            if _not_master(exc):
                _drop_connections(args[0])
                url = getattr(args[0], "url", "redis")
                raise BackendUnavailableError(url, f"not a master (failover?): {exc}") from exc
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
