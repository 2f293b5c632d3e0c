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
