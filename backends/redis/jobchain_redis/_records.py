"""Job and chain records and the worker registry of the Redis backends.

A job's record is its hash (payload, state, result or error, times); a
chain's, its JSON under ``chain``. Workers register under their name in a
sorted set scored by heartbeat deadline, their registrations alongside; a
stop request is a set member (see :mod:`jobchain_redis.keys`).

A job's error history lives in the same hash, so it is written inside the
settlement's MULTI/EXEC with no read: the error of attempt *n* goes to field
``error:<n>`` and the field of attempt *n* - :data:`~jobchain.model.MAX_KEPT_ERRORS`
is deleted in the same HSET/HDEL the settlement sends anyway. A re-drive (which
starts the attempts again at 1) folds the history into one JSON list under
``errors``, cut to the last ``MAX_KEPT_ERRORS``; the record reads that list,
then the ``error:<n>`` fields by attempt, and keeps the last ``MAX_KEPT_ERRORS``.
A hash written before histories were kept reads with its ``error`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from jobchain.backend import name_taken
from jobchain.errors import BackendError
from jobchain.model import MAX_KEPT_ERRORS, ChainRecord, ErrorInfo, JobRecord, JobState, WorkerInfo
from jobchain_redis._reading import UNREADABLE, parse_job, placeholder, printable, wrong_type_message
from jobchain_redis.codec import chain_from_json, decodable, dumps, loads
from jobchain_redis.connection import Pipe, Transaction, wrong_type

if TYPE_CHECKING:
    from jobchain_redis._store import Store

__all__ = ["HISTORY_FIELD", "Records", "error_field", "history_of", "record_of", "stale_error_fields"]

#: the job-hash field of the history a re-drive folded (a JSON list of errors, oldest first)
HISTORY_FIELD = "errors"
_ATTEMPT_PREFIX = "error:"


def error_field(attempt: int) -> str:
    """The job-hash field that holds the error of attempt ``attempt``."""
    return f"{_ATTEMPT_PREFIX}{attempt}"


def stale_error_fields(attempt: int) -> list[str]:
    """The field that recording attempt ``attempt`` pushes out of the kept history (none early on)."""
    return [error_field(attempt - MAX_KEPT_ERRORS)] if attempt > MAX_KEPT_ERRORS else []


def history_of(raw: dict[str, str], error: ErrorInfo | None) -> tuple[ErrorInfo, ...]:
    """The error history in a job's hash: the folded list, then the attempts' fields, the last kept."""
    attempts = sorted(
        (int(name[len(_ATTEMPT_PREFIX) :]), value)
        for name, value in raw.items()
        if name.startswith(_ATTEMPT_PREFIX) and name[len(_ATTEMPT_PREFIX) :].isdigit()
    )
    folded = raw.get(HISTORY_FIELD)
    if folded is None and not attempts:
        return () if error is None else (error,)
    history = [ErrorInfo.from_wire(item) for item in (loads(folded) if folded is not None else [])]
    history += [ErrorInfo.from_wire(loads(value)) for _, value in attempts]
    return tuple(history[-MAX_KEPT_ERRORS:])


logger = structlog.get_logger("jobchain.redis")


class Records:
    """``get_job``, ``get_chain`` and the worker registry (``heartbeat``, ``workers`` …)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys

    def get_job(self, job_id: str) -> JobRecord | None:
        client = self.store.client
        queues = sorted(client.smembers(self.keys.queues)) if self.keys.spread else [None]
        pipe = client.pipeline(transaction=False)
        self.queue_job_reads(pipe, job_id, queues)
        return self.job_from(job_id, queues, pipe.execute(raise_on_error=False))

    async def get_job_async(self, client: Any, job_id: str) -> JobRecord | None:
        """:meth:`get_job` on a ``redis.asyncio`` client: the same reads, the same record."""
        queues = sorted(await client.smembers(self.keys.queues)) if self.keys.spread else [None]
        pipe = client.pipeline(transaction=False)
        self.queue_job_reads(pipe, job_id, queues)
        return self.job_from(job_id, queues, await pipe.execute(raise_on_error=False))

    def queue_job_reads(self, pipe: Pipe, job_id: str, queues: Sequence[str | None]) -> None:
        """Queue the reads of a job's hash (spread layout: the key depends on the queue, so one per queue)."""
        for queue in queues:
            pipe.hgetall(self.keys.job(job_id, queue))

    def job_from(self, job_id: str, queues: Sequence[str | None], replies: Sequence[Any]) -> JobRecord | None:
        """The job's record from the replies of :meth:`queue_job_reads`."""
        for queue, reply in zip(queues, replies, strict=True):
            key = wrong_type(reply, self.keys.job(job_id, queue))
            if key is not None:
                return JobRecord(
                    job=placeholder(job_id, queue, 0.0),
                    state=JobState.FAILED,
                    error=ErrorInfo(type="UnreadableJob", message=wrong_type_message(key), attempt=1, at=0.0),
                )
            if isinstance(reply, Exception):
                raise reply
        raw: dict[str, str] = next((found for found in replies if found and "job" in found), {})
        if not raw or "job" not in raw:
            return None
        return record_of(job_id, raw)

    def get_chain(self, chain_id: str) -> ChainRecord | None:
        return self.chain_from(chain_id, self.store.client.get(self.keys.chain(chain_id)))

    async def get_chain_async(self, client: Any, chain_id: str) -> ChainRecord | None:
        """:meth:`get_chain` on a ``redis.asyncio`` client."""
        return self.chain_from(chain_id, await client.get(self.keys.chain(chain_id)))

    def chain_from(self, chain_id: str, raw: str | None) -> ChainRecord | None:
        if raw is None:
            return None
        try:
            return chain_from_json(raw)
        except UNREADABLE as exc:
            raise BackendError(f"the record of chain {chain_id} cannot be read: {exc}") from None

    # --- workers ---------------------------------------------------------------------

    def _holder(self, tx: Transaction, name: str) -> tuple[WorkerInfo | None, float | None]:
        """WATCH the registration of ``name`` and read it: who holds the name, until when."""
        worker_key = self.keys.worker(name)
        tx.watch(self.keys.workers, worker_key)
        until, raw = tx.read(lambda r: (r.zscore(self.keys.workers, name), r.get(worker_key)))
        return (None if raw is None else WorkerInfo.from_wire(loads(raw))), until

    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        # WATCH: two workers claiming a free name at once cannot both succeed
        now = self.store.now()

        def body(tx: Transaction) -> None:
            holder, until = self._holder(tx, info.name)
            live = until is not None and until > now
            taken = name_taken(holder, live, info)
            if taken is not None:
                raise taken
            pipe = tx.multi()
            if holder is None or not live or holder.instance != info.instance:
                pipe.srem(self.keys.stop, info.name)  # a stop request for the name's last holder
            pipe.set(self.keys.worker(info.name), dumps(info.to_wire()))
            pipe.zadd(self.keys.workers, {info.name: now + ttl})
            pipe.sismember(self.keys.stop, info.name)

        return bool(self.store.transact(body, on=self.keys.workers)[1][-1])

    def remove_worker(self, name: str, instance: str | None = None) -> None:
        def body(tx: Transaction) -> None:
            if instance is not None:
                holder, _ = self._holder(tx, name)
                if holder is None or holder.instance != instance:
                    return  # another worker holds the name now: its registration stays
            pipe = tx.multi()
            pipe.zrem(self.keys.workers, name)
            pipe.delete(self.keys.worker(name))
            pipe.srem(self.keys.stop, name)

        self.store.transact(body, on=self.keys.workers)

    def workers(self) -> list[WorkerInfo]:
        client = self.store.client
        names = client.zrangebyscore(self.keys.workers, f"({self.store.now()!r}", "+inf")
        if not names:
            return []
        raws = client.mget([self.keys.worker(n) if decodable(n) else "" for n in names])
        infos = [_worker_info(name, raw) for name, raw in zip(names, raws, strict=True)]
        return sorted((i for i in infos if i is not None), key=lambda i: i.name)

    def request_stop(self, name: str) -> bool:
        until = self.store.client.zscore(self.keys.workers, name)
        if until is None or until <= self.store.now():
            return False
        self.store.client.sadd(self.keys.stop, name)
        return True


