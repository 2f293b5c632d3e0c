"""The failed queue of the Redis backends: listing, re-driving and purging failed jobs, and filing bad ones.

Each queue has a failed set (``failed_in``, scored by the time of failure);
the failed queue is their union, merged by time. A failed job keeps its hash
(payload and error) until it is re-driven or purged. :func:`quarantine` files
a job that cannot be read, :func:`park` one whose hash holds another type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from attrs import evolve

from jobchain import workflow
from jobchain.errors import NotInFailedQueueError
from jobchain.model import UNREADABLE_TASK, ChainRef, ErrorInfo, FailedEntry, Job, JobState
from jobchain_redis._reading import (
    UNREADABLE,
    chain_or_none,
    job_or_none,
    parse_job,
    placeholder,
    printable,
    wrong_type_message,
)
from jobchain_redis._records import HISTORY_FIELD, history_of
from jobchain_redis.codec import chain_to_json, decodable, dumps, keepable, loads
from jobchain_redis.connection import Pipe, Transaction, wrong_type

if TYPE_CHECKING:
    from jobchain_redis._layout import Layout
    from jobchain_redis._store import Store

__all__ = ["FailedQueue", "park", "quarantine"]

logger = structlog.get_logger("jobchain.redis")


def quarantine(
    store: Store, pipe: Pipe, queue: str, job_id: str, raw: str | None, reason: str, now: float
) -> None:
    """Queue the writes that file an unreadable job in the failed queue, its stored text kept.

    The job's hash keeps ``raw`` (what was found, or a note that nothing
    was) and gets a placeholder ``job`` (task :data:`UNREADABLE_TASK`) and
    an ``error`` saying why, so ``jobchain failed`` lists it like any other
    failure; it is never delivered again.
    """
    keys = store.keys
    logger.warning("unreadable_job_failed", job_id=job_id, queue=queue, reason=reason)
    raw = None if raw is None else keepable(raw)
    stand_in = Job(id=job_id, task=UNREADABLE_TASK, queue=queue, enqueued_at=now)
    error = ErrorInfo(type="UnreadableJob", message=reason, attempt=1, at=now)
    key = keys.job(job_id, queue)
    pipe.zrem(keys.leases(queue), job_id)
    pipe.delete(key)
    pipe.hset(
        key,
        mapping={
            "job": dumps(stand_in.to_wire()),
            "raw": "(nothing stored)" if raw is None else raw,
            "queue": queue,
            "state": JobState.FAILED.value,
            "error": dumps(error.to_wire()),
            "finished_at": repr(now),
        },
    )
    pipe.zadd(keys.failed_in(queue), {job_id: now})
    if not keys.spread:
        pipe.sadd(keys.queues, queue)


def park(store: Store, pipe: Pipe, queue: str, job_id: str, now: float) -> None:
    """File a job whose hash is of the wrong type in the failed queue, without touching the hash."""
    keys = store.keys
    logger.error(
        "redis_key_wrong_type",
        key=keys.job(job_id, queue),
        queue=queue,
        job_id=job_id,
        url=store.url,
        hint="the job's hash holds another type: filed in the failed queue; purge it to delete the key",
    )
    pipe.zrem(keys.leases(queue), job_id)
    pipe.zadd(keys.failed_in(queue), {job_id: now})


def _history(job_id: str, stored: dict[str, str]) -> str | None:
    """A failed job's error history folded into one JSON list for its re-drive; None if it has none.

    A history that cannot be read is dropped (the job is re-driven all the same).
    """
    try:
        error = stored.get("error")
        history = history_of(stored, None if error is None else ErrorInfo.from_wire(loads(error)))
    except UNREADABLE as exc:
        logger.warning("error_history_unreadable", job_id=printable(job_id), error=str(exc))
        return None
    return dumps([e.to_wire() for e in history]) if history else None


class FailedQueue:
    """``failed``, ``get_failed``, ``redrive`` and ``purge_failed`` over the queues' failed sets."""

    def __init__(self, store: Store, layout: Layout) -> None:
        self.store = store
        self.keys = store.keys
        self.layout = layout

    def where_failed(self, job_ids: Sequence[str]) -> list[tuple[str, str, float]]:
        """``(queue, job id, failed_at)`` of those of ``job_ids`` in the failed queue, in their order."""
        queues = self.store.queues()
        if not job_ids or not queues:
            return []
        pipe = self.store.client.pipeline(transaction=False)
        for job_id in job_ids:
            for queue in queues:
                pipe.zscore(self.keys.failed_in(queue), job_id)
        scores = iter(pipe.execute())
        found: list[tuple[str, str, float]] = []
        for job_id in job_ids:
            hits = [(q, score) for q in queues if (score := next(scores)) is not None]
            if hits:
                queue, score = hits[0]
                found.append((queue, job_id, score))
        return found

    def entries(self, scored: Sequence[tuple[str, str, float]]) -> list[FailedEntry]:
        pipe = self.store.client.pipeline(transaction=False)
        for queue, job_id, _ in scored:
            pipe.hmget(self.keys.job(job_id, queue), "job", "error", "raw")
        out: list[FailedEntry] = []
        for (queue, job_id, failed_at), reply in zip(scored, pipe.execute(raise_on_error=False), strict=True):
            key = wrong_type(reply, self.keys.job(job_id, queue))
            if key is not None:
                out.append(
                    FailedEntry(
                        job=placeholder(job_id, queue, failed_at),
                        error=ErrorInfo(
                            type="UnreadableJob", message=wrong_type_message(key), attempt=1, at=failed_at
                        ),
                        failed_at=failed_at,
                    )
                )
                continue
            if isinstance(reply, Exception):
                raise reply
            payload, error, raw = reply
            if payload is None or error is None:
                continue
            try:
                out.append(
                    FailedEntry(
                        job=parse_job(payload),
                        error=ErrorInfo.from_wire(loads(error)),
                        failed_at=failed_at,
                        raw=raw if raw is None or decodable(raw) else keepable(raw),
                    )
                )
            except UNREADABLE as exc:  # changed since it failed: listed as unreadable, with what is stored
                logger.warning("failed_entry_unreadable", job_id=printable(job_id), error=str(exc))
                stored = dumps({"job": payload, "error": error, "raw": raw})
                out.append(
                    FailedEntry(
                        job=placeholder(job_id, queue, failed_at),
                        error=ErrorInfo(type="UnreadableJob", message=str(exc), attempt=1, at=failed_at),
                        failed_at=failed_at,
                        raw=keepable(stored),
                    )
                )
        return out

    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        """The failed queue, oldest failure first: the queues' failed sets merged by time."""
        if limit <= 0:
            return []
        queues = self.store.queues()
        pipe = self.store.client.pipeline(transaction=False)
        for queue in queues:
            pipe.zrange(self.keys.failed_in(queue), 0, offset + limit - 1, withscores=True)
        merged = sorted(
            (score, job_id, queue)
            for queue, scored in zip(queues, pipe.execute(), strict=True)
            for job_id, score in scored
        )
        return self.entries([(q, j, score) for score, j, q in merged[offset : offset + limit]])

    def get_failed(self, job_id: str) -> FailedEntry | None:
        entries = self.entries(self.where_failed([job_id]))
        return entries[0] if entries else None

    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        """Put failed jobs back in their queues; a chain's failed step resumes its chain.

        One transaction per queue tag. In the one-tag layout it also advances
        the chain records; in the spread layout the chains are re-opened first,
        each in its own transaction, so a crash in between leaves a chain
        running with its job still failed, which re-driving again completes.
        """
        ids = list(dict.fromkeys(job_ids))
        found = self.where_failed(ids)
        present = {j for _, j, _ in found}
        missing = [j for j in ids if j not in present]
        if missing:  # checked before anything moves
            raise NotInFailedQueueError(missing)
        # Race: an entry purged (or re-driven) by another client between the check above and its
        # group's transaction below is skipped there (the transaction re-reads the failed set under
        # WATCH), so the ids returned lack it while the others move: a partial re-drive that the
        # App reports as NotInFailedQueueError with .moved set.
        moved: list[str] = []
        for group in self.store.by_tag(found, lambda found: found[0]):
            moved += self._redrive_group([(q, j) for q, j, _ in group])
        return moved

    def _redrive_group(self, group: Sequence[tuple[str, str]]) -> list[str]:
        keys = self.keys
        ids = [j for _, j in group]
        job_keys = [keys.job(j, q) for q, j in group]
        failed_sets = sorted({keys.failed_in(q) for q, _ in group})
        spread = keys.spread
        if spread:
            self._reopen_chains(job_keys)

        def body(tx: Transaction) -> list[str]:
            tx.watch(*failed_sets, *job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(keys.failed_in(q), j) for q, j in group] + [r.hgetall(k) for k in job_keys]
                )
            )
            scores, hashes = rows[: len(ids)], rows[len(ids) :]
            jobs = {
                j: job
                for j, score, stored in zip(ids, scores, hashes, strict=True)
                if score is not None
                and stored.get("raw") is None
                and (job := job_or_none(stored.get("job"))) is not None
            }
            histories = {j: _history(j, stored) for j, stored in zip(ids, hashes, strict=True) if j in jobs}
            chain_ids = (
                []
                if spread
                else list(dict.fromkeys(j.chain.chain_id for j in jobs.values() if j.chain is not None))
            )
            tx.watch(*[keys.chain(c) for c in chain_ids])
            stored = tx.read(lambda r: [r.get(keys.chain(c)) for c in chain_ids]) if chain_ids else []
            chains = {
                c: record
                for c, s in zip(chain_ids, stored, strict=True)
                if (record := chain_or_none(c, s)) is not None
            }
            now = self.store.now()
            pipe = tx.multi()
            writes = self.layout.writes()
            moved: list[str] = []
            for job_id, old in jobs.items():
                job = evolve(old, attempt=1, not_before=None, enqueued_at=now)
                if old.expires_at is not None:
                    job = evolve(job, expires_at=now + old.expires_at - old.enqueued_at)
                pipe.delete(keys.job(job_id, job.queue))
                self.layout.place(pipe, writes, job, now, front=False)
                if histories[job_id] is not None:  # kept, folded: the attempts start again at 1
                    pipe.hset(keys.job(job_id, job.queue), HISTORY_FIELD, histories[job_id])
                pipe.zrem(keys.failed_in(job.queue), job_id)
                if job.chain is not None and job.chain.chain_id in chains:
                    record = chains[job.chain.chain_id]
                    chains[record.id] = workflow.apply_redrive(record, job.chain)
                moved.append(job_id)
            for chain_id, record in chains.items():
                pipe.set(keys.chain(chain_id), chain_to_json(record))
            writes.flush(pipe)
            return moved

        return self.store.transact(body, on=job_keys[0])[0]

    def _reopen_chains(self, job_keys: Sequence[str]) -> None:
        """Spread layout: re-open the chains of failed jobs about to be re-driven (each chain's own slot)."""
        reader = self.store.client.pipeline(transaction=False)
        for key in job_keys:
            reader.hmget(key, "job", "raw")
        refs = [
            job.chain
            for payload, unreadable in reader.execute()
            if unreadable is None and (job := job_or_none(payload)) is not None and job.chain is not None
        ]
        for ref in refs:
            key = self.keys.chain(ref.chain_id)

            def body(tx: Transaction, key: str = key, ref: ChainRef = ref) -> None:
                tx.watch(key)
                [raw] = tx.read(lambda r: r.get(key))
                record = chain_or_none(ref.chain_id, raw)
                if record is None:
                    return
                updated = workflow.apply_redrive(record, ref)
                if updated is not record:
                    tx.multi().set(key, chain_to_json(updated))

            self.store.transact(body, on=key)

    def purge(self, job_ids: Sequence[str] | None = None) -> int:
        if job_ids is None:
            pipe = self.store.client.pipeline(transaction=False)
            queues = self.store.queues()
            for queue in queues:
                pipe.zrange(self.keys.failed_in(queue), 0, -1)
            found = [(q, j) for q, ids in zip(queues, pipe.execute(), strict=True) for j in ids]
        else:
            found = [(q, j) for q, j, _ in self.where_failed(list(dict.fromkeys(job_ids)))]
        return sum(self._purge_group(group) for group in self.store.by_tag(found, lambda item: item[0]))

    def _purge_group(self, group: Sequence[tuple[str, str]]) -> int:
        keys = self.keys
        job_keys = [keys.job(j, q) for q, j in group]
        failed_sets = sorted({keys.failed_in(q) for q, _ in group})

        def body(tx: Transaction) -> int:
            # WATCH: a job re-driven meanwhile has a live hash that must not be deleted
            tx.watch(*failed_sets, *job_keys)
            scores = tx.read(lambda r: [r.zscore(keys.failed_in(q), j) for q, j in group])
            gone = [(q, j) for (q, j), score in zip(group, scores, strict=True) if score is not None]
            if not gone:
                return 0
            pipe = tx.multi()
            for queue, job_id in gone:
                pipe.zrem(keys.failed_in(queue), job_id)
                pipe.delete(keys.job(job_id, queue))
            return len(gone)

        return self.store.transact(body, on=job_keys[0])[0]
