"""Keys of the wrong type: a queue one of whose keys jobchain did not write is left out for a while.

A key holding another type than jobchain's layout says (a list where a sorted
set belongs …) makes its commands answer ``WRONGTYPE``. Reservations fail
closed for that queue only: :class:`QueueGuard` leaves it out for
:data:`BLOCK_WAIT` seconds (logged), and the other queues go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
import structlog

from jobchain_redis.connection import wrong_type
from jobchain_redis.keys import Keys

__all__ = ["BLOCK_WAIT", "COUNT_TOLERATE", "QueueGuard"]

logger = structlog.get_logger("jobchain.redis")

R = TypeVar("R")

#: seconds a queue one of whose keys holds the wrong type is left out of reservations, then tried again
BLOCK_WAIT = 5.0
#: error codes a transaction that reports counts tolerates (a key of the wrong type counts as empty)
COUNT_TOLERATE = ("WRONGTYPE",)


class QueueGuard:
    """The queues left out for a key of the wrong type, and the reads that find them."""

    def __init__(self, keys: Keys, url: str) -> None:
        self.keys = keys
        self.url = url
        #: queues with a key of the wrong type: monotonic time to try them again
        self.blocked: dict[str, float] = {}

    def open_queues(self, queues: Sequence[str]) -> list[str]:
        """``queues`` but those left out for a key of the wrong type (for ``BLOCK_WAIT`` seconds)."""
        if not self.blocked:
            return list(queues)
        now = time.monotonic()
        for queue in [q for q, until in self.blocked.items() if until <= now]:
            del self.blocked[queue]
        return [q for q in queues if q not in self.blocked]

    def block(self, queue: str, key: str, operation: str) -> None:
        """Leave ``queue`` out of reservations for a while: ``key`` holds a type jobchain did not write."""
        self.blocked[queue] = time.monotonic() + BLOCK_WAIT
        logger.error(
            "redis_key_wrong_type",
            key=key,
            queue=queue,
            operation=operation,
            url=self.url,
            retry_in=BLOCK_WAIT,
            hint="the key holds a value of another type than jobchain's layout; rename or delete it",
        )

    def guarded(self, queue: str, operation: str, step: Callable[[], R], key: str | None = None) -> R | None:
        """Run one queue's ``step``; on a key of the wrong type, block the queue (logged) and return None.

        The step failed before its EXEC (its reads under WATCH met the key), so
        nothing of it was applied; the other queues go on.
        """
        try:
            return step()
        except redis.ResponseError as exc:
            named = wrong_type(exc, key)
            if named is None:
                raise
            self.block(queue, named, operation)
            return None

    def per_queue(
        self,
        queues: Sequence[str],
        replies: Sequence[Any],
        keys_of: Callable[[str], Sequence[str]],
        operation: str,
    ) -> tuple[list[str], list[Any]]:
        """Replies of a pipeline of ``len(keys_of(q))`` reads per queue, without the queues that met a
        key of the wrong type (blocked, logged): the queues kept and their replies."""
        kept: list[str] = []
        out: list[Any] = []
        at = 0
        for queue in queues:
            keys = keys_of(queue)
            chunk = list(replies[at : at + len(keys)])
            at += len(keys)
            failed = [(key, r) for key, r in zip(keys, chunk, strict=True) if isinstance(r, Exception)]
            if not failed:
                kept.append(queue)
                out += chunk
                continue
            key = wrong_type(failed[0][1], failed[0][0])
            if key is None:
                raise failed[0][1]
            self.block(queue, key, operation)
        return kept, out

    def job_rows(self, rows: list[Any], width: int | None = None) -> list[Any]:
        """Job-hash rows read under WATCH (``tolerant``); a hash of the wrong type reads as a job not held.

        The delivery's outcome is then rejected as stale, or its lease not
        extended: the other jobs of the batch settle, and the bad one is filed
        when its lease runs out (see :func:`jobchain_redis._failed.park`). Any other error is raised.
        """
        out: list[Any] = []
        for row in rows:
            if isinstance(row, Exception):
                key = wrong_type(row)
                if key is None:
                    raise row
                logger.error(
                    "redis_key_wrong_type", key=key, url=self.url, hint="a job's hash holds another type"
                )
                row = [None] * (width or 1)
            out.append(row)
        return out
