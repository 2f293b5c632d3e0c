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
    # Cluster: host:7000,host2:7000[/0]; a hash tag per queue, each transaction on its slot's master
    registry.add(
        "redis-lists+cluster",
        ListsBackend.from_url,
        summary="redis-lists on a Redis Cluster: queues spread over the shards; follows MOVED/ASK",
    )
    registry.add("rediss-lists+cluster", ListsBackend.from_url, summary="redis-lists+cluster over TLS")
    registry.add(
        "redis-streams+cluster",
        StreamsBackend.from_url,
        summary="redis-streams on a Redis Cluster: queues spread over the shards; follows MOVED/ASK",
    )
    registry.add("rediss-streams+cluster", StreamsBackend.from_url, summary="redis-streams+cluster over TLS")
