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
import difflib
import functools
import inspect
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.cluster
import structlog
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ClusterDownError, MovedError, SlotNotCoveredError, TryAgainError
from redis.retry import Retry

from jobchain.errors import BackendAuthError, BackendError, BackendUnavailableError, ConfigurationError
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
    "number_option",
    "parse_url",
    "public_url",
    "transact",
    "wrong_type",
]

logger = structlog.get_logger("jobchain.redis")

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
#: query options of a ``+cluster`` URL that go to redis-py's cluster client rather than to each connection
_CLUSTER_OPTIONS = ("read_from_replicas", "require_full_coverage", "reinitialize_steps")
#: query options naming files (TLS): checked to exist, so a typo is named rather than reported as "Error 2"
_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
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
        if not topology:
            try:
                _ = parts.port
            except ValueError:
                raise ConfigurationError(
                    f"bad port in {self.public!r}: a port is a number from 1 to 65535"
                ) from None
        query = parse_qsl(parts.query, keep_blank_values=True)
        _check_options(query, self.public, topology=topology, tls=self.tls)
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


#: redis-py options listed in the error about an unknown one (it takes every option of its connections)
_USUAL_OPTIONS = (
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "max_connections",
    "health_check_interval",
    "client_name",
    "username",
    "password",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)


@functools.cache
def _redis_options() -> frozenset[str]:
    """The connection options redis-py takes (the parameters of its connection and pool classes)."""
    names: set[str] = set()
    for cls in (redis.connection.Connection, redis.connection.SSLConnection, redis.ConnectionPool):
        for klass in inspect.getmro(cls):
            init = vars(klass).get("__init__")
            if init is not None:
                with contextlib.suppress(TypeError, ValueError):
                    names.update(inspect.signature(init).parameters)
    parsers: Any = getattr(redis.connection, "URL_QUERY_ARGUMENT_PARSERS", {})
    names.update(parsers)
    return frozenset(names - {"self", "args", "kwargs", "host", "port", "path", "connection_class"})


def _shown_options(own: tuple[str, ...]) -> str:
    """The options worth listing in an error: jobchain's own and redis-py's usual ones."""
    return f"jobchain's {', '.join(own)}; redis-py's {', '.join(_USUAL_OPTIONS)} …"


def _check_options(query: list[tuple[str, str]], public: str, *, topology: str, tls: bool) -> None:
    """Refuse an option neither jobchain nor redis-py knows, and a TLS file that does not exist."""
    own = _OWN_OPTIONS + (_SENTINEL_OPTIONS if topology == "sentinel" else ())
    known = _redis_options() | set(own) | (set(_CLUSTER_OPTIONS) if topology == "cluster" else set())
    for name, value in query:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"unknown option {name!r} in {public!r}{guess} Options: {_shown_options(own)}"
            )
        if name.startswith("ssl_") and not tls and not name.startswith("sentinel_"):
            raise ConfigurationError(
                f"option {name!r} is for TLS, and {public!r} is not a TLS URL: use rediss-lists:// or "
                "rediss-streams://"
            )
        if name in _FILE_OPTIONS and value and not os.path.exists(value):
            raise ConfigurationError(f"{name}={value!r} in {public!r}: no such file")


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


def warn_unverified_tls(parsed: ParsedUrl) -> None:
    """Log a warning when TLS is asked not to check the server's certificate (``ssl_cert_reqs=none``)."""
    query = dict(parse_qsl(urlsplit(parsed.redis_url).query, keep_blank_values=True))
    reqs = query.get("ssl_cert_reqs", "").strip().lower()
    if parsed.tls and reqs in ("none", "cert_none", "optional", "cert_optional"):
        logger.warning(
            "tls_certificate_not_verified",
            url=parsed.public,
            ssl_cert_reqs=query["ssl_cert_reqs"],
            hint="anyone on the network path can impersonate the server and read or forge jobs; "
            "give the server's CA with ssl_ca_certs=/path/ca.pem instead (docs/security.md)",
        )


