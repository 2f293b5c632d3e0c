"""How ``redis-lists`` takes ready jobs: the most urgent bands' heads, moved and leased in one MULTI/EXEC.

One look (:meth:`ListTaker.take`) reads the queues' indexes (due delayed jobs,
leases run out, the most urgent bands) in one pipeline; if anything is due it
promotes (:meth:`ListTaker.promote`: delayed jobs, and jobs whose lease ran
out, back to the head of their bands) and reads again; then it moves the heads
of the most urgent bands into the worker's processing list and leases them.
See :mod:`jobchain_redis.lists` for the layout.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
import structlog

from jobchain.ids import new_id
from jobchain.model import Delivery, Job, JobState
from jobchain_redis._failed import park, quarantine
from jobchain_redis._guard import COUNT_TOLERATE
from jobchain_redis._layout import charge, promote_delayed
from jobchain_redis._reading import UNREADABLE, parse_job
from jobchain_redis.codec import decodable, to_bytes
from jobchain_redis.connection import Pipe, Transaction, wrong_type

if TYPE_CHECKING:
    from jobchain_redis._guard import QueueGuard
    from jobchain_redis._store import Store
    from jobchain_redis.lists import ListsLayout

__all__ = ["ListTaker"]

logger = structlog.get_logger("jobchain.redis.lists")

#: how many expired leases one pass moves back per queue
_PROMOTE_BATCH = 200


class ListTaker:
    """Reserving from the band lists of a :class:`~jobchain_redis.lists.ListsLayout`."""

    def __init__(self, store: Store, guard: QueueGuard, layout: ListsLayout) -> None:
        self.store = store
        self.keys = store.keys
        self.guard = guard
        self.layout = layout

    def take(self, queues: Sequence[str], limit: int, lease: float, worker: str) -> list[Delivery]:
        for _ in range(50):
            now = self.store.now()
            candidates = self._scan(queues, limit, now)
            if not candidates:
                return []
            taken = self._take(candidates, limit, now + lease, worker)
            if taken is not None:
                return taken
        return []

    def _scan(self, queues: Sequence[str], limit: int, now: float) -> list[tuple[float, str, str]]:
        """Promote due jobs and lost leases, then list the most urgent bands, most urgent first.

        A queue one of whose keys holds the wrong type is left out for a while (see ``_guarded``).
        """
        keys = self.keys

        def read_index(queues: Sequence[str]) -> tuple[list[str], list[Any]]:
            pipe = self.store.pipeline()
            for q in queues:
                pipe.zrangebyscore(keys.delayed(q), "-inf", now, start=0, num=1)
                pipe.zrangebyscore(keys.leases(q), "-inf", now, start=0, num=1)
                pipe.zrange(keys.bands(q), 0, limit - 1, withscores=True)
            return self.guard.per_queue(
                queues,
                pipe.execute(raise_on_error=False),
                lambda q: (keys.delayed(q), keys.leases(q), keys.bands(q)),
                "reserve",
            )

        queues, found = read_index(self.guard.open_queues(queues))
        if any(found[i] or found[i + 1] for i in range(0, len(found), 3)):
            self.promote(queues, now)
            queues, found = read_index(self.guard.open_queues(queues))
        ranked = sorted(
            (score, q, band) for q, index in zip(queues, found[2::3], strict=True) for band, score in index
        )
        if self.keys.spread and ranked:  # one transaction takes them: the most urgent band's tag only
            tag = self.keys.queue_tag(ranked[0][1])
            ranked = [c for c in ranked if self.keys.queue_tag(c[1]) == tag]
        return ranked[:limit]

    def _take(
        self, candidates: Sequence[tuple[float, str, str]], limit: int, lease_until: float, worker: str
    ) -> list[Delivery] | None:
        """Move the heads of the bands into the worker's processing list and lease them, in one MULTI/EXEC.

        The band lists are WATCHed while their heads are read, so the ids moved are
        the ids read; a reserver racing for the same band makes EXEC fail and this
        one reads again. Returns None when every candidate band was empty.

        A run after an EXEC whose reply was lost (``tx.attempt > 1``) finds the
        heads it moved gone: the jobs an earlier run leased are read under WATCH,
        and those still holding the token that run gave them are this
        reservation's own, delivered as they are.
        """
        keys = self.keys
        processing = keys.processing(worker, candidates[0][1])
        ready_keys = [keys.ready(q, int(band)) for _, q, band in candidates]
        filed: list[str] = []  # ready entries that were not valid UTF-8, filed as failed
        # job id -> (queue, token) of every lease an earlier run queued: one of them may have been applied
        leased_before: dict[str, tuple[str, str]] = {}

        def body(tx: Transaction) -> tuple[list[tuple[str, str, str, str, int]], list[tuple[str, str]]]:
            earlier = list(leased_before.items()) if tx.attempt > 1 else []
            tx.watch(*ready_keys, *(keys.job(j, q) for j, (q, _) in earlier))
            rows = tx.read(
                lambda r: (
                    [r.lrange(k, 0, limit - 1) for k in ready_keys]
                    + [r.hget(keys.job(j, q), "token") for j, (q, _) in earlier]
                ),
                tolerant=bool(earlier),  # a job hash of another type is no lease of ours
            )
            heads, tokens = rows[: len(ready_keys)], rows[len(ready_keys) :]
            for row in heads:
                if isinstance(row, Exception):
                    raise row
            # the leases an earlier run's EXEC applied (its reply lost): their jobs still hold its tokens
            own = [(j, q, t) for (j, (q, t)), held in zip(earlier, tokens, strict=True) if held == t]
            # (queue, band, its list, the ids taken, whether they are the whole list)
            taking: list[tuple[str, str, str, list[str], bool]] = []
            empty: list[tuple[str, str]] = []
            count = len(own)
            for (_, queue, band), key, ids in zip(candidates, ready_keys, heads, strict=True):
                if count >= limit:
                    break
                if not ids:
                    empty.append((queue, band))
                    continue
                took = ids[: limit - count]
                taking.append((queue, band, key, took, len(took) == len(ids) < limit))
                count += len(took)
            if not taking and not own:
                return [], empty
            pipe = tx.multi()
            picked: list[tuple[str, str, str, str, int]] = []
            leases: dict[str, dict[str, float]] = {}
            seen: set[str] = set()
            filed.clear()
            for job_id, queue, token in own:  # leased already: read, not leased again
                seen.add(job_id)
                job_key = keys.job(job_id, queue)
                picked.append((queue, keys.processing(worker, queue), job_id, token, len(pipe.command_stack)))
                pipe.hget(job_key, "deliveries")
                pipe.hget(job_key, "job")
                pipe.hget(job_key, "crashes")
            for queue, band, key, heads, whole in taking:
                # the heads read under WATCH are the heads now: cut them off and append them to processing;
                # an id twice among them (a duplicate push) is leased once
                ids = [j for j in dict.fromkeys(heads) if j not in seen]
                seen.update(ids)
                pipe.ltrim(key, len(heads), -1)
                for junk in [j for j in ids if not decodable(j)]:  # cut off with the others, filed apart
                    ids.remove(junk)
                    filed.append(junk)
                    reason = f"a ready entry of {key} is not valid UTF-8"
                    quarantine(self.store, pipe, queue, new_id(), junk, reason, self.store.now())
                if ids:
                    pipe.rpush(processing, *ids)
                if whole:  # the band is empty now
                    pipe.zrem(keys.bands(queue), band)
                for job_id in ids:
                    token = secrets.token_hex(8)
                    job_key = keys.job(job_id, queue)
                    pipe.hset(
                        job_key,
                        mapping={
                            "state": JobState.RUNNING.value,
                            "token": token,
                            "worker": worker,
                            "lease_until": repr(lease_until),
                        },
                    )
                    leased_before[job_id] = (queue, token)
                    picked.append((queue, key, job_id, token, len(pipe.command_stack)))
                    pipe.hincrby(job_key, "deliveries", 1)
                    pipe.hget(job_key, "job")
                    pipe.hget(job_key, "crashes")
                    leases.setdefault(queue, {})[job_id] = lease_until
            for queue, mapping in leases.items():
                pipe.zadd(keys.leases(queue), mapping)
            return picked, empty

        try:
            # WRONGTYPE tolerated in the EXEC's results: a job hash of another type is found there
            (picked, empty), results = self.store.route.transact(ready_keys[0], body, tolerate=COUNT_TOLERATE)
        except redis.ResponseError as exc:  # a band list of another type, met by the reads under WATCH
            key = wrong_type(exc)
            if key is None:
                raise
            by_key = {k: q for (_, q, _), k in zip(candidates, ready_keys, strict=True)}
            self.guard.block(by_key.get(key, candidates[0][1]), key, "reserve")
            return None
        stray = [r for r in results if isinstance(r, redis.ResponseError)]
        bad_hashes = {
            (queue, job_id)
            for queue, _, job_id, _, at in picked
            if isinstance(results[at], redis.ResponseError) and wrong_type(results[at]) is not None
        }
        if len(stray) > 3 * len(bad_hashes):  # an error on another key than a job hash: as before, raised
            raise stray[0]
        if bad_hashes:
            self._park_all(sorted(bad_hashes), worker)
            picked = [row for row in picked if (row[0], row[2]) not in bad_hashes]
        if empty:
            self._drop_empty_bands(empty)
        if not picked:
            return None if empty or filed else []
        out: list[Delivery] = []
        bad: list[tuple[str, str, str | None, str]] = []
        for queue, _, job_id, token, at in picked:
            count, raw, crashes = results[at], results[at + 1], results[at + 2]
            try:
                job = parse_job(raw)
            except UNREADABLE as exc:
                bad.append((queue, job_id, raw, str(exc)))
                continue
            out.append(
                Delivery(
                    job=job,
                    token=token,
                    lease_until=lease_until,
                    worker=worker,
                    delivery_count=int(count),  # HINCRBY's reply, or HGET's for a lease of an earlier run
                    crashes=int(crashes or 0),
                )
            )
        if bad:
            self._quarantine_all(bad, worker)
        return out

    def _drop_empty_bands(self, bands: Sequence[tuple[str, str]]) -> None:
        """Remove bands from the index whose lists are empty (WATCH: a push meanwhile keeps them)."""
        for queue, band in bands:
            ready = self.keys.ready(queue, int(band))

            def body(tx: Transaction, ready: str = ready, queue: str = queue, band: str = band) -> None:
                tx.watch(ready)
                if tx.read(lambda r: r.llen(ready))[0] == 0:
                    tx.multi().zrem(self.keys.bands(queue), band)

            self.store.transact(body, on=ready)

    def _park_all(self, jobs: Sequence[tuple[str, str]], worker: str) -> None:
        """Take jobs whose hash is of the wrong type out of the worker's hands, into the failed queue.

        The reservation moved them with the others (MULTI has no rollback); this
        undoes it for them in one MULTI per tag, leaving their keys untouched.
        """
        now = self.store.now()
        for group in self.store.by_tag(jobs, lambda item: item[0]):

            def writes(pipe: Pipe, group: list[tuple[str, str]] = group) -> None:
                for queue, job_id in group:
                    pipe.lrem(self.keys.processing(worker, queue), 1, job_id)
                    park(self.store, pipe, queue, job_id, now)

            self.store.multi(self.keys.failed_in(group[0][0]), writes)

    def _quarantine_all(self, bad: Sequence[tuple[str, str, str | None, str]], worker: str) -> None:
        """File unreadable jobs in the failed queue with their stored text (see ``_quarantine``)."""
        now = self.store.now()
        for group in self.store.by_tag(bad, lambda item: item[0]):

            def writes(pipe: Pipe, group: list[tuple[str, str, str | None, str]] = group) -> None:
                for queue, job_id, raw, reason in group:
                    pipe.lrem(self.keys.processing(worker, queue), 1, job_id)
                    quarantine(self.store, pipe, queue, job_id, raw, reason, now)

            self.store.multi(self.keys.failed_in(group[0][0]), writes)

    def promote(self, queues: Sequence[str], now: float) -> None:
        """Move due delayed jobs and jobs whose lease ran out back to the head of their bands."""
        for queue in queues:
            self.guard.guarded(
                queue, "promote", functools.partial(promote_delayed, self.store, self.layout, queue, now)
            )
            self.guard.guarded(queue, "promote", functools.partial(self._expire_leases, queue, now))

    def _expire_leases(self, queue: str, now: float) -> None:
        leases = self.keys.leases(queue)
        [expired] = (
            self.store.pipeline()
            .zrangebyscore(leases, "-inf", now, start=0, num=_PROMOTE_BATCH)
            .execute()
        )
        junk = [j for j in expired if not decodable(j)]
        if junk:
            self.store.multi(leases, lambda pipe: pipe.zrem(leases, *map(to_bytes, junk)))
            logger.error("lease_entries_unreadable", key=leases, count=len(junk))
            expired = [j for j in expired if decodable(j)]
        if not expired:
            return
        job_keys = [self.keys.job(j, queue) for j in expired]

        def body(tx: Transaction) -> None:
            tx.watch(leases, *job_keys)
            rows = tx.read(
                lambda r: (
                    [r.zscore(leases, j) for j in expired]
                    + [r.hmget(k, "job", "worker", "token", "running") for k in job_keys]
                ),
                tolerant=True,
            )
            scores, fields = rows[: len(expired)], rows[len(expired) :]
            for row in scores:
                if isinstance(row, Exception):
                    raise row
            pipe = tx.multi()
            writes = self.layout.writes()
            back: list[tuple[Job, str]] = []
            for job_id, score, row in zip(expired, scores, fields, strict=True):
                if isinstance(row, Exception):
                    if wrong_type(row) is None:
                        raise row
                    park(
                        self.store, pipe, queue, job_id, now
                    )  # its hash is of another type: out of the leases
                    continue
                raw, worker, token, running = row
                if score is None or score > now or raw is None:
                    continue  # settled or extended since
                worker = worker if worker and decodable(worker) else ""
                try:
                    job = parse_job(raw)
                except UNREADABLE as exc:
                    if worker:
                        pipe.lrem(self.keys.processing(worker, queue), 1, job_id)
                    quarantine(self.store, pipe, queue, job_id, raw, str(exc), now)
                    continue
                charge(pipe, self.keys.job(job.id, queue), token, running)
                back.append((job, worker))
            # each goes to the head of its band: push the least urgent first so they keep their order
            for job, worker in sorted(back, key=lambda jw: (self.store.band(jw[0]), jw[0].id), reverse=True):
                key = self.keys.job(job.id, queue)
                pipe.hdel(key, *self.layout.unlease(pipe, writes, job, worker, {}, done=False))
                self.layout.push_ready(pipe, writes, job, front=True)
                pipe.hset(key, "state", JobState.QUEUED.value)
                logger.info("lease_expired", job_id=job.id, worker=worker)
            writes.flush(pipe)

        self.store.transact(body, on=leases)