def _float(raw: str | None) -> float | None:
    return None if raw is None else float(raw)


def record_of(job_id: str, raw: dict[str, str]) -> JobRecord:
    """A job's record from its hash; a hash that cannot be read is shown as a failed unreadable job."""
    try:
        stored_error = raw.get("error")
        result = raw.get("result")
        state = JobState(raw.get("state", JobState.QUEUED.value))
        error = None if stored_error is None else ErrorInfo.from_wire(loads(stored_error))
        return JobRecord(
            job=parse_job(raw["job"]),
            state=state,
            result=None if result is None else loads(result),
            error=error,
            errors=_readable_history(job_id, raw, error),
            started_at=_float(raw.get("started_at")),
            finished_at=_float(raw.get("finished_at")),
            worker=raw.get("worker") if state is JobState.RUNNING else None,
        )
    except UNREADABLE as exc:
        bad = sorted(printable(k) for k, v in raw.items() if not decodable(k) or not decodable(v))
        reason = f"field {', '.join(bad)} is not valid UTF-8" if bad else str(exc)
        return JobRecord(
            job=placeholder(job_id, raw.get("queue"), 0.0),
            state=JobState.FAILED,
            error=ErrorInfo(type="UnreadableJob", message=reason, attempt=1, at=0.0),
        )


def _readable_history(job_id: str, raw: dict[str, str], error: ErrorInfo | None) -> tuple[ErrorInfo, ...]:
    """The job's error history; one that cannot be read is logged and shown as ``error`` alone."""
    try:
        return history_of(raw, error)
    except UNREADABLE as exc:
        logger.warning("error_history_unreadable", job_id=printable(job_id), error=str(exc))
        return () if error is None else (error,)


def _worker_info(name: str, raw: str | None) -> WorkerInfo | None:
    """A worker's registration; one that cannot be read is listed with its name and state ``unreadable``."""
    if raw is None:
        return None
    try:
        return WorkerInfo.from_wire(loads(raw))
    except UNREADABLE as exc:
        logger.warning("worker_registration_unreadable", worker=printable(name), error=str(exc))
        return WorkerInfo(
            name=printable(name),
            host="?",
            pid=0,
            queues=(),
            started_at=0.0,
            heartbeat_at=0.0,
            state="unreadable",
        )
