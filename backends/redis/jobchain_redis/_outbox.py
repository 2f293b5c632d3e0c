"""The Cluster outbox: the second part of a chain transition in the spread layout.

Settling a chain's job on a Redis Cluster takes two transactions, since the
chain record and the next step's queue are in other slots than the job: the
first settles the job and writes a :class:`ChainEvent` to the outbox of the
job's queue (:meth:`Outbox.put`); the second applies it to the chain record,
then the next step's jobs are stored and the entry is deleted
(:meth:`Outbox.advance`). Each part is idempotent, so whoever finds the entry
later (a reserver's :meth:`Outbox.sweep`) finishes what a dead settler left.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from attrs import frozen

from jobchain import workflow
from jobchain.model import ChainRecord, ChainRef, ChainState, Completed, ErrorInfo, Failed, Job, SettleResult
from jobchain_redis._reading import chain_or_none
from jobchain_redis.codec import chain_to_json, dumps, loads
from jobchain_redis.connection import Pipe, Transaction

if TYPE_CHECKING:
    from jobchain_redis._enqueue import Enqueuer
    from jobchain_redis._store import Store

__all__ = ["OUTBOX_GRACE", "OUTBOX_SWEEP", "ChainEvent", "Outbox"]

logger = structlog.get_logger("jobchain.redis")

#: seconds between two looks of a reserver at its queues' outboxes (spread layout)
OUTBOX_SWEEP = 2.0
#: an outbox entry older than this many seconds is finished by the sweep (its settler died, or Redis
#: went away between the two parts); a younger one is still being finished by its settler
OUTBOX_GRACE = 1.0


@frozen
class ChainEvent:
    """A finished chain job whose chain has not yet moved on: an outbox entry (see the module docstring).

    Named by the job and its delivery (``field``), so writing it twice is harmless.
    """

    queue: str
    job_id: str
    field: str
    ref: ChainRef
    completed: bool
    result: Any = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float = 0.0
    at: float = 0.0
    result_sig: str | None = None
    #: the job was cancelled (neither completed nor failed): its chain ends cancelled
    cancelled: bool = False

    @classmethod
    def of(cls, outcome: Completed | Failed, ref: ChainRef, now: float) -> ChainEvent:
        """The event of a chain job's accepted completion or failure, named by the job and its delivery."""
        job, token = outcome.delivery.job, outcome.delivery.token
        done = isinstance(outcome, Completed)
        return cls(
            queue=job.queue,
            job_id=job.id,
            field=f"{job.id}:{token}",
            ref=ref,
            completed=done,
            result=outcome.result if isinstance(outcome, Completed) else None,
            error=outcome.error if isinstance(outcome, Failed) else None,
            started_at=outcome.started_at if isinstance(outcome, Completed) else None,
            finished_at=outcome.finished_at if isinstance(outcome, Completed) else now,
            at=now,
            result_sig=outcome.result_sig if isinstance(outcome, Completed) else None,
        )

    def to_json(self) -> str:
        extra: dict[str, Any] = {} if self.result_sig is None else {"rs": self.result_sig}
        if self.cancelled:
            extra["x"] = True
        return dumps(
            {
                **extra,
                "q": self.queue,
                "j": self.job_id,
                "c": self.ref.chain_id,
                "s": self.ref.step,
                "m": self.ref.member,
                "ok": self.completed,
                "r": self.result,
                "e": None if self.error is None else self.error.to_wire(),
                "sa": self.started_at,
                "fa": self.finished_at,
                "at": self.at,
            }
        )

    @classmethod
    def from_json(cls, field: str, raw: str) -> ChainEvent:
        data = loads(raw)
        return cls(
            queue=data["q"],
            job_id=data["j"],
            field=field,
            ref=ChainRef(chain_id=data["c"], step=data["s"], member=data["m"]),
            completed=bool(data["ok"]),
            result=data.get("r"),
            error=None if data.get("e") is None else ErrorInfo.from_wire(data["e"]),
            started_at=data.get("sa"),
            finished_at=float(data.get("fa") or 0.0),
            at=float(data.get("at") or 0.0),
            result_sig=data.get("rs"),
            cancelled=bool(data.get("x")),
        )


class Outbox:
    """The outboxes of the queues (spread layout): events written by settle, applied to their chains."""

    def __init__(self, store: Store, enqueuer: Enqueuer) -> None:
        self.store = store
        self.keys = store.keys
        self.enqueuer = enqueuer
        #: monotonic time of the last sweep
        self.swept_at = time.monotonic()

    def put(self, pipe: Pipe, events: list[ChainEvent], event: ChainEvent) -> SettleResult:
        """Queue the outbox entry of a finished chain job (inside its settlement's MULTI)."""
        pipe.hset(self.keys.outbox(event.queue), event.field, event.to_json())
        events.append(event)
        return SettleResult(accepted=True)

    def advance(self, event: ChainEvent) -> ChainRecord | None:
        """Apply a finished job's event to its chain, store the jobs then due, drop the outbox entry.

        Idempotent at every step: the chain record ignores an event it has
        (:mod:`jobchain.workflow`); the due jobs are derived from the record,
        not from the event, so a second pass finds the same ones, and storing
        them leaves out the ids that exist. Returns the record when this event
        finished the chain (completed, halted or cancelled), for the settle's result.
        """
        store = self.store
        key = self.keys.chain(event.ref.chain_id)

        def body(tx: Transaction) -> tuple[ChainRecord | None, list[Job]]:
            tx.watch(key)
            [raw] = tx.read(lambda r: r.get(key))
            stored = chain_or_none(event.ref.chain_id, raw)
            if stored is None:
                return None, []  # expired, never stored, or unreadable
            now = store.now()
            record = before = stored
            if event.completed:
                record, _ = workflow.apply_completed(
                    record,
                    event.ref,
                    event.result,
                    started_at=event.started_at,
                    finished_at=event.finished_at,
                    now=now,
                    result_sig=event.result_sig,
                )
                due = workflow.due_after(record, event.ref.step, now)
            elif event.cancelled:
                record = workflow.apply_cancelled(record, event.ref, now=now)
                due = []
            else:
                assert event.error is not None
                record = workflow.apply_failed(record, event.ref, event.error, now=now)
                due = []
            if record is before:
                return None, due
            pipe = tx.multi()
            pipe.set(key, chain_to_json(record))
            if record.state is ChainState.COMPLETED:
                store.expire(pipe, key)
            return (record if record.finished and not before.finished else None), due

        finished, due = store.transact(body, on=key)[0]
        if due:
            self.enqueuer.enqueue(due, (), fresh=False)
        store.client.hdel(self.keys.outbox(event.queue), event.field)
        return finished

    def sweep(self, queues: Sequence[str]) -> None:
        """Finish the chain transitions a settler left in ``queues``' outboxes (every OUTBOX_SWEEP s)."""
        if not self.keys.spread or time.monotonic() - self.swept_at < OUTBOX_SWEEP:
            return
        self.swept_at = time.monotonic()
        pipe = self.store.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hgetall(self.keys.outbox(queue))
        now = self.store.now()
        for entries in pipe.execute():
            for field, raw in entries.items():
                try:
                    event = ChainEvent.from_json(field, raw)
                except (ValueError, KeyError, TypeError) as exc:
                    logger.error("outbox_entry_unreadable", field=field, error=str(exc))
                    continue
                if now - event.at >= OUTBOX_GRACE:
                    logger.info("chain_advance_resumed", job_id=event.job_id, chain_id=event.ref.chain_id)
                    self.advance(event)
