"""arq adapter: 2 ``arq arq_app.WorkerSettings`` processes run the jobs; run as a script it submits.

Layout: 2 worker processes with ``max_jobs = 4`` each (``$BENCH_CONCURRENCY``;
``bench_async.py`` runs one process with all of it): an arq worker is one
asyncio process (its CLI starts one), ``max_jobs`` caps the jobs it runs at
once; one process per core gives 8-way concurrency. arq polls its sorted-set
queue instead of blocking, and between polls it sleeps ``poll_delay``: its
default of 0.5 s held a warm chain at 1.5 s and the 10-60 ms sleeps at 6% of
ideal, so ``poll_delay = 0.01`` here (arq's best figures for these
workloads, for 100 cheap polls a second per idle worker). Results are kept
for an hour (arq's default). A chain step enqueues the
next step itself (``ctx["redis"].enqueue_job``): arq has no chains. No bulk
enqueue either: ``bulk`` keeps up to 50 ``enqueue_job`` calls in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fifo_record as fr
from _adapter import CONCURRENCY, QUEUE, REDIS_URL, SyncOverAsync, serve
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

SETTINGS = RedisSettings.from_dsn(REDIS_URL)


async def noop(ctx: dict[str, Any], i: int) -> None:
    fr.noop(i)


async def step1(ctx: dict[str, Any], i: int) -> int:
    await ctx["redis"].enqueue_job("step2", fr.step1(i), _queue_name=QUEUE)
    return i


async def step2(ctx: dict[str, Any], i: int) -> int:
    await ctx["redis"].enqueue_job("step3", fr.step2(i), _queue_name=QUEUE)
    return i


async def step3(ctx: dict[str, Any], i: int) -> int:
    return fr.step3(i)


async def sleeper(ctx: dict[str, Any], i: int, ms: int) -> None:
    await asyncio.sleep(ms / 1000)
    fr.record("z", i)


async def nap(ctx: dict[str, Any], i: int, ms: int) -> None:
    await fr.nap(i, ms)


class WorkerSettings:
    functions = [noop, step1, step2, step3, sleeper, nap]
    redis_settings = SETTINGS
    queue_name = QUEUE
    max_jobs = CONCURRENCY
    poll_delay = 0.01


class Client:
    bulk_mode = "enqueue_job x 50 in flight (no bulk API)"
    pool: ArqRedis

    async def open(self) -> None:
        self.pool = await create_pool(SETTINGS, default_queue_name=QUEUE)

    async def enqueue(self, i: int) -> None:
        await self.pool.enqueue_job("noop", i)

    async def chain(self, i: int) -> None:
        await self.pool.enqueue_job("step1", i)

    async def sleep(self, i: int, ms: int) -> None:
        await self.pool.enqueue_job("sleeper", i, ms)

    async def nap(self, i: int, ms: int) -> None:
        await self.pool.enqueue_job("nap", i, ms)

    async def close(self) -> None:
        await self.pool.aclose()


if __name__ == "__main__":
    serve(SyncOverAsync(Client()))