def connect(parsed: ParsedUrl) -> redis.Redis | redis.cluster.RedisCluster:
    """A client (``decode_responses=True``) of the server, of the Sentinels' master, or of the Cluster."""
    warn_unverified_tls(parsed)
    if parsed.cluster_nodes:
        return _connect_cluster(parsed)
    if parsed.service is None:
        # One quick retry (a pooled connection that died with a restarted server), then the error: a
        # worker backs off itself, where redis-py's default ten retries would stall every call of an
        # outage for seconds. A connect timeout, so a host that drops packets does not hang a call;
        # both are defaults that the URL's own options override.
        try:
            return redis.Redis.from_url(
                parsed.redis_url,
                decode_responses=True,
                encoding_errors="surrogateescape",
                retry=Retry(NoBackoff(), 1),
                socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT,
            )
        except ValueError as exc:  # an option's value redis-py cannot parse (socket_timeout=abc …)
            raise ConfigurationError(f"{exc} ({parsed.public!r})") from None
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
    except redis.AuthenticationError as exc:
        raise BackendAuthError(parsed.public, str(exc)) from exc
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


def number_option(
    options: dict[str, str], name: str, default: float, what: str, *, zero: bool = False
) -> float:
    """A numeric URL option (``band``, ``orphan_idle`` …): > 0, or >= 0 with ``zero``; else an error."""
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{name}={raw!r} in the backend URL: expected {what}, a number {bound}")
    return value


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


#: the error codes of a server that refuses the client's credentials or its user's permissions (ACL)
_AUTH_REFUSED = re.compile(r"(?:^|caused error: )(?:NOAUTH|WRONGPASS|NOPERM)\b")
#: the error of a command on a key of another type; redis-py names the command in a pipeline's error
_WRONGTYPE = re.compile(r"(?:^|caused error: )WRONGTYPE\b")
_PIPELINE_COMMAND = re.compile(r"^Command # \d+ \((\S+) (\S+)")
_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ")


def _auth_refused(exc: redis.RedisError) -> bool:
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return True
    return isinstance(exc, redis.ResponseError) and _AUTH_REFUSED.search(str(exc)) is not None


def wrong_type(exc: BaseException, key: str | None = None) -> str | None:
    """For a ``WRONGTYPE`` error, the key the failing command named; None for any other error.

    The key is read from the error (a pipeline's, or one :meth:`Transaction.read`
    marked), else ``key`` (the caller's knowledge), else "?".
    """
    if not isinstance(exc, redis.ResponseError) or _WRONGTYPE.search(str(exc)) is None:
        return None
    named = _PIPELINE_COMMAND.match(str(exc))
    if named:
        return named.group(2)
    return str(getattr(exc, "jobchain_key", None) or key or "?")


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

    Credentials or permissions refused (``AuthenticationError``, ``NOAUTH``,
    ``WRONGPASS``, ``NOPERM``) are a :class:`BackendAuthError`, never an
    outage: waiting does not fix a password. A key holding another type than
    jobchain's layout says (``WRONGTYPE``) is a :class:`BackendError` naming
    the key, also logged.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise _converted(args[0], method.__name__, exc) from exc

    return wrapper


def _converted(backend: object, operation: str, exc: redis.RedisError) -> BackendError:
    """The jobchain error of a redis-py error raised by ``backend``'s ``operation``."""
    url = getattr(backend, "url", "redis")
    if _auth_refused(exc):  # before ConnectionError: redis-py derives AuthenticationError from it
        return BackendAuthError(url, _PIPELINE_PREFIX.sub("", str(exc)))
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        pool = getattr(getattr(backend, "client", None), "connection_pool", None)
        if isinstance(pool, FollowingPool):  # the master may have moved: ask before the next call
            pool.recheck()
        return BackendUnavailableError(url, f"{type(exc).__name__}: {exc}")
    if _not_master(exc):
        _drop_connections(backend)
        return BackendUnavailableError(url, f"not a master (failover?): {exc}")
    if isinstance(exc, ClusterDownError | TryAgainError | SlotNotCoveredError):
        return BackendUnavailableError(url, f"{type(exc).__name__}: {exc}")  # no quorum, or a slot mid-move
    key = wrong_type(exc)
    if key is not None:
        logger.error("redis_key_wrong_type", key=key, operation=operation, url=url, error=str(exc))
        return BackendError(
            f"Redis key {key!r} holds a value of the wrong type ({operation} on {url}): it was not written "
            "by jobchain; rename or delete it"
        )
    return BackendError(f"Redis error: {type(exc).__name__}: {exc}")


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
