"""The entry point of ``jobchain-redis``: registers the Redis backends' URL schemes."""

from __future__ import annotations

from jobchain import hookimpl
from jobchain.registry import BackendRegistry
from jobchain_redis.lists import ListsBackend
from jobchain_redis.streams import StreamsBackend

__all__ = ["jobchain_register_backends"]


#: scheme suffix -> what the topology adds, for the summaries
_TOPOLOGIES = {
    "": "",
    "+sentinel": " on the master a Sentinel group names; follows failovers",
    "+cluster": " on a Redis Cluster: queues spread over the shards; follows MOVED/ASK",
}
_KINDS: dict[str, tuple[type[ListsBackend] | type[StreamsBackend], str]] = {
    "lists": (
        ListsBackend,
        "Redis lists: reliable queue with per-worker processing lists, MULTI/EXEC transitions",
    ),
    "streams": (
        StreamsBackend,
        "Redis streams: a stream per queue and band, one consumer group, MULTI/EXEC transitions",
    ),
}


@hookimpl
def jobchain_register_backends(registry: BackendRegistry) -> None:
    """``redis-lists``, ``redis-streams``, ``rediss-…`` (TLS), each plain, ``+sentinel`` and ``+cluster``."""
    for kind, (backend, summary) in _KINDS.items():
        for topology, adds in _TOPOLOGIES.items():
            scheme = f"redis-{kind}{topology}"
            registry.add(scheme, backend.from_url, summary=f"redis-{kind}{adds}" if topology else summary)
            registry.add(f"rediss-{kind}{topology}", backend.from_url, summary=f"{scheme} over TLS")
