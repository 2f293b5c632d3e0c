"""Leases held by workers: extending them, and marking a delivery running (crash counting).

A lease is a score in the queue's lease set (its end, on the backend's clock)
and ``token``/``lease_until`` in the job hash. Both operations run one
WATCH/MULTI/EXEC per queue tag over the job hashes they touch; a delivery
whose token is no longer the job's is answered False.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobchain.model import Delivery
from jobchain_redis.connection import Transaction

if TYPE_CHECKING:
    from jobchain_redis._guard import QueueGuard
    from jobchain_redis._layout import Layout
    from jobchain_redis._store import Store

__all__ = ["Leases"]


class Leases:
    """``extend`` and ``mark_running``."""

    def __init__(self, store: Store, layout: Layout, guard: QueueGuard) -> None:
        self.store = store
        self.keys = store.keys
        self.layout = layout
        self.guard = guard

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        keys = self.keys
        fields = ("token", *self.layout.settle_fields)
        held: dict[int, bool] = {}
        for group in self.store.by_tag(enumerate(deliveries), lambda item: item[1].job.queue):
            job_keys = [keys.job(d.job.id, d.job.queue) for _, d in group]

            def body(
                tx: Transaction, group: list[tuple[int, Delivery]] = group, job_keys: list[str] = job_keys
            ) -> list[bool]:
                tx.watch(*job_keys)
                read = tx.read(lambda r: [r.hmget(k, *fields) for k in job_keys], tolerant=True)
                rows = self.guard.job_rows(read, len(fields))
                lease_until = self.store.now() + lease
                ok = [
                    row[0] is not None and row[0] == d.token for (_, d), row in zip(group, rows, strict=True)
                ]
                pipe = tx.multi()
                for (_, delivery), key, mine, row in zip(group, job_keys, ok, rows, strict=True):
                    if mine:
                        pipe.zadd(keys.leases(delivery.job.queue), {delivery.job.id: lease_until}, xx=True)
                        pipe.hset(key, "lease_until", repr(lease_until))
                        self.layout.refresh(pipe, delivery, dict(zip(fields, row, strict=True)))
                return ok

            for (index, _), mine in zip(group, self.store.transact(body, on=job_keys[0])[0], strict=True):
                held[index] = mine
        return [held[i] for i in range(len(deliveries))]

    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Mark deliveries running (``running`` = token in the job hash) where their lease is held.

        Held means: the token is the job's current one and its lease (the score
        in the lease set) ends after the backend's now. One WATCH/MULTI/EXEC per
        queue tag. The lease expiry that finds a job still marked by its current
        token counts a crash (``crashes`` in the hash); a settlement ends the mark.
        """
        keys = self.keys
        held: dict[int, bool] = {}
        for group in self.store.by_tag(enumerate(deliveries), lambda item: item[1].job.queue):
            job_keys = [keys.job(d.job.id, d.job.queue) for _, d in group]

            def body(
                tx: Transaction, group: list[tuple[int, Delivery]] = group, job_keys: list[str] = job_keys
            ) -> list[bool]:
                tx.watch(*job_keys)
                rows = tx.read(
                    lambda r: (
                        [r.hget(k, "token") for k in job_keys]
                        + [r.zscore(keys.leases(d.job.queue), d.job.id) for _, d in group]
                    )
                )
                tokens, scores = rows[: len(group)], rows[len(group) :]
                now = self.store.now()
                ok = [
                    token is not None and token == d.token and score is not None and float(score) > now
                    for (_, d), token, score in zip(group, tokens, scores, strict=True)
                ]
                pipe = tx.multi()
                for (_, delivery), key, mine in zip(group, job_keys, ok, strict=True):
                    if mine:
                        pipe.hset(key, "running", delivery.token)
                return ok

            for (index, _), mine in zip(group, self.store.transact(body, on=job_keys[0])[0], strict=True):
                held[index] = mine
        return [held[i] for i in range(len(deliveries))]
