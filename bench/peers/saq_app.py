"""SAQ adapter: ``saq saq_app.settings --workers 2`` runs the jobs (4 at once each); as a script it submits.

Layout: 2 worker processes (``--workers 2``) with ``concurrency = 4`` each: a
SAQ worker is one asyncio process running up to ``concurrency`` jobs at once;
one process per core gives 8-way concurrency. A chain step enqueues the next
step itself (``ctx["job"].queue.enqueue``): SAQ has no chains. No bulk enqueue:
``bulk`` keeps up to 50 ``enqueue`` calls in flight, as SAQ's own
``Queue.map`` does (``asyncio.gather`` of ``enqueue``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import fifo_record as fr
from _adapter import QUEUE, REDIS_URL, SyncOverAsync, serve
from saq import Queue

queue = Queue.from_url(REDIS_URL, name=QUEUE)


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


settings = {
    "queue": queue,
    "functions": [noop, step1, step2, step3, ("sleep", sleeper)],
    "concurrency": 4,
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

    async def close(self) -> None:
        await queue.disconnect()


if __name__ == "__main__":
    serve(SyncOverAsync(Client()))
