"""Safety at connect: Redis' eviction policy checked once, and a full Redis reported clearly.

**Eviction.** A Redis whose ``maxmemory-policy`` is anything but
``noeviction`` deletes keys when it reaches ``maxmemory``: queued jobs,
chain records, results, the failed queue. The backend reads the policy
(``CONFIG GET maxmemory-policy``) before its first submit or reservation and,
by the URL option ``?eviction=``:

* ``warn`` (the default) logs ``redis_eviction_policy_unsafe`` (a structlog
  warning naming the policy and what can be lost) and carries on;
* ``refuse`` raises :class:`~jobchain.ConfigurationError` from every submit and
  reservation of that backend;
* ``ignore`` does not look.

A server that does not let the client read its configuration (an ACL without
``+config|get``, a managed Redis that renames ``CONFIG``) is logged as
``redis_eviction_policy_unchecked`` and used as it is, under ``refuse`` too. A
server that cannot be reached is checked at the next call instead.

**Out of memory.** Under ``noeviction`` a full Redis answers writes with
``OOM command not allowed``. Every write of the backends is a MULTI/EXEC, and
Redis discards a transaction in which any command was refused (``EXECABORT``),
so nothing of it is applied. :func:`refuse_oom` turns that answer into
:class:`~jobchain.BackendFullError`, saying what to do.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis
import redis.cluster
import structlog

from jobchain.errors import BackendFullError, ConfigurationError

__all__ = ["EVICTION_MODES", "EvictionCheck", "is_oom", "oom_error", "refuse_oom"]

logger = structlog.get_logger("jobchain.redis")

P = ParamSpec("P")
R = TypeVar("R")

#: the values of the URL option ``eviction``
EVICTION_MODES = ("warn", "refuse", "ignore")
#: the one policy under which Redis never deletes a key on its own
SAFE_POLICY = "noeviction"
_OOM = "command not allowed when used memory"


class EvictionCheck:
    """Reads ``maxmemory-policy`` once (until it could be read) and warns or refuses per ``mode``."""

    def __init__(self, mode: str, url: str, prefix: str) -> None:
        if mode not in EVICTION_MODES:
            raise ConfigurationError(
                f"eviction={mode!r} in {url}: expected one of {', '.join(EVICTION_MODES)}"
            )
        self.mode = mode
        self.url = url
        self.prefix = prefix
        #: the policy read, once read (None until then, or if it could not be read)
        self.policy: str | None = None
        self._done = mode == "ignore"
        self._refusal: ConfigurationError | None = None
        self._lock = threading.Lock()

    @property
    def checked(self) -> bool:
        """True once the policy was read (or need not be): :meth:`ensure` then does no I/O."""
        return self._done

    def ensure(self, client: Any) -> None:
        """Check the policy if not done yet; raise the refusal under ``refuse``.

        redis-py's connection errors propagate (the caller's boundary converts
        them), and the check runs again at the next call.
        """
        if not self._done:
            with self._lock:
                if not self._done:
                    self._check(client)
                    self._done = True
        if self._refusal is not None:
            raise self._refusal

    def _check(self, client: Any) -> None:
        try:
            reply = _config(client)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except redis.ResponseError as exc:  # NOPERM under an ACL, or CONFIG renamed away
            logger.warning(
                "redis_eviction_policy_unchecked",
                url=self.url,
                reason=str(exc),
                hint="give the user +config|get, or make sure the server runs maxmemory-policy noeviction",
            )
            return
        policy = str(reply.get("maxmemory-policy", "")) or None
        self.policy = policy
        if policy is None or policy == SAFE_POLICY:
            return
        maxmemory = int(reply.get("maxmemory", 0) or 0)
        what = (
            f"keys with a TTL, such as the results of finished jobs under '{self.prefix}:'"
            if policy.startswith("volatile-")
            else f"any key: queued jobs, chain records, results, failed jobs under '{self.prefix}:'"
        )
        limit = f"maxmemory {maxmemory} bytes" if maxmemory else "no maxmemory set yet"
        message = (
            f"Redis at {self.url} runs maxmemory-policy {policy} ({limit}): when full it evicts {what}, "
            "and evicted jobs are lost without a trace. Set maxmemory-policy noeviction on the server "
            "(a full Redis then refuses new submits instead)"
        )
        if self.mode == "refuse":
            self._refusal = ConfigurationError(f"{message}, or open the backend with ?eviction=warn")
            logger.error("redis_eviction_policy_refused", url=self.url, policy=policy, maxmemory=maxmemory)
            return
        logger.warning(
            "redis_eviction_policy_unsafe",
            url=self.url,
            policy=policy,
            maxmemory=maxmemory,
            can_lose=what,
            hint="CONFIG SET maxmemory-policy noeviction (and in redis.conf); ?eviction=refuse to refuse",
        )


def _config(client: Any) -> dict[str, Any]:
    """``maxmemory-policy`` and ``maxmemory``; on a Cluster, of the first master whose policy can evict."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return dict(client.config_get("maxmemory-policy", "maxmemory"))
    primaries: Any = redis.cluster.RedisCluster.PRIMARIES
    replies: Any = client.config_get("maxmemory-policy", "maxmemory", target_nodes=primaries)
    if not isinstance(replies, dict):
        return {}
    # keyed by node, unless the cluster has a single master (its reply as it is)
    per_node = all(isinstance(reply, dict) for reply in replies.values())
    masters: list[dict[str, Any]] = [dict(r) for r in replies.values()] if per_node else [dict(replies)]
    unsafe = [reply for reply in masters if reply.get("maxmemory-policy") != SAFE_POLICY]
    return (unsafe or masters or [{}])[0]


def is_oom(exc: BaseException) -> bool:
    """True for Redis' refusal of a write because maxmemory is reached (also inside an EXECABORT)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and _OOM in str(exc)
    )


def oom_error(url: str) -> BackendFullError:
    """The error of a write Redis refused for want of memory (nothing of it was stored)."""
    return BackendFullError(
        url,
        f"Redis at {url} is out of memory (maxmemory reached, policy noeviction) and refused "
        "the write; nothing of it was stored. Let workers drain the queues, purge the failed "
        "queue (jobchain failed purge) or raise maxmemory, then submit again",
    )


def refuse_oom(method: Callable[P, R]) -> Callable[P, R]:
    """Turn Redis' OOM answer into :class:`BackendFullError` (place it under ``@boundary``)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.ResponseError as exc:
            if not is_oom(exc):
                raise
            raise oom_error(str(getattr(args[0], "url", "redis"))) from exc

    return wrapper
