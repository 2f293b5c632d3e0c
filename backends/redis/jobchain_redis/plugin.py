"""The entry point of ``jobchain-redis``: registers the Redis backends' URL schemes."""

from __future__ import annotations

from typing import Any

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


#: the layout a bare ``redis://`` / ``rediss://`` URL opens (the conservative default)
DEFAULT_KIND = "lists"


def _default_layout(url: str, **options: Any) -> ListsBackend:
    """Open a ``redis://`` (``rediss://``, ``+sentinel``, ``+cluster``) URL as ``redis-lists://``."""
    scheme, sep, rest = url.partition("://")
    base, plus, topology = scheme.partition("+")
    return ListsBackend.from_url(f"{base}-{DEFAULT_KIND}{plus}{topology}{sep}{rest}", **options)


@hookimpl
def jobchain_register_backends(registry: BackendRegistry) -> None:
    """``redis-lists``, ``redis-streams``, ``rediss-…`` (TLS), each plain, ``+sentinel`` and ``+cluster``."""
    for kind, (backend, summary) in _KINDS.items():
        for topology, adds in _TOPOLOGIES.items():
            scheme = f"redis-{kind}{topology}"
            registry.add(scheme, backend.from_url, summary=f"redis-{kind}{adds}" if topology else summary)
            registry.add(f"rediss-{kind}{topology}", backend.from_url, summary=f"{scheme} over TLS")
    for topology in _TOPOLOGIES:
        for base in ("redis", "rediss"):
            summary = f"an alias of {base}-{DEFAULT_KIND}{topology}, the default layout"
            registry.add(f"{base}{topology}", _default_layout, summary=summary)
