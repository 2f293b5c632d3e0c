"""SAQ adapter: ``saq saq_app.settings --workers 2`` runs the jobs (4 at once each); as a script it submits.

Layout: 2 worker processes (``--workers 2``) with ``concurrency = 4`` each
(``$BENCH_CONCURRENCY``; ``bench_async.py`` runs one process with all of it): a
SAQ worker is one asyncio process running up to ``concurrency`` jobs at once;
one process per core gives 8-way concurrency. A chain step enqueues the next
step itself (``ctx["job"].queue.enqueue``): SAQ has no chains. No bulk enqueue:
``bulk`` keeps up to 50 ``enqueue`` calls in flight, as SAQ's own
``Queue.map`` does (``asyncio.gather`` of ``enqueue``). SAQ runs a few jobs
twice when its worker starts on a backlog (its first sweep re-queues jobs just
moved to the active list: see docs/benchmarks.md, "asyncio").
"""

from __future__ import annotations

import asyncio
from typing import Any

import fifo_record as fr
from _adapter import CONCURRENCY, QUEUE, REDIS_URL, SyncOverAsync, serve
from saq import Queue

#: a SAQ worker holds one connection per concurrent job (each waits in its own BLMOVE) and redis-py
#: 8's asyncio pool stops at 100 by default ("Too many connections" at 500 jobs at once): the pool
#: is sized for the concurrency
queue = Queue.from_url(f"{REDIS_URL}?max_connections={2 * CONCURRENCY + 100}", name=QUEUE)


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    fr.noop(i)


async def step1(ctx: dict[str, Any], *, i: int) -> int:
    await ctx["job"].queue.enqueue("step2", i=fr.step1(i))
    return i


async def step2(ctx: dict[str, Any], *, i: int) -> int:
    await ctx["job"].queue.enqueue("step3", i=fr.step2(i))
    return i


async def step3(ctx: dict[str, Any], *, i: int) -> int:
    return fr.step3(i)


async def sleeper(ctx: dict[str, Any], *, i: int, ms: int) -> None:
    await asyncio.sleep(ms / 1000)
    fr.record("z", i)


async def nap(ctx: dict[str, Any], *, i: int, ms: int) -> None:
    await fr.nap(i, ms)


settings = {
    "queue": queue,
    "functions": [noop, step1, step2, step3, ("sleep", sleeper), nap],
    "concurrency": CONCURRENCY,
}


class Client:
    bulk_mode = "enqueue x 50 in flight (no bulk API)"

    async def open(self) -> None:
        await queue.connect()

    async def enqueue(self, i: int) -> None:
        await queue.enqueue("noop", i=i)

    async def chain(self, i: int) -> None:
        await queue.enqueue("step1", i=i)

    async def sleep(self, i: int, ms: int) -> None:
        await queue.enqueue("sleep", i=i, ms=ms)

    async def nap(self, i: int, ms: int) -> None:
        await queue.enqueue("nap", i=i, ms=ms)

    async def close(self) -> None:
        await queue.disconnect()


if __name__ == "__main__":
    serve(SyncOverAsync(Client()))
