"""The reserve loop of the Redis backends, once for every layout.

:meth:`Reserver.reserve` takes back what an earlier life of the worker held
(once per worker name), then looks (the Cluster outbox sweep, then the
layout's :meth:`~jobchain_redis._layout.Layout.take`: promotion, lost leases,
leasing) of the queues not paused (:mod:`jobchain_redis._paused`, a copy at
most half a second old) and, while nothing came and time is left, waits for
a wake-up (or, every queue paused, sleeps a moment and looks again). The
wake-ups of queues with different hash tags (a Cluster) cannot be waited on
together: it waits on one tag at a time, in turns of :data:`TAG_TURN` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from jobchain.model import Delivery
from jobchain_redis._paused import PAUSED_REFRESH
from jobchain_redis.codec import decodable
from jobchain_redis.connection import Transaction

if TYPE_CHECKING:
    from jobchain_redis._layout import Layout
    from jobchain_redis._outbox import Outbox
    from jobchain_redis._paused import PausedQueues
    from jobchain_redis._store import Store
    from jobchain_redis.safety import EvictionCheck

__all__ = ["TAG_TURN", "WAKE_WAIT", "Reserver", "wait_slice"]

logger = structlog.get_logger("jobchain.redis")

#: seconds a blocked reserver waits for a wake-up before it looks again (delayed jobs, lost leases)
WAKE_WAIT = 0.5
#: seconds it waits on the wake-ups of one queue tag before the next, when its queues span tags (Cluster)
TAG_TURN = 0.05


def wait_slice(tags: int, remaining: float) -> float:
    """Seconds a blocked reserver waits on one tag's wake-ups (BLPOP/XREAD keys share a slot)."""
    return max(0.01, min(remaining, WAKE_WAIT if tags == 1 else TAG_TURN))


class Reserver:
    """``reserve``: look, wait, look again, over any layout."""

    def __init__(
        self, store: Store, layout: Layout, outbox: Outbox, eviction: EvictionCheck, paused: PausedQueues
    ) -> None:
        self.store = store
        self.layout = layout
        self.outbox = outbox
        self.eviction = eviction
        self.paused = paused
        #: workers this backend reserved for already (their earlier lives' jobs are taken back once)
        self.resumed: set[str] = set()

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.eviction.ensure(self.store.client)
        self._resume_once(queues, worker)
        deadline = time.monotonic() + wait
        serving: list[str] | None = None
        groups: list[list[str]] = []
        turn = 0
        while True:
            self.outbox.sweep(queues)
            now_serving = self.paused.serving(queues)
            if now_serving != serving:
                # BLPOP and XREAD take keys of one slot: on a Cluster, queues are waited on a tag at a time
                serving, groups = now_serving, self.store.by_tag(now_serving, lambda q: q)
            if not serving:  # every queue paused: look again when the copy of the paused set is renewed
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                time.sleep(min(remaining, PAUSED_REFRESH))
                continue
            taken, seen = self.layout.take(serving, limit, lease, worker)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            # wake at the next job made ready, or soon anyway for delayed jobs and lost leases
            self.layout.wait(groups[turn % len(groups)], wait_slice(len(groups), remaining), seen)
            turn += 1

    def _resume_once(self, queues: Sequence[str], worker: str) -> None:
        """On this backend's first reserve for ``worker``, take back what an earlier life of it held."""
        if worker in self.resumed:
            return
        self.resumed.add(worker)
        self._resume_own(queues, worker)

    def _resume_own(self, queues: Sequence[str], worker: str) -> None:
        """End at once the leases a worker of the same name held when it died, so they run again now.

        A worker that restarts under its old name (a supervisor restarting a
        process) would otherwise wait for those leases to run out. Only jobs
        whose hash still names this worker are touched, under WATCH; their
        delivery counts show the lost delivery.
        """
        keys = self.store.keys
        resumed: list[str] = []
        for group in self.store.by_tag(self.layout.held_by(queues, worker), lambda held: held[0]):
            job_keys = [keys.job(j, q) for q, j in group]

            def body(
                tx: Transaction, group: list[tuple[str, str]] = group, job_keys: list[str] = job_keys
            ) -> list[str]:
                tx.watch(*job_keys)
                rows = tx.read(lambda r: [r.hmget(k, "worker", "queue") for k in job_keys])
                pipe = tx.multi()
                back = []
                for (_, job_id), (holder, queue) in zip(group, rows, strict=True):
                    if holder == worker and queue and decodable(queue):
                        pipe.zadd(keys.leases(queue), {job_id: 0}, xx=True)
                        back.append(job_id)
                return back

            resumed += self.store.transact(body, on=job_keys[0])[0]
        if resumed:
            logger.info("worker_resumed_its_jobs", worker=worker, jobs=len(resumed))
