"""A FastAPI app that submits a chain per request and awaits its result, never blocking its event loop.

Run the API and a worker on the same backend (any: memory:// only works inside one process)::

    export JOBCHAIN_BACKEND=redis-lists://localhost:6379/0
    uvicorn examples.fastapi_app:api --port 8000
    jobchain worker --config examples/fastapi_app.py --concurrency 8

    curl localhost:8000/report/7          # {"chain": "...", "result": {"n": 7, "sum": 140, ...}, ...}

Each request submits ``numbers >> squares >> report`` with ``await
chain.submit_async(...)`` and waits for it with ``await handle.wait_async(...)``;
hundreds of requests wait at once on a few connections (see ``docs/guide.md``,
"asyncio: the client"). A chain that takes too long is a 504 naming the chain,
so the client can ask ``GET /chains/{id}`` later; one that fails is a 502
saying which step failed and why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query

from jobchain import App, chain
from jobchain.errors import ChainHaltedError, WaitTimeoutError

app = App()  # the backend from JOBCHAIN_BACKEND (memory:// when unset)


@app.task
def numbers(n: int) -> list[int]:
    """The first ``n`` natural numbers (the 'fetch' of a real pipeline)."""
    return list(range(1, n + 1))


@app.task
def squares(values: list[int]) -> list[int]:
    return [v * v for v in values]


@app.task
def report(values: list[int]) -> dict[str, Any]:
    if not values:
        raise ValueError("nothing to report: n must be at least 1")
    return {"n": len(values), "sum": sum(values), "largest": max(values)}


pipeline = chain(numbers, squares, report, name="report")


@asynccontextmanager
async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
    yield
    await app.close_async()  # stores what the submit buffer holds, closes this loop's connections


api = FastAPI(title="jobchain asyncio example", lifespan=lifespan)


@api.get("/report/{n}")
async def make_report(n: int, timeout: float = Query(10.0, gt=0, le=60)) -> dict[str, Any]:
    """Submit the chain for ``n`` and wait (without blocking the loop) for its last step's result."""
    if not 0 <= n <= 100_000:
        raise HTTPException(422, "n must be between 0 and 100000")
    handle = await pipeline.submit_async(n)
    try:
        result = await handle.wait_async(timeout)
    except WaitTimeoutError:
        status = await handle.status_async()
        raise HTTPException(504, {"chain": handle.id, "status": status}) from None
    except ChainHaltedError as exc:
        error = exc.error
        detail = {"chain": handle.id, "failed_step": exc.step, "error": error.message if error else None}
        raise HTTPException(502, detail) from None
    return {"chain": handle.id, "result": result}


@api.get("/chains/{chain_id}")
async def chain_status(chain_id: str) -> dict[str, Any]:
    """Where a chain is: its state and each step's."""
    record = await app.chain(chain_id).record_async()
    if record is None:
        raise HTTPException(404, f"no chain {chain_id}")
    return {
        "chain": record.id,
        "state": record.state.value,
        "steps": [m.state.value for step in record.steps for m in step.members],
        "rendered": record.render(),
    }
