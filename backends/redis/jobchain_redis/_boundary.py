"""The error boundary: redis-py errors become jobchain's at a backend's public methods.

:func:`boundary` wraps each public method of a Redis backend; the server's
answers are sorted there into an outage (connection lost, not a master,
cluster down: :class:`~jobchain.errors.BackendUnavailableError`), refused
credentials (:class:`~jobchain.errors.BackendAuthError`) and errors
(:class:`~jobchain.errors.BackendError`, naming a key of the wrong type).
:func:`wrong_type` reads the key out of a ``WRONGTYPE`` error.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import redis
import structlog
from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError

from jobchain.errors import BackendAuthError, BackendError, BackendUnavailableError
from jobchain_redis.sentinel import FollowingPool

__all__ = ["boundary", "converted", "wrong_type"]

logger = structlog.get_logger("jobchain.redis")

P = ParamSpec("P")
R = TypeVar("R")


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
            raise converted(args[0], method.__name__, exc) from exc

    return wrapper


def converted(backend: object, operation: str, exc: redis.RedisError) -> BackendError:
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
