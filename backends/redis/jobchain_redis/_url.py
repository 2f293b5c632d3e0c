"""Backend URLs: parsing, jobchain's own options, and the client a URL names.

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
(:class:`jobchain_redis.connection.ClusterRoute`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.cluster
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobchain.errors import BackendAuthError, BackendUnavailableError, ConfigurationError
from jobchain_redis.sentinel import DEFAULT_MASTER_CHECK, master_client

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "ParsedUrl",
    "cluster_node",
    "connect",
    "decode_tolerantly",
    "number_option",
    "parse_url",
    "public_url",
    "warn_unverified_tls",
]

logger = structlog.get_logger("jobchain.redis")

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
    nodes = [cluster_node(host, port) for host, port in parsed.cluster_nodes]
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


def cluster_node(host: str, port: int) -> Any:
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
