"""Type-checked by mypy (see [tool.mypy] files): the public API reads as intended to a type checker."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from jobchain import App, ChainHandle, JobHandle, Retry, SubmitBuffer, Task, Worker, chain, group
from jobchain.capabilities import JobPage
from jobchain.model import JobRecord, JobState
from jobchain.worker import RunnableTask, Runtime

app = App("memory://", retry=Retry(attempts=3, base=0.1))


@app.task(queue="db", priority=2, retry=Retry(attempts=5), timeout=10.0)
def add(x: int, y: int) -> int:
    return x + y


@app.task
def double(x: int) -> int:
    return 2 * x


typed_task: Task[[int, int], int] = add
direct: int = add(1, 2)
job: JobHandle = add.submit(1, 2)
named: JobHandle = add.submit(1, 2, job_id="sum-1-2")  # an explicit id
unique: JobHandle = add.submit(1, 2, unique_key="sum", unique_for=60.0)  # a uniqueness key


@app.task(unique=("x",), unique_for=30.0)
def once_per_x(x: int, y: int = 0) -> int:
    return x + y


@app.task(unique=lambda x: f"x-{x}")
def once_by_function(x: int) -> int:
    return x


keyed: JobHandle = once_per_x.s(1).set(unique_key="k").submit()
status: str = job.status()
handle: ChainHandle = chain(add.s(1, 2), double, name="sum").submit()
named_chain: ChainHandle = chain(add.s(1, 2), double).submit(chain_id="sum-chain")
fan: ChainHandle = group(double.s(1), double.s(2)).submit()
pipeline = add.s(1, 2) >> double >> double
rendered: str = pipeline.submit().render()
result: Any = job.wait(timeout=1.0) if False else None

buffered_app = App(buffer=SubmitBuffer(max_jobs=50_000, max_bytes=64 * 1024 * 1024))
unbuffered_app = App(buffer=None)
waiting: bool = job.buffered
stored: None = job.wait_stored(timeout=5.0) if False else None
held: int = len(buffered_app.buffer) if buffered_app.buffer is not None else 0
closed: None = buffered_app.close(timeout=10.0) if False else None

# a worker runs on a narrow runtime: App.runtime() builds it, and Worker(app) is Worker(app.runtime())
runtime: Runtime = app.runtime()
tasks_of_runtime: RunnableTask | None = runtime.tasks.get("add")
from_runtime: Worker = Worker(runtime, concurrency=2)
from_app: Worker = Worker(app, concurrency=2)
from_method: Worker = app.worker(concurrency=2)

# browsing: a page of a queue's jobs in one state, its cursor, counts per state, one job
listed: JobPage = app.jobs.list("default", "ready", task="add", limit=10, oldest_first=True)
listed_records: tuple[JobRecord, ...] = listed.records
next_cursor: str | None = listed.cursor
by_state: dict[JobState, int] = app.jobs.counts("default")
one: JobRecord | None = app.jobs.get("some-id")


# an async def task: a worker awaits it on its event loop; submitting it is the same
@app.task(timeout=5.0)
async def fetch_length(url: str) -> int:
    return len(url)


async_task: Task[[str], Coroutine[Any, Any, int]] = fetch_length
async_job: JobHandle = fetch_length.submit("https://example.com")
runs_on_loop: bool = fetch_length.is_async
loop_worker: Worker = app.worker(concurrency=8, async_concurrency=500, loop_block_threshold=0.5)
has_loop: bool = loop_worker.runs_async

# the asyncio client: the same calls, awaited (jobchain.aio)
async def _the_async_client() -> None:
    handle: JobHandle = await add.submit_async(1, 2)
    later: JobHandle = await add.submit_async(1, 2, countdown=5.0, job_id="later-1")
    chained: ChainHandle = await chain(add.s(1, 2), double).submit_async()
    grouped: ChainHandle = await group(add.s(1, 2), add.s(3, 4)).submit_async()
    anything: Any = await app.submit_async(add, 1, 2)
    many: list[Any] = await app.submit_many_async([add.s(1, 2), chain(add.s(1, 2), double)])
    result: Any = await handle.wait_async(timeout=5.0)
    state: str = await chained.status_async()
    record: JobRecord | None = await later.record_async()
    await grouped.wait_stored_async(timeout=1.0)
    page: JobPage = await app.jobs.list_async("default", "ready", limit=10)
    counted: dict[JobState, int] = await app.jobs.counts_async("default")
    failed_page = await app.failed.list_async(task="add", limit=10)
    moved: list[str] = await app.failed.redrive_async(all=True)
    stats = await app.stats_async()
    await app.close_async(timeout=5.0)
    del result, state, record, page, counted, failed_page, moved, stats, anything, many
