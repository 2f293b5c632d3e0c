"""Uniqueness keys in Redis: ``enqueue_unique``, and the release a settlement applies in its own transaction.

A held key is a string ``{q}:unique:<queue>:<key>`` in its queue's tag, so
it hashes with the jobs it guards: on a Cluster it lives in the queue's slot,
and the WATCH/MULTI/EXEC that stores a job and takes its key (or the
settlement that finishes the job and frees it) never spans two slots. Its
value is the holder's job id, held until the holder reaches a final state;
or ``"<id> <until>"`` for a key held for a time (``until`` on the backend's
clock; the key also expires by itself a little after that, in Redis time).
A key whose holder is finished or gone, or whose time has passed, is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobchain.model import Job, JobState
from jobchain.uniqueness import check_batch, holder_is_live
from jobchain_redis.connection import Pipe, Transaction

if TYPE_CHECKING:
    from jobchain_redis._layout import Layout
    from jobchain_redis._store import Store

__all__ = ["Uniques", "holder_of", "release"]

#: a timed key lives this much longer in Redis than its hold (its own clock may lag the backend's)
_EXPIRY_MARGIN = 60.0


def holder_of(value: str | None) -> tuple[str, float | None] | None:
    """The holder's id and the time held until (None: until it finishes) from a key's value."""
    if not value:
        return None
    holder, _, until = value.partition(" ")
    try:
        return holder, float(until) if until else None
    except ValueError:
        return holder, None


def release(pipe: Pipe, key: str, job: Job, value: str | None) -> None:
    """Queue the deletion of ``key`` (``job``'s, read under WATCH as ``value``) if ``job`` holds it.

    The settlement that finishes the job calls it; a cancel should too.
    """
    if value == job.id:
        pipe.delete(key)


class Uniques:
    """``enqueue_unique``: one WATCH/MULTI/EXEC per queue tag, storing jobs whose id and key are free."""

    def __init__(self, store: Store, layout: Layout) -> None:
        self.store = store
        self.keys = store.keys
        self.layout = layout

    def enqueue_unique(self, jobs: Sequence[Job], keys: Sequence[str], hold: float | None) -> list[str]:
        check_batch(jobs, keys, hold)
        store = self.store
        store.note_queues(job.queue for job in jobs)
        answers: dict[int, str] = {}
        for group in store.by_tag(
            list(enumerate(zip(jobs, keys, strict=True))), lambda item: item[1][0].queue
        ):
            items = [(index, job, self.keys.unique(job.queue, key)) for index, (job, key) in group]

            def body(tx: Transaction, items: list[tuple[int, Job, str]] = items) -> dict[int, str]:
                return self._apply(tx, items, hold)

            answers.update(store.transact(body, on=items[0][2])[0])
        return [answers[index] for index in range(len(jobs))]

    def _apply(
        self, tx: Transaction, items: list[tuple[int, Job, str]], hold: float | None
    ) -> dict[int, str]:
        keys = self.keys
        job_keys = [keys.job(job.id, job.queue) for _, job, _ in items]
        unique_keys = list(dict.fromkeys(key for _, _, key in items))
        tx.watch(*job_keys, *unique_keys)
        rows = tx.read(lambda r: [r.exists(k) for k in job_keys] + [r.get(k) for k in unique_keys])
        exists = rows[: len(job_keys)]
        held = {key: holder_of(value) for key, value in zip(unique_keys, rows[len(job_keys) :], strict=True)}
        now = self.store.now()
        # a key held until its holder finishes: read the holder's state (under WATCH too)
        queue_of = {key: job.queue for _, job, key in items}
        checks = [(key, h[0]) for key, h in held.items() if h is not None and h[1] is None]
        if checks:
            holder_keys = [keys.job(holder, queue_of[key]) for key, holder in checks]
            tx.watch(*holder_keys)
            states = tx.read(lambda r: [r.hget(k, "state") for k in holder_keys])
            for (key, _), state in zip(checks, states, strict=True):
                if not holder_is_live(_state(state)):
                    held[key] = None
        answers: dict[int, str] = {}
        pipe = tx.multi()
        writes = self.layout.writes()
        for (index, job, key), known in zip(items, exists, strict=True):
            holder = held[key]
            if known:
                answers[index] = job.id
            elif holder is not None and (holder[1] is None or holder[1] > now):
                answers[index] = holder[0]
            else:
                self.layout.place(pipe, writes, job, now, front=False)
                if hold is None:
                    pipe.set(key, job.id)
                else:
                    pipe.set(key, f"{job.id} {now + hold!r}", px=int((hold + _EXPIRY_MARGIN) * 1000))
                held[key] = (job.id, None if hold is None else now + hold)
                answers[index] = job.id
        writes.flush(pipe)
        return answers


def _state(value: str | None) -> JobState | None:
    if value is None:
        return None
    try:
        return JobState(value)
    except ValueError:
        return None
