"""Browsing the Redis backends' jobs: candidates from the structures a state lives in, cut by the core.

Where a state's jobs are, per queue (all keys of one queue share its tag, so
this works the same on a Cluster):

* queued: the ready structure (band lists or band streams) and the lease set
  (a released redis-streams job waits there); running: the lease set. Neither
  is sorted by enqueue time, so a page reads every candidate's ``job`` field
  (one pipelined ``HGET`` each): O(jobs in the state) per page.
* delayed: the delayed set (scored by due time); failed: the failed set
  (scored by failure time); succeeded and cancelled: ``{q}:finished:<queue>:<state>``
  (scored by finish time; the succeeded one is written by the settle
  transaction and trimmed there to ``result_ttl``). A page reads the set from
  the cursor on, then the records of the page.

Each record read is checked against the state asked for (a job may have moved
since), then :func:`jobchain.browsing.page` cuts the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobchain.browsing import BROWSABLE, check_limit, check_state, decode_cursor, page
from jobchain.capabilities import JobPage
from jobchain.model import JobRecord, JobState
from jobchain_redis._reading import UNREADABLE
from jobchain_redis._records import record_of
from jobchain_redis.codec import decodable, loads

if TYPE_CHECKING:
    from jobchain_redis._layout import Layout
    from jobchain_redis._store import Store

__all__ = ["Browser"]

_CHUNK = 500


class Browser:
    """``browse`` and ``counts`` of a Redis backend."""

    def __init__(self, store: Store, layout: Layout) -> None:
        self.store = store
        self.keys = store.keys
        self.layout = layout

    def browse(
        self,
        *,
        queue: str,
        state: JobState,
        task: str | None,
        limit: int,
        cursor: str | None,
        oldest_first: bool,
    ) -> JobPage:
        check_limit(limit)
        check_state(state)
        after = decode_cursor(cursor) if cursor is not None else None
        if state in (JobState.QUEUED, JobState.RUNNING):
            candidates = self._by_enqueue_time(queue, state, task)
        else:
            candidates = self._scored(self._index(queue, state), after, oldest_first)
        return page(
            candidates,
            lambda ids: self._records(queue, ids),
            state=state,
            task=task,
            limit=limit,
            cursor=cursor,
            oldest_first=oldest_first,
        )

    def counts(self, queue: str) -> dict[JobState, int]:
        keys = self.keys
        out = dict.fromkeys(BROWSABLE, 0)
        stats = next((s for s in self.layout.stats() if s.queue == queue), None)
        if stats is not None:
            out[JobState.QUEUED] = stats.ready
            out[JobState.DELAYED] = stats.delayed
            out[JobState.RUNNING] = stats.in_flight
            out[JobState.FAILED] = stats.failed
        pipe = self.store.client.pipeline(transaction=False)
        pipe.zcount(keys.finished(queue, JobState.SUCCEEDED.value), self._kept_after(), "+inf")
        pipe.zcard(keys.finished(queue, JobState.CANCELLED.value))
        succeeded, cancelled = pipe.execute(raise_on_error=False)
        out[JobState.SUCCEEDED] = succeeded if isinstance(succeeded, int) else 0
        out[JobState.CANCELLED] = cancelled if isinstance(cancelled, int) else 0
        return out

    # --- candidates --------------------------------------------------------------------

    def _kept_after(self) -> str:
        ttl = self.store.result_ttl
        return "-inf" if ttl is None else repr(self.store.now() - ttl)

    def _index(self, queue: str, state: JobState) -> str:
        if state is JobState.DELAYED:
            return self.keys.delayed(queue)
        if state is JobState.FAILED:
            return self.keys.failed_in(queue)
        return self.keys.finished(queue, state.value)

    def _scored(
        self, index: str, after: tuple[float, str] | None, oldest_first: bool
    ) -> list[tuple[float, str]]:
        """(score, id) of the set's members from the cursor's score on, in the page's direction."""
        low = "-inf"
        if index.endswith(":" + JobState.SUCCEEDED.value):
            low = self._kept_after()
        high = "+inf"
        if after is not None:  # the cursor's own score is kept: ties are cut by id
            if oldest_first:
                low = max(low, repr(after[0]), key=lambda s: float(s))
            else:
                high = repr(after[0])
        try:
            members = self.store.client.zrangebyscore(index, low, high, withscores=True)
        except Exception as exc:  # a key of the wrong type lists nothing
            if "WRONGTYPE" in str(exc):
                return []
            raise
        return [(float(score), j) for j, score in members if decodable(j)]

    def _by_enqueue_time(self, queue: str, state: JobState, task: str | None) -> list[tuple[float, str]]:
        client = self.store.client
        ids = client.zrange(self.keys.leases(queue), 0, -1)
        if state is JobState.QUEUED:
            ids = self.layout.ready_ids(queue) + ids
        ids = [j for j in dict.fromkeys(ids) if decodable(j)]
        out: list[tuple[float, str]] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            pipe = client.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hmget(self.keys.job(job_id, queue), "job", "state")
            for job_id, reply in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                if not isinstance(reply, list) or reply[0] is None or reply[1] != state.value:
                    continue
                try:
                    raw = loads(reply[0])
                    if task is not None and raw.get("task") != task:
                        continue
                    out.append((float(raw["enqueued_at"]), job_id))
                except (*UNREADABLE, AttributeError):
                    out.append((0.0, job_id))  # shown as an unreadable record
        return out

    def _records(self, queue: str, ids: Sequence[str]) -> list[JobRecord | None]:
        pipe = self.store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id, queue))
        return [
            record_of(job_id, raw) if isinstance(raw, dict) and "job" in raw else None
            for job_id, raw in zip(ids, pipe.execute(raise_on_error=False), strict=True)
        ]
