"""taskiq adapter: ``taskiq worker taskiq_app:broker -w 2 --max-async-tasks 4``; run as a script it submits.

Layout: 2 worker processes x 4 async tasks each: taskiq runs async tasks on
one event loop per worker process, and ``--max-async-tasks`` caps how many
run at once; one process per core and 4 tasks each gives 8-way concurrency.
The broker is taskiq-redis's ``RedisStreamBroker`` (consumer groups with
acknowledgements, the reliable one; its group starts at the stream's
beginning, ``consumer_id="0"``, so jobs enqueued before the workers start are
taken), with ``RedisAsyncResultBackend`` (results expire after an hour) that
taskiq-pipelines needs; the chain is a ``taskiq_pipelines.Pipeline``. taskiq
has no bulk enqueue: ``bulk`` keeps up to 50 ``kiq`` calls in flight
(``asyncio.gather``), the way an asyncio client submits many.
"""

from __future__ import annotations

import asyncio

import fifo_record as fr
from _adapter import QUEUE, REDIS_URL, SyncOverAsync, serve
from taskiq_pipelines import Pipeline, PipelineMiddleware
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

broker = (
    RedisStreamBroker(url=REDIS_URL, queue_name=QUEUE, consumer_group_name=QUEUE, consumer_id="0")
    .with_result_backend(RedisAsyncResultBackend(redis_url=REDIS_URL, result_ex_time=3600))
    .with_middlewares(PipelineMiddleware())
)


@broker.task(task_name="noop")
async def noop(i: int) -> None:
    fr.noop(i)


@broker.task(task_name="step1")
async def step1(i: int) -> int:
    return fr.step1(i)


@broker.task(task_name="step2")
async def step2(i: int) -> int:
    return fr.step2(i)


@broker.task(task_name="step3")
async def step3(i: int) -> int:
    return fr.step3(i)


@broker.task(task_name="sleep")
async def sleeper(i: int, ms: int) -> None:
    await asyncio.sleep(ms / 1000)
    fr.record("z", i)


@broker.task(task_name="nap")
async def nap(i: int, ms: int) -> None:
    await fr.nap(i, ms)


class Client:
    bulk_mode = "kiq x 50 in flight (no bulk API)"

    async def open(self) -> None:
        await broker.startup()

    async def enqueue(self, i: int) -> None:
        await noop.kiq(i)

    async def chain(self, i: int) -> None:
        await Pipeline(broker, step1).call_next(step2).call_next(step3).kiq(i)

    async def sleep(self, i: int, ms: int) -> None:
        await sleeper.kiq(i, ms)

    async def nap(self, i: int, ms: int) -> None:
        await nap.kiq(i, ms)

    async def close(self) -> None:
        await broker.shutdown()


if __name__ == "__main__":
    serve(SyncOverAsync(Client()))
