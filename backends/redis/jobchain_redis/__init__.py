"""Redis backends for jobchain, registered through the ``jobchain`` entry-point group.

``redis-lists://host:port/db`` (and ``rediss-lists://`` over TLS) keeps ready
jobs in Redis lists and moves each reserved job into a per-worker processing
list; every transition is one MULTI/EXEC transaction. See
:mod:`jobchain_redis.lists` for the layout and :mod:`jobchain_redis.keys` for
every key name.

``redis-streams://host:port/db`` (``rediss-streams://``) keeps ready jobs in
one stream per queue and priority band with one consumer group, reserved with
``XREADGROUP``; see :mod:`jobchain_redis.streams`.
"""

from __future__ import annotations

from jobchain_redis.keys import Keys
from jobchain_redis.lists import ListsBackend
from jobchain_redis.streams import StreamsBackend

__all__ = ["Keys", "ListsBackend", "StreamsBackend"]
