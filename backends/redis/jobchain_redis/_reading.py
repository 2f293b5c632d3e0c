"""Reading what the Redis backends stored: payloads, chain records, and stand-ins for what cannot be read.

Data that jobchain did not write (not JSON, not UTF-8, fields missing …) never
stops a transition: a job that cannot be read is filed as failed under a
placeholder (task :data:`~jobchain.model.UNREADABLE_TASK`), a chain record that
cannot be read is treated as gone, each logged.
"""

from __future__ import annotations

import structlog

from jobchain.errors import InvalidJobError
from jobchain.model import UNREADABLE_TASK, ChainRecord, Job
from jobchain_redis.codec import chain_from_json, decodable, loads

__all__ = [
    "UNREADABLE",
    "chain_or_none",
    "job_or_none",
    "parse_job",
    "placeholder",
    "printable",
    "wrong_type_message",
]

logger = structlog.get_logger("jobchain.redis")

#: what reading stored data that jobchain did not write may raise (not JSON, not UTF-8, fields missing …)
UNREADABLE = (ValueError, TypeError, KeyError)


def parse_job(raw: str | None) -> Job:
    """The job of a stored payload; raises one of :data:`UNREADABLE` for anything else."""
    if raw is None:
        raise InvalidJobError("the job's hash has no payload")
    return Job.from_wire(loads(raw))


def job_or_none(raw: str | None) -> Job | None:
    try:
        return parse_job(raw)
    except UNREADABLE:
        return None


def chain_or_none(chain_id: str, raw: str | None) -> ChainRecord | None:
    """The chain record as stored; None (logged) if it is gone or cannot be read.

    A transition meeting an unreadable chain record settles its job and leaves
    the chain where it is, as for an expired record: one bad record never
    blocks the jobs' settlement.
    """
    if raw is None:
        return None
    try:
        return chain_from_json(raw)
    except UNREADABLE as exc:
        logger.error("chain_record_unreadable", chain_id=chain_id, error=str(exc))
        return None


def printable(text: str) -> str:
    """``text`` with the bytes that were not UTF-8 shown as U+FFFD (for messages and listings)."""
    return text if decodable(text) else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def placeholder(job_id: str, queue: str | None, at: float) -> Job:
    """The stand-in job of an unreadable one (task :data:`UNREADABLE_TASK`), as the failed queue shows it."""
    queue = queue if queue and decodable(queue) else "default"
    return Job(id=printable(job_id), task=UNREADABLE_TASK, queue=queue, enqueued_at=at)


def wrong_type_message(key: str) -> str:
    return f"Redis key {key!r} holds a value of the wrong type (not a hash): it was not written by jobchain"
