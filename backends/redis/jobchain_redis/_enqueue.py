"""Storing new jobs and chains in Redis: one MULTI/EXEC per queue tag, WATCH only where ids may exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobchain.model import ChainRecord, Job
from jobchain_redis.codec import chain_to_json
from jobchain_redis.connection import Pipe, Transaction

if TYPE_CHECKING:
    from jobchain_redis._layout import Layout
    from jobchain_redis._store import Store

__all__ = ["Enqueuer"]


class Enqueuer:
    """``enqueue`` and ``enqueue_new``: jobs placed by the layout, chain records stored beside them."""

    def __init__(self, store: Store, layout: Layout) -> None:
        self.store = store
        self.keys = store.keys
        self.layout = layout

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord], *, fresh: bool) -> None:
        """Store ``jobs`` (and ``chains``); unless ``fresh``, leave out the ids that exist (under WATCH).

        In the spread layout the chain records are stored first (their own
        slots, ``SET NX``), then one transaction per queue tag: a batch is
        atomic per queue, and a retried batch stores only what is missing.
        """
        store = self.store
        unique = list({job.id: job for job in reversed(jobs)}.values())[::-1]
        inline: Sequence[ChainRecord] = chains
        if self.keys.spread:
            store.note_queues(job.queue for job in unique)
            if chains:
                pipe = store.client.pipeline(transaction=False)
                for chain in chains:
                    pipe.set(self.keys.chain(chain.id), chain_to_json(chain), nx=True)
                pipe.execute()
            inline = ()
        groups = store.by_tag(unique, lambda job: job.queue) or ([[]] if inline else [])
        for group in groups:
            job_keys = [self.keys.job(job.id, job.queue) for job in group]
            on = job_keys[0] if job_keys else self.keys.queues

            def body(tx: Transaction, group: list[Job] = group, job_keys: list[str] = job_keys) -> None:
                if fresh and tx.attempt == 1:  # after a lost EXEC reply, check what was stored
                    self._store(tx.multi(), group, inline)
                    return
                tx.watch(*job_keys)
                exists = tx.read(lambda r: [r.exists(k) for k in job_keys]) if job_keys else []
                new = [job for job, known in zip(group, exists, strict=True) if not known]
                self._store(tx.multi(), new, inline)

            store.transact(body, on=on)

    def _store(self, pipe: Pipe, jobs: Sequence[Job], chains: Sequence[ChainRecord]) -> None:
        now = self.store.now()
        for chain in chains:
            pipe.set(self.keys.chain(chain.id), chain_to_json(chain), nx=True)
        writes = self.layout.writes()
        for job in jobs:
            self.layout.place(pipe, writes, job, now, front=False)
        writes.flush(pipe)
