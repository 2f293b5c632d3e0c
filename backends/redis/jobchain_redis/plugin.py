"""The entry point of ``jobchain-redis``: registers the Redis backends' URL schemes."""

from __future__ import annotations

from jobchain import hookimpl
from jobchain.registry import BackendRegistry
from jobchain_redis.lists import ListsBackend
from jobchain_redis.streams import StreamsBackend

__all__ = ["jobchain_register_backends"]


@hookimpl
def jobchain_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        "redis-lists",
        ListsBackend.from_url,
        summary="Redis lists: reliable queue with per-worker processing lists, MULTI/EXEC transitions",
    )
    registry.add("rediss-lists", ListsBackend.from_url, summary="redis-lists over TLS")
    registry.add(
        "redis-streams",
        StreamsBackend.from_url,
        summary="Redis streams: a stream per queue and band, one consumer group, MULTI/EXEC transitions",
    )
    registry.add("rediss-streams", StreamsBackend.from_url, summary="redis-streams over TLS")
    # Sentinel: host:26379,host2:26379/SERVICE/DB; the master is found through the Sentinels
    registry.add(
        "redis-lists+sentinel",
        ListsBackend.from_url,
        summary="redis-lists on the master a Sentinel group names; follows failovers",
    )
    registry.add("rediss-lists+sentinel", ListsBackend.from_url, summary="redis-lists+sentinel over TLS")
    registry.add(
        "redis-streams+sentinel",
        StreamsBackend.from_url,
        summary="redis-streams on the master a Sentinel group names; follows failovers",
    )
    registry.add(
        "rediss-streams+sentinel", StreamsBackend.from_url, summary="redis-streams+sentinel over TLS"
    )
