"""Cancel on the Redis backends: waiting jobs withdrawn in one transaction, running ones asked in a set.

A ready or delayed job is cancelled in one WATCH/MULTI/EXEC over its job
hash (and, in the one-tag layout, its chain record): the state read under
WATCH must still be ``queued`` or ``delayed``; the transaction removes it
from the delayed set and from its layout's ready structure
(:meth:`~jobchain_redis._layout.Layout.withdraw`), marks the hash
``cancelled`` and ends the chain. A reserver racing with it either leased
the job first (the hash changed: the cancel reads again and finds it
running) or finds it gone (redis-lists: its band list changed under its
WATCH; redis-streams: the hash it reads under WATCH is no longer waiting, so
the entry leases nothing). On redis-streams the entry of a job no reserver
has read yet stays in its band stream: the job's hash does not know its id,
and finding it would scan the band (a purge, a scan per batch). The reservation
that reads it acknowledges and deletes it (``cancelled_entry_dropped``, at
debug level), as does the orphan sweep for an entry read by a reserver that
died; until then ``stats`` counts it as ready. In the spread layout (Cluster) the chain
is in another slot: the job's transaction writes a cancelled event to its
queue's outbox and the chain ends in a second step, as for a settlement
(:mod:`jobchain_redis._outbox`).

A running job's request is a member of the sorted set ``{p}:cancel`` (job id
-> when asked; the application's tag in both layouts), read by the worker's
monitor with one pipeline of ``ZSCORE`` for all the jobs it holds. Requests
older than :data:`REQUEST_TTL` are dropped by the next cancel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobchain import workflow
from jobchain.capabilities import CancelReport
from jobchain.model import ChainRecord, ChainRef, Job, JobState
from jobchain_redis._outbox import ChainEvent
from jobchain_redis._reading import chain_or_none, job_or_none
from jobchain_redis.codec import chain_to_json, decodable
from jobchain_redis.connection import Transaction

if TYPE_CHECKING:
    from jobchain_redis._layout import Layout
    from jobchain_redis._outbox import Outbox
    from jobchain_redis._store import Store

__all__ = ["REQUEST_TTL", "Canceller"]

#: seconds a cancel request is kept (its job was settled otherwise long before)
REQUEST_TTL = 86400.0
#: jobs one transaction cancels at most
_BATCH = 100
_WAITING = (JobState.QUEUED.value, JobState.DELAYED.value)
_RUNNING = JobState.RUNNING.value
#: job-hash fields a cancelled job no longer has
_DROP = ("token", "worker", "lease_until", "deliveries", "crashes", "running", "stream", "entry", "band")


def cancelled_event(job: Job, ref: ChainRef, now: float) -> ChainEvent:
    """The outbox event of a chain job cancelled (spread layout): its chain ends in the second step."""
    return ChainEvent(
        queue=job.queue,
        job_id=job.id,
        field=f"{job.id}:cancelled",
        ref=ref,
        completed=False,
        cancelled=True,
        finished_at=now,
        at=now,
    )


class Canceller:
    """``cancel``, ``cancel_requested`` and ``purge`` over a layout."""

    def __init__(self, store: Store, layout: Layout, outbox: Outbox) -> None:
        self.store = store
        self.keys = store.keys
        self.layout = layout
        self.outbox = outbox

    @property
    def requests(self) -> str:
        return self.keys.cancel

    def _where(self, job_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """job id -> (its queue, its state) for the ids the backend knows (one pipeline)."""
        client = self.store.client
        queues: list[str | None] = list(self.store.queues()) if self.keys.spread else [None]
        pipe = client.pipeline(transaction=False)
        asked: list[tuple[str, str | None]] = [(j, q) for j in job_ids for q in queues]
        for job_id, queue in asked:
            pipe.hmget(self.keys.job(job_id, queue), "queue", "state")
        found: dict[str, tuple[str, str | None]] = {}
        for (job_id, _), reply in zip(asked, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception) or reply[0] is None or not decodable(reply[0]):
                continue
            found.setdefault(job_id, (reply[0], reply[1]))
        return found

    def cancel(self, job_ids: Sequence[str]) -> CancelReport:
        ids = list(dict.fromkeys(job_ids))
        where = self._where(ids)
        out: dict[str, list[str]] = {"cancelled": [], "requested": [], "finished": [], "unknown": []}
        waiting: list[tuple[str, str]] = []
        for job_id in ids:
            if job_id not in where:
                out["unknown"].append(job_id)
            else:
                waiting.append((where[job_id][0], job_id))
        now = self.store.now()
        running: list[str] = []
        for group in self.store.by_tag(waiting, lambda item: item[0]):
            for start in range(0, len(group), _BATCH):
                done, asked, finished = self._cancel_group(group[start : start + _BATCH])
                out["cancelled"] += done
                running += asked
                out["finished"] += finished
        if running:
            pipe = self.store.client.pipeline(transaction=False)
            pipe.zremrangebyscore(self.requests, "-inf", now - REQUEST_TTL)
            pipe.zadd(self.requests, dict.fromkeys(running, now))
            pipe.execute()
        out["requested"] = running
        order = {job_id: i for i, job_id in enumerate(ids)}
        return CancelReport(**{k: tuple(sorted(v, key=order.__getitem__)) for k, v in out.items()})

    def _cancel_group(self, group: Sequence[tuple[str, str]]) -> tuple[list[str], list[str], list[str]]:
        """Cancel the waiting jobs of one tag in one transaction: (cancelled, running, finished) ids."""
        keys = self.keys
        spread = keys.spread
        job_keys = [keys.job(j, q) for q, j in group]
        events: list[ChainEvent] = []

        def body(tx: Transaction) -> tuple[list[str], list[str], list[str]]:
            events.clear()
            tx.watch(*job_keys)
            fields = ("state", "job", *self.layout.settle_fields)
            rows = tx.read(lambda r: [r.hmget(k, *fields) for k in job_keys])
            now = self.store.now()
            cancelled: list[tuple[Job, dict[str, Any]]] = []
            running: list[str] = []
            finished: list[str] = []
            for (_, job_id), row in zip(group, rows, strict=True):
                state = row[0]
                job = job_or_none(row[1])
                if state == _RUNNING:
                    running.append(job_id)
                elif state in _WAITING and job is not None:
                    cancelled.append((job, dict(zip(fields, row, strict=True))))
                else:
                    finished.append(job_id)  # finished, or a job that cannot be read (failed when reserved)
            chain_ids = (
                []
                if spread
                else list(dict.fromkeys(j.chain.chain_id for j, _ in cancelled if j.chain is not None))
            )
            chains: dict[str, ChainRecord] = {}
            if chain_ids:
                tx.watch(*[keys.chain(c) for c in chain_ids])
                stored = tx.read(lambda r: [r.get(keys.chain(c)) for c in chain_ids])
                chains = {
                    c: record
                    for c, raw in zip(chain_ids, stored, strict=True)
                    if (record := chain_or_none(c, raw)) is not None
                }
            if not cancelled:
                return [], running, finished
            before = dict(chains)
            pipe = tx.multi()
            writes = self.layout.writes()
            for job, row in cancelled:
                key = keys.job(job.id, job.queue)
                if row["state"] == JobState.DELAYED.value:
                    pipe.zrem(keys.delayed(job.queue), job.id)
                else:
                    self.layout.withdraw(pipe, writes, job, row)
                pipe.hset(key, mapping={"state": JobState.CANCELLED.value, "finished_at": repr(now)})
                writes.cancel(job.queue, job.id, now)  # the browse index, in this MULTI
                pipe.hdel(key, *_DROP)
                self.store.expire(pipe, key)
                if job.chain is None:
                    continue
                if spread:
                    event = cancelled_event(job, job.chain, now)
                    pipe.hset(keys.outbox(job.queue), event.field, event.to_json())
                    events.append(event)
                elif job.chain.chain_id in chains:
                    record = chains[job.chain.chain_id]
                    chains[record.id] = workflow.apply_cancelled(record, job.chain, now=now)
            for chain_id, record in chains.items():
                if record is not before[chain_id]:
                    pipe.set(keys.chain(chain_id), chain_to_json(record))
            writes.flush(pipe)
            return [j.id for j, _ in cancelled], running, finished

        result = self.store.transact(body, on=job_keys[0])[0]
        for event in events:
            self.outbox.advance(event)
        return result

    def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        if not job_ids:
            return []
        pipe = self.store.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.zscore(self.requests, job_id)
        return [job_id for job_id, score in zip(job_ids, pipe.execute(), strict=True) if score is not None]

    def purge(self, queue: str) -> int:
        """Cancel the waiting jobs of ``queue``, a batch per transaction (a job submitted meanwhile may stay).

        The purge of a large queue is many transactions, each atomic.
        """
        client = self.store.client
        ids = list(
            dict.fromkeys([*self.layout.waiting(queue), *client.zrange(self.keys.delayed(queue), 0, -1)])
        )
        count = 0
        for start in range(0, len(ids), _BATCH):
            batch = [(queue, j) for j in ids[start : start + _BATCH] if decodable(j)]
            if batch:
                count += len(self._cancel_group(batch)[0])
        return count
