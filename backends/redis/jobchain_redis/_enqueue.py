"""Storing new jobs and chains in Redis: one MULTI/EXEC per queue tag, WATCH only where ids may exist."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from jobchain.model import ChainRecord, Job
from jobchain_redis._aio import exchange, multi_exec
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
        unique = _unique(jobs)
        inline: Sequence[ChainRecord] = chains
        if self.keys.spread:
            store.note_queues(job.queue for job in unique)
            if chains:
                pipe = store.client.pipeline(transaction=False)
                self._chain_records(pipe, chains)
                pipe.execute()
            inline = ()
        for group in self._groups(unique, inline):
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

    def _groups(self, jobs: list[Job], inline: Sequence[ChainRecord]) -> list[list[Job]]:
        """The jobs split by queue tag, one transaction each (one empty group for chains alone)."""
        return self.store.by_tag(jobs, lambda job: job.queue) or ([[]] if inline else [])

    def _chain_records(self, pipe: Pipe, chains: Sequence[ChainRecord]) -> None:
        for chain in chains:
            pipe.set(self.keys.chain(chain.id), chain_to_json(chain), nx=True)

    def _store(
        self, pipe: Pipe, jobs: Sequence[Job], chains: Sequence[ChainRecord], now: float | None = None
    ) -> None:
        """Queue the writes of a submit on ``pipe`` (a synchronous or a ``redis.asyncio`` pipeline)."""
        now = self.store.now() if now is None else now
        self._chain_records(pipe, chains)
        writes = self.layout.writes()
        for job in jobs:
            self.layout.place(pipe, writes, job, now, front=False)
        writes.flush(pipe)

    # --- the asyncio client (jobchain_redis._aio) ----------------------------------------

    async def enqueue_async(
        self, client: Any, jobs: Sequence[Job], chains: Sequence[ChainRecord], *, fresh: bool, now: float
    ) -> None:
        """:meth:`enqueue` on a ``redis.asyncio`` client of one server: the same writes, transactions, checks.

        The commands are queued by the same :meth:`_store` (recorded, then sent
        on an asyncio connection as :class:`~jobchain_redis._wire.LeanPipeline`
        sends them: packed once, replies read straight off the connection). A
        lost EXEC reply runs the body again with the existence check, as
        :func:`~jobchain_redis.connection.transact` does.
        """
        store = self.store
        unique = _unique(jobs)
        inline: Sequence[ChainRecord] = chains
        if self.keys.spread:
            new = store.unnoted(job.queue for job in unique)
            if new:
                await client.sadd(self.keys.queues, *new)
                store.noted.update(new)
            if chains:
                pipe = client.pipeline(transaction=False)
                self._chain_records(pipe, chains)
                await pipe.execute()
            inline = ()
        for group in self._groups(unique, inline):
            await self._transact_async(client, group, inline, fresh=fresh, now=now)

    def _commands(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], now: float
    ) -> list[tuple[Any, ...]]:
        """The commands :meth:`_store` queues, recorded on a pipeline of the sync client that never runs."""
        recorder = self.store.client.pipeline(transaction=False)
        self._store(recorder, jobs, chains, now)
        return [args for args, _ in recorder.command_stack]

    async def _transact_async(
        self, client: Any, group: list[Job], inline: Sequence[ChainRecord], *, fresh: bool, now: float
    ) -> None:
        """One group's transaction on a connection of ``client``'s pool, sent as lean packets.

        Fresh ids: MULTI … EXEC in one packet (one round trip). Explicit ids, or
        after a connection lost mid-transaction (the EXEC may have been applied):
        WATCH and the existence reads in one packet, then MULTI … EXEC of what is
        missing, run again if a watched key changed. A second loss is raised.
        """
        job_keys = [self.keys.job(job.id, job.queue) for job in group]
        pool = client.connection_pool
        delay = 0.0005
        attempt = lost = 0
        while True:
            attempt += 1
            conn = await pool.get_connection()
            try:
                new = group
                if not (fresh and attempt == 1) and job_keys:
                    replies = await exchange(conn, [("WATCH", *job_keys), *(("EXISTS", k) for k in job_keys)])
                    for reply in replies:
                        if isinstance(reply, Exception):
                            raise reply
                    new = [job for job, known in zip(group, replies[1:], strict=True) if not known]
                if await multi_exec(conn, self._commands(new, inline, now)) is not None:
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                await conn.disconnect()
                lost += 1
                if lost > 1:
                    raise
                continue  # the EXEC may have been applied: look (WATCH, EXISTS) before writing again
            except BaseException:
                await conn.disconnect()  # replies may be left unread, a WATCH may be on
                raise
            finally:
                await pool.release(conn)
            await asyncio.sleep(delay)  # a watched key changed: run again on what Redis now holds
            delay = min(delay * 2, 0.02)


def _unique(jobs: Sequence[Job]) -> list[Job]:
    """The jobs with each id once (the first job given with it), as a submit stores them."""
    return list({job.id: job for job in reversed(jobs)}.values())[::-1]
