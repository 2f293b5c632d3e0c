"""Where a Redis backend's data lives, shared by its parts: the client, the route, the keys, the clock.

Every part of a Redis backend (enqueue, settlement, the failed queue, the
records, the reserve loop, the layout) holds the same :class:`Store` and runs
its transactions through :meth:`Store.transact`, on the node holding the key
it names (on a Cluster, the master of that key's slot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from jobchain.model import Job
from jobchain_redis._wire import lean_pipeline
from jobchain_redis.connection import Pipe, Route, Transaction
from jobchain_redis.keys import Keys

__all__ = ["Store", "group_by"]

R = TypeVar("R")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """``items`` grouped by ``key``, in first-seen order, each group in the items' order."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


class Store:
    """A backend's Redis: client, route and keys, its clock and settings, and transactions on them."""

    def __init__(
        self,
        client: Any,
        *,
        route: Route,
        keys: Keys,
        url: str,
        now: Callable[[], float],
        aging_interval: float,
        band_width: float,
        result_ttl: float | None,
    ) -> None:
        #: redis-py types its replies as sync/async unions; this client decodes to str, so it is used as Any
        self.client: Any = client
        self.route = route
        self.keys = keys
        #: what errors and logs show
        self.url = url
        #: the backend's time (the server's clock unless one was injected)
        self.now = now
        self.aging_interval = aging_interval
        #: width of a priority band, in aging intervals
        self.band_width = band_width
        #: seconds a succeeded job's record and a completed chain's record are kept (None: forever)
        self.result_ttl = result_ttl
        #: error codes a command inside a MULTI may answer without failing it (the layout's)
        self.tolerate: tuple[str, ...] = ()
        #: queues put in the queue list (spread layout: written apart, once)
        self.noted: set[str] = set()

    def pipeline(self) -> Any:
        """A plain pipeline (no MULTI) for the hot paths: lean on one server (:mod:`jobchain_redis._wire`)."""
        return lean_pipeline(self.client, transaction=False)

    def transact(
        self, body: Callable[[Transaction], R], *, on: str, tolerate: tuple[str, ...] = ()
    ) -> tuple[R, list[Any]]:
        """Run a WATCH/MULTI/EXEC ``body`` on the node holding key ``on`` (all keys it touches: its tag).

        ``tolerate``: error codes a command inside the MULTI may answer, besides the layout's own.
        """
        return self.route.transact(on, body, tolerate=self.tolerate + tolerate)

    def multi(self, on: str, queue_writes: Callable[[Pipe], object]) -> list[Any]:
        """One MULTI/EXEC with no WATCH, on the node holding key ``on``; its results."""
        return self.transact(lambda tx: queue_writes(tx.multi()), on=on)[1]

    def by_tag(self, items: Iterable[T], queue: Callable[[T], str]) -> list[list[T]]:
        """``items`` split into the groups one transaction can hold: the same queue tag."""
        return list(group_by(items, lambda item: self.keys.queue_tag(queue(item))).values())

    def band(self, job: Job) -> int:
        """The band a ready job belongs in: its static aging key cut into ``band_width`` slices."""
        return math.floor((job.enqueued_at / self.aging_interval - job.priority) / self.band_width)

    def expire(self, pipe: Pipe, key: str) -> None:
        """Let a finished record go after ``result_ttl`` (bounded memory; failed jobs stay until purged)."""
        if self.result_ttl is not None:
            pipe.pexpire(key, int(self.result_ttl * 1000))

    def queues(self) -> list[str]:
        """Every queue that ever held a job, sorted."""
        return sorted(self.client.smembers(self.keys.queues))

    def unnoted(self, queues: Iterable[str]) -> list[str]:
        """Spread layout: the queues not yet added to the queue list by this process (none otherwise)."""
        return sorted(set(queues) - self.noted) if self.keys.spread else []

    def note_queues(self, queues: Iterable[str]) -> None:
        """Spread layout: add queues to the queue list before their first job is stored (another slot)."""
        new = self.unnoted(queues)
        if new:
            self.client.sadd(self.keys.queues, *new)
            self.noted.update(new)

    def delete_everything(self) -> int:
        """Delete every key under the prefix (tests, resets); return how many."""
        names = sorted(
            {
                name
                for pattern in self.keys.patterns
                for name in self.client.scan_iter(match=pattern, count=1000)
            }
        )
        for start in range(0, len(names), 1000):
            if self.keys.spread:  # keys of many slots: one DEL each, pipelined
                pipe = self.client.pipeline(transaction=False)
                for name in names[start : start + 1000]:
                    pipe.delete(name)
                pipe.execute()
            else:
                self.client.delete(*names[start : start + 1000])
        self.noted.clear()
        return len(names)
