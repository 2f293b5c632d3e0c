"""Redis Sentinel: a client whose connections go to the master the Sentinels name, and follow a failover.

redis-py's :class:`redis.sentinel.SentinelConnectionPool` asks the Sentinels
for the master's address each time it opens a connection, and drops a
connection that answers ``READONLY`` (its server was demoted). Two things are
added here, both about the seconds after a failover:

* **The newest view wins.** The Sentinels learn of a failover one after the
  other (the leader at once, the others from its hello messages, within about
  two seconds). :class:`SentinelGroup` asks every Sentinel and takes the
  address with the highest ``config-epoch``, where redis-py takes the first
  Sentinel that answers.
* **Connections that stay open are re-checked.** A connection that never
  fails never asks the Sentinels again, and the old master keeps accepting
  writes until the Sentinels reconfigure it (several seconds after the
  failover). :class:`FollowingPool` looks the master up again at most every
  ``master_check`` seconds when it hands out a connection, and at once after
  :meth:`FollowingPool.recheck` (the backends call it on ``READONLY`` or
  ``NOREPLICAS``); when the address changed, the idle connections are closed
  and the busy ones are dropped when they come back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

__all__ = ["DEFAULT_MASTER_CHECK", "FollowingPool", "SentinelGroup", "master_client"]

#: seconds between two look-ups of the master's address by a pool in use
DEFAULT_MASTER_CHECK = 1.0
#: the Sentinel connections' socket timeouts, unless the URL sets socket_timeout/socket_connect_timeout
DEFAULT_SENTINEL_TIMEOUT = 2.0


class SentinelGroup(Sentinel):
    """The Sentinels of one deployment; the master's address is the one with the newest configuration."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        best: tuple[int, tuple[str, int]] | None = None
        errors: list[str] = []
        for sentinel in self.sentinels:
            try:
                masters: Any = sentinel.sentinel_masters()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                errors.append(f"{_address(sentinel)}: {exc}")
                continue
            state = masters.get(service_name)
            if not state or not _checker(self)(state, service_name):
                continue
            epoch = int(state.get("config-epoch", 0))
            if best is None or epoch > best[0]:
                best = (epoch, (str(state["ip"]), int(state["port"])))
        if best is None:
            detail = f" ({'; '.join(errors)})" if errors else ""
            raise MasterNotFoundError(f"no Sentinel names a master for {service_name!r}{detail}")
        return best[1]


class FollowingPool(SentinelConnectionPool):
    """A master's connection pool that re-checks the master's address while it is in use."""

    def __init__(
        self,
        service_name: str,
        sentinel_manager: SentinelGroup,
        *,
        master_check: float = DEFAULT_MASTER_CHECK,
        **kwargs: Any,
    ) -> None:
        _untyped(super().__init__)(service_name, sentinel_manager, **kwargs)
        self.master_check = master_check
        self._checked = time.monotonic()
        self._check_lock = threading.Lock()

    def recheck(self) -> None:
        """Look the master up again before the next connection is handed out."""
        self._checked = float("-inf")

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.master_check > 0 and time.monotonic() - self._checked >= self.master_check:
            self._check_master()
        return super().get_connection(*args, **kwargs)

    def _check_master(self) -> None:
        # one thread checks; the others go on with the address they know
        if not self._check_lock.acquire(blocking=False):
            return
        try:
            self._checked = time.monotonic()
            # closes the idle connections if the address changed (redis-py's proxy does it)
            _untyped(self.get_master_address)()
        except redis.RedisError:
            pass  # no Sentinel answered: the connection in hand says whether the master is there
        finally:
            self._check_lock.release()

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        if inuse_connections:  # closing the client: the Sentinel connections go too (reopened on demand)
            self.sentinel_manager.close()


def master_client(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    node: Mapping[str, Any],
    *,
    tls: bool,
    sentinel_options: Mapping[str, Any],
    master_check: float = DEFAULT_MASTER_CHECK,
) -> redis.Redis:
    """A client (``decode_responses=True``) of the master of ``service``, found through ``sentinels``.

    ``node`` holds the data nodes' connection options (db, username, password,
    socket timeouts …). The Sentinel connections take the socket and TLS
    options from it, and ``sentinel_options`` (username, password) of their own.
    """
    own: dict[str, Any] = {
        k: v for k, v in node.items() if k.startswith("socket_") or (tls and k.startswith("ssl_"))
    }
    own.setdefault("socket_timeout", DEFAULT_SENTINEL_TIMEOUT)
    own.setdefault("socket_connect_timeout", DEFAULT_SENTINEL_TIMEOUT)
    own.update(sentinel_options)
    if tls:
        own["ssl"] = True
    # the group asks every Sentinel and goes on past one that is down: no retrying inside redis-py
    own["retry"] = Retry(NoBackoff(), 0)
    group: Any = _untyped(SentinelGroup)(list(sentinels), sentinel_kwargs=own)
    client: redis.Redis = group.master_for(
        service,
        connection_pool_class=FollowingPool,
        master_check=master_check,
        decode_responses=True,
        ssl=tls,
        **node,
    )
    return client


def _untyped(function: Any) -> Any:
    """``function`` as Any: redis-py's Sentinel classes have no annotations."""
    return function


def _checker(group: SentinelGroup) -> Any:
    return _untyped(group.check_master_state)


def _address(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"
