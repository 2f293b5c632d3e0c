"""Settlement: applying workers' outcomes to jobs and chains, each batch in one transaction per queue tag.

Every settlement is one WATCH/MULTI/EXEC over the job hashes (and, in the
one-tag layout, the chain records) it touches: the delivery token read under
WATCH must still be the one the worker holds, or the outcome is rejected. The
layout lets go of the delivery (:meth:`~jobchain_redis._layout.Layout.unlease`,
``release``) and places the jobs made ready. In the spread layout a finished
chain job's event goes to the Cluster outbox (:mod:`jobchain_redis._outbox`)
and the chain moves on in a second transaction.

A settlement may also hand the next steps it makes ready straight to the
settling worker (:class:`Take`), leased in the same transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis
import structlog

from jobchain import workflow
from jobchain.model import (
    Aborted,
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    Failed,
    Job,
    JobState,
    Outcome,
    Released,
    Retried,
    SettleResult,
)
from jobchain_redis._cancel import cancelled_event
from jobchain_redis._outbox import ChainEvent
from jobchain_redis._reading import chain_or_none
from jobchain_redis._records import error_field, stale_error_fields
from jobchain_redis._unique import release
from jobchain_redis.codec import chain_to_json, dumps
from jobchain_redis.connection import Pipe, Transaction, wrong_type

if TYPE_CHECKING:
    from jobchain_redis._guard import QueueGuard
    from jobchain_redis._layout import Layout, Writes
    from jobchain_redis._outbox import Outbox
    from jobchain_redis._store import Store

__all__ = ["Settlement", "Take"]

logger = structlog.get_logger("jobchain.redis")

#: the job-hash fields settle reads under WATCH before the layout's own
_SETTLE_FIELDS = ("token", "deliveries")


class Take:
    """What a settling worker may take: next steps of its queues, up to ``limit``, none overtaking."""

    def __init__(self, worker: str, queues: frozenset[str], lease: float, limit: int) -> None:
        self.worker = worker
        self.queues = queues
        self.lease = lease
        self.limit = limit
        self.taken: list[Delivery] = []
        self._top: dict[str, float | None] = {}

    def start(self, urgent: dict[str, tuple[list[tuple[str, float]], list[str]]]) -> None:
        """Note each queue's most urgent ready band (None: nothing ready) from the reads under WATCH.

        A queue with a lease run out (a job waiting to be delivered again) takes nothing.
        """
        self.taken = []
        self._top = {
            q: (bands[0][1] if bands else None) for q, (bands, expired) in urgent.items() if not expired
        }

    def wants(self, job: Job, band: int, now: float) -> bool:
        if len(self.taken) >= self.limit or job.queue not in self._top:
            return False
        if job.not_before is not None and job.not_before > now:
            return False
        top = self._top[job.queue]
        return top is None or top > band  # a ready job in this band or a more urgent one goes first


class Settlement:
    """``settle`` and ``settle_and_take`` over a layout."""

    def __init__(self, store: Store, layout: Layout, guard: QueueGuard, outbox: Outbox) -> None:
        self.store = store
        self.keys = store.keys
        self.layout = layout
        self.guard = guard
        self.outbox = outbox

    def settle(
        self, outcomes: Sequence[Outcome], take: Take | None
    ) -> tuple[list[SettleResult], list[Delivery]]:
        if not outcomes:
            return [], []
        if not self.keys.spread:
            return self._settle_group(outcomes, take, None)
        results: dict[int, SettleResult] = {}
        events: list[tuple[int, ChainEvent]] = []
        for group in self.store.by_tag(enumerate(outcomes), lambda item: item[1].delivery.job.queue):
            found: list[ChainEvent] = []
            settled, _ = self._settle_group([o for _, o in group], None, found)
            for (index, _), result in zip(group, settled, strict=True):
                results[index] = result
            by_job = {event.job_id: event for event in found}
            events += [(i, by_job[o.delivery.job.id]) for i, o in group if o.delivery.job.id in by_job]
        for index, event in events:
            try:
                finished = self.outbox.advance(event)
            except redis.RedisError as exc:  # the outcome is stored; the outbox sweep finishes the chain
                logger.warning(
                    "chain_advance_deferred", job_id=event.job_id, chain_id=event.ref.chain_id, error=str(exc)
                )
                continue
            if finished is not None:
                results[index] = SettleResult(accepted=True, chain=finished)
        return [results[i] for i in range(len(outcomes))], []

    def _settle_group(
        self, outcomes: Sequence[Outcome], take: Take | None, events: list[ChainEvent] | None
    ) -> tuple[list[SettleResult], list[Delivery]]:
        """Settle outcomes whose jobs share one tag, in one transaction.

        ``events`` is None in the one-tag layout: the chain records are read
        under WATCH and advanced in the same transaction. In the spread layout
        a finished chain job's event goes to its queue's outbox instead, and is
        appended to ``events`` for the caller to apply.
        """
        keys = self.keys
        jobs = list({o.delivery.job.id: o.delivery.job for o in outcomes}.values())
        chain_ids = (
            []
            if events is not None
            else list(dict.fromkeys(j.chain.chain_id for j in jobs if j.chain is not None))
        )
        job_keys = [keys.job(j.id, j.queue) for j in jobs]
        # the keys of unique jobs that finish here: read under WATCH, freed in the same transaction
        keyed = list(
            {
                o.delivery.job.id: o.delivery.job
                for o in outcomes
                if o.delivery.job.unique is not None and isinstance(o, Completed | Failed)
            }.values()
        )
        unique_keys = [keys.unique(j.queue, j.unique) for j in keyed if j.unique is not None]
        watch = job_keys + [keys.chain(c) for c in chain_ids] + unique_keys
        fields = _SETTLE_FIELDS + self.layout.settle_fields
        take_queues = sorted(take.queues) if take is not None and chain_ids else []

        def body(tx: Transaction) -> tuple[list[SettleResult], list[Delivery]]:
            tx.watch(*watch)
            now = self.store.now()
            if events is not None:
                events.clear()

            def reads(r: Pipe) -> None:
                for k in job_keys:
                    r.hmget(k, *fields)
                for c in chain_ids:
                    r.get(keys.chain(c))
                for u in unique_keys:
                    r.get(u)
                for q in take_queues:
                    self._most_urgent(r, q, now)

            rows = tx.read(reads, tolerant=True)
            n = len(jobs) + len(chain_ids)
            rows[: len(jobs)] = self.guard.job_rows(rows[: len(jobs)], len(fields))
            for at, row in enumerate(rows[len(jobs) :], start=len(jobs)):
                if isinstance(row, Exception):
                    if at < n and wrong_type(row) is not None:  # a chain record of another type: as if gone
                        logger.error("redis_key_wrong_type", key=wrong_type(row), url=self.store.url)
                        rows[at] = None
                    else:
                        raise row
            urgent = rows[n + len(unique_keys) :]
            held = {j.id: dict(zip(fields, row, strict=True)) for j, row in zip(jobs, rows, strict=False)}
            for j, value in zip(keyed, rows[n : n + len(unique_keys)], strict=True):
                held[j.id]["unique"] = value
            chains = {
                c: record
                for c, raw in zip(chain_ids, rows[len(jobs) : n], strict=True)
                if (record := chain_or_none(c, raw)) is not None
            }
            before = dict(chains)
            pipe = tx.multi()
            writes = self.layout.writes()
            if take is not None:
                take.start({q: (urgent[2 * i], urgent[2 * i + 1]) for i, q in enumerate(take_queues)})
            results = [
                self._apply(pipe, writes, outcome, held, chains, now, take, events) for outcome in outcomes
            ]
            for chain_id, record in chains.items():
                if record is not before[chain_id]:
                    pipe.set(keys.chain(chain_id), chain_to_json(record))
                    if record.state is ChainState.COMPLETED:
                        self.store.expire(pipe, keys.chain(chain_id))
            writes.flush(pipe)
            return results, list(take.taken) if take is not None else []

        return self.store.transact(body, on=job_keys[0])[0]

    def _most_urgent(self, r: Pipe, queue: str, now: float) -> None:
        """Queue the reads that say what is ready in ``queue``: its most urgent band, a lease run out."""
        r.zrange(self.layout.ready_index(queue), 0, 0, withscores=True)
        r.zrangebyscore(self.keys.leases(queue), "-inf", now, start=0, num=1)

    def _place_leased(self, pipe: Pipe, writes: Writes, job: Job, take: Take, now: float) -> Delivery:
        """Store a next step already leased to the taking worker (it never enters the ready structure)."""
        token = secrets.token_hex(8)
        until = now + take.lease
        pipe.hset(
            self.keys.job(job.id, job.queue),
            mapping={
                "job": dumps(job.to_wire()),
                "queue": job.queue,
                "state": JobState.RUNNING.value,
                "token": token,
                "worker": take.worker,
                "lease_until": repr(until),
                "deliveries": 1,
            },
        )
        writes.lease(job.queue, job.id, until)
        self.layout.hold(pipe, job, take.worker)
        return Delivery(
            job=job, token=token, lease_until=until, worker=take.worker, delivery_count=1, crashes=0
        )

    def _apply(
        self,
        pipe: Pipe,
        writes: Writes,
        outcome: Outcome,
        held: dict[str, dict[str, str | None]],
        chains: dict[str, ChainRecord],
        now: float,
        take: Take | None = None,
        events: list[ChainEvent] | None = None,
    ) -> SettleResult:
        layout = self.layout
        delivery = outcome.delivery
        job = delivery.job
        row = held[job.id]
        token = row["token"]
        if token is None or token != delivery.token:
            logger.warning(
                "stale_settle_rejected", job_id=job.id, worker=delivery.worker, outcome=type(outcome).__name__
            )
            return SettleResult(accepted=False)
        held[job.id] = {**row, "token": None}  # a second outcome for this delivery is stale
        key = self.keys.job(job.id, job.queue)
        drop = layout.unlease(pipe, writes, job, delivery.worker, row, done=not isinstance(outcome, Released))
        drop.append("running")  # the mark ends with the delivery
        record = chains.get(job.chain.chain_id) if job.chain is not None else None
        if isinstance(outcome, Completed):
            pipe.hset(
                key,
                mapping={
                    "state": JobState.SUCCEEDED.value,
                    "result": dumps(outcome.result),
                    "started_at": repr(outcome.started_at),
                    "finished_at": repr(outcome.finished_at),
                },
            )
            pipe.hdel(key, "error", "deliveries", "crashes", *drop)
            self.store.expire(pipe, key)
            writes.succeed(job.queue, job.id, outcome.finished_at)  # the browse index, in this MULTI
            if self.store.result_ttl is not None:
                writes.keep_after = now - self.store.result_ttl
            if job.unique is not None:
                release(pipe, self.keys.unique(job.queue, job.unique), job, row.get("unique"))
            if job.chain is not None and events is not None:
                return self.outbox.put(pipe, events, ChainEvent.of(outcome, job.chain, now))
            if record is None or job.chain is None:
                return SettleResult(accepted=True)
            updated, following = workflow.apply_completed(
                record,
                job.chain,
                outcome.result,
                started_at=outcome.started_at,
                finished_at=outcome.finished_at,
                now=now,
                result_sig=outcome.result_sig,
            )
            chains[record.id] = updated
            for next_job in following:
                if take is not None and take.wants(next_job, self.store.band(next_job), now):
                    take.taken.append(self._place_leased(pipe, writes, next_job, take, now))
                else:
                    layout.place(pipe, writes, next_job, now, front=False)
            done = updated.state is ChainState.COMPLETED and record.state is not ChainState.COMPLETED
            return SettleResult(accepted=True, chain=updated if done else None)
        if isinstance(outcome, Retried):
            retry = job.retried(not_before=now + outcome.delay)
            pipe.hdel(key, "crashes", *drop, *stale_error_fields(job.attempt))
            layout.place(pipe, writes, retry, now, front=True)
            error = dumps(outcome.recorded_error.to_wire())  # also the attempt's entry in the history
            pipe.hset(key, mapping={"error": error, error_field(job.attempt): error, "deliveries": 0})
            return SettleResult(accepted=True)
        if isinstance(outcome, Failed):
            error = dumps(outcome.recorded_error.to_wire())
            pipe.hset(
                key,
                mapping={
                    "state": JobState.FAILED.value,
                    "error": error,
                    error_field(job.attempt): error,
                    "finished_at": repr(now),
                },
            )
            pipe.hdel(key, "deliveries", "crashes", *drop, *stale_error_fields(job.attempt))
            pipe.zadd(self.keys.failed_in(job.queue), {job.id: now})
            if job.unique is not None:
                release(pipe, self.keys.unique(job.queue, job.unique), job, row.get("unique"))
            if job.chain is not None and events is not None:
                return self.outbox.put(pipe, events, ChainEvent.of(outcome, job.chain, now))
            if record is None or job.chain is None:
                return SettleResult(accepted=True)
            updated_record = workflow.apply_failed(record, job.chain, outcome.error, now=now)
            chains[record.id] = updated_record
            halted = updated_record.state is ChainState.HALTED and record.state is not ChainState.HALTED
            return SettleResult(accepted=True, chain=updated_record if halted else None)
        if isinstance(outcome, Aborted):
            pipe.hset(
                key,
                mapping={
                    "state": JobState.CANCELLED.value,
                    "started_at": repr(outcome.started_at),
                    "finished_at": repr(outcome.finished_at),
                },
            )
            pipe.hdel(key, "deliveries", "crashes", *drop)
            self.store.expire(pipe, key)
            writes.cancel(job.queue, job.id, outcome.finished_at)  # the browse index, in this MULTI
            if self.store.result_ttl is not None:
                writes.keep_after = now - self.store.result_ttl
            if job.chain is not None and events is not None:
                return self.outbox.put(pipe, events, cancelled_event(job, job.chain, now))
            if record is None or job.chain is None:
                return SettleResult(accepted=True)
            cancelled = workflow.apply_cancelled(record, job.chain, now=now)
            chains[record.id] = cancelled
            ended = cancelled.state is ChainState.CANCELLED and record.state is not ChainState.CANCELLED
            return SettleResult(accepted=True, chain=cancelled if ended else None)
        assert isinstance(outcome, Released)
        pipe.hdel(key, *drop)
        layout.release(pipe, writes, job, row)
        pipe.hset(
            key,
            mapping={"state": JobState.QUEUED.value, "deliveries": max(0, int(row["deliveries"] or 1) - 1)},
        )
        return SettleResult(accepted=True)
