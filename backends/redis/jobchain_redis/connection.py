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

Cluster form: ``redis-lists+cluster://[user:password@]host:7000,host:7001/0``
(also ``redis-streams+cluster://``, ``rediss-…+cluster://``). The hosts are
any of the cluster's nodes (port 6379 unless given); the rest of the cluster
is discovered from them. The db is 0 (a Cluster has no other). Keys take the
spread layout (one hash tag per queue, see :mod:`jobchain_redis.keys`), and
each transaction runs on the master of its slot, following ``MOVED`` and
``ASK`` and waiting out ``TRYAGAIN`` while a slot migrates
(:class:`ClusterRoute`).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ClusterDownError, MovedError, SlotNotCoveredError, TryAgainError
from redis.retry import Retry

from jobchain.errors import BackendError, BackendUnavailableError, ConfigurationError
from jobchain_redis.sentinel import DEFAULT_MASTER_CHECK, FollowingPool, master_client

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
_REDIS_PORT = 6379
#: seconds a transaction waits out a slot in migration (TRYAGAIN) or a cluster without a quorum
_UNSTABLE_WAIT = 10.0


class ParsedUrl:
    """A backend URL split into the redis-py URL and jobchain's own options.

    For a ``+sentinel`` URL, ``sentinels`` lists the Sentinels' ``(host, port)``
    and ``service`` names the master; ``redis_url`` then carries the data
    nodes' credentials, db and options with a placeholder host, and
    ``sentinel_options`` the options for the Sentinel connections. For a
    ``+cluster`` URL, ``cluster_nodes`` lists the startup nodes and
    ``redis_url`` carries the credentials and options the same way.
    """

    def __init__(self, url: str) -> None:
        self.public = public_url(url)
        parts = urlsplit(url)
        base, _, topology = parts.scheme.lower().partition("+")
        if (
            topology not in ("", "sentinel", "cluster")
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
        self.cluster_nodes: tuple[tuple[str, int], ...] = ()
        self.service: str | None = None
        netloc, path = parts.netloc or "localhost:6379", parts.path
        userinfo, _, hosts = parts.netloc.rpartition("@")
        if sentinel:
            self.sentinels = _hosts(hosts, self.public, _SENTINEL_PORT, "Sentinel")
            self.service, db = _service_and_db(parts.path, self.public)
            netloc = f"{userinfo}@localhost" if userinfo else "localhost"
            path = f"/{db}"
        elif topology == "cluster":
            self.cluster_nodes = _hosts(hosts, self.public, _REDIS_PORT, "cluster node")
            if parts.path.strip("/") not in ("", "0"):
                raise ConfigurationError(f"a Redis Cluster has only db 0: {self.public!r}")
            netloc = f"{userinfo}@localhost" if userinfo else "localhost"
            path = ""
        self.redis_url = urlunsplit(("rediss" if self.tls else "redis", netloc, path, urlencode(rest), ""))


def _hosts(hosts: str, public: str, default_port: int, kind: str) -> tuple[tuple[str, int], ...]:
    """``host:26379,[::1]:26380,host3`` as ``(host, port)`` pairs."""
    found: list[tuple[str, int]] = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        if item.startswith("["):  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        try:
            number = int(port) if port else default_port
        except ValueError:
            number = -1
        if not host or not 0 < number < 65536:
            raise ConfigurationError(f"bad {kind} address {item!r} in {public!r}")
        found.append((unquote(host), number))
    if not found:
        raise ConfigurationError(f"the URL lists the {kind}s as host:port,host:port: {public!r}")
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


def connect(parsed: ParsedUrl) -> redis.Redis | redis.cluster.RedisCluster:
    """A client (``decode_responses=True``) of the server, of the Sentinels' master, or of the Cluster."""
    if parsed.cluster_nodes:
        return _connect_cluster(parsed)
    if parsed.service is None:
        # One quick retry (a pooled connection that died with a restarted server), then the error: a
        # worker backs off itself, where redis-py's default ten retries would stall every call of an
        # outage for seconds. A connect timeout, so a host that drops packets does not hang a call;
        # both are defaults that the URL's own options override.
        return redis.Redis.from_url(
            parsed.redis_url,
            decode_responses=True,
            encoding_errors="surrogateescape",
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


def _connect_cluster(parsed: ParsedUrl) -> redis.cluster.RedisCluster:
    try:
        parse: Any = redis.connection.parse_url  # untyped in redis-py
        options: dict[str, Any] = parse(parsed.redis_url)
    except ValueError as exc:
        raise ConfigurationError(f"{exc} ({parsed.public!r})") from None
    for placeholder in ("host", "port", "db", "connection_class"):
        options.pop(placeholder, None)
    if parsed.tls:
        options["ssl"] = True
    options.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    nodes = [_node(host, port) for host, port in parsed.cluster_nodes]
    try:
        return redis.cluster.RedisCluster(
            startup_nodes=nodes,
            decode_responses=True,
            encoding_errors="surrogateescape",
            retry=Retry(NoBackoff(), 1),
            **options,
        )
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
        raise BackendUnavailableError(parsed.public, f"no node of the cluster answered: {exc}") from exc


def decode_tolerantly(client: redis.Redis | redis.cluster.RedisCluster) -> None:
    """Make a decoding client read bytes that are not UTF-8 as lone surrogates instead of raising.

    A strict decoder raises ``UnicodeDecodeError`` in the middle of a reply (a
    pipeline's, an EXEC's), so one bad byte in a job's hash would stop every
    reservation that reads it. With ``surrogateescape`` the reply arrives
    whole and the backend judges each value (:func:`jobchain_redis.codec.check`).
    A client given by the caller is switched too (its pool is reset, so every
    connection is made anew with the setting).
    """
    target: Any = client
    kwargs_list: list[dict[str, Any]] = []
    pools: list[Any] = []
    if isinstance(client, redis.cluster.RedisCluster):
        kwargs_list.append(target.nodes_manager.connection_kwargs)
        for node in target.get_nodes():
            if node.redis_connection is not None:
                pools.append(node.redis_connection.connection_pool)
    else:
        pools.append(target.connection_pool)
    kwargs_list += [pool.connection_kwargs for pool in pools]
    changed = False
    for kwargs in kwargs_list:
        if kwargs.get("decode_responses") and kwargs.get("encoding_errors", "strict") == "strict":
            kwargs["encoding_errors"] = "surrogateescape"
            changed = True
    if changed:
        for pool in pools:
            pool.reset()


def _node(host: str, port: int) -> Any:
    make: Any = redis.cluster.ClusterNode  # untyped in redis-py
    return make(host, port)


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
    call asks the Sentinels again and finds the new master. So is a Cluster
    that lost a master (``CLUSTERDOWN``) or a slot still mid-migration when
    :class:`ClusterRoute` stopped waiting (``TRYAGAIN``).
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
            if isinstance(exc, ClusterDownError | TryAgainError | SlotNotCoveredError):
                url = getattr(args[0], "url", "redis")  # a Cluster without a quorum, or a slot mid-move
                raise BackendUnavailableError(url, f"{type(exc).__name__}: {exc}") from exc
            raise BackendError(f"Redis error: {type(exc).__name__}: {exc}") from exc

    return wrapper


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

    def read(self, queue_reads: Callable[[Pipe], object]) -> list[Any]:
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
            conn.send_packed_command(conn.pack_commands(commands))
            if watch:
                self._asked(conn)
                pipe.parse_response(conn, "WATCH")
                pipe.watching = True  # reset() then sends UNWATCH if the transaction stops short
            for args, options in reads:
                self._asked(conn)
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
    with client.pipeline(transaction=True) as pipe:
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
                target = cluster.get_node(host=exc.host, port=exc.port) or _node(exc.host, exc.port)
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
