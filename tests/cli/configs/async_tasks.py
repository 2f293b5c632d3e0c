"""A config with ``async def`` tasks beside a plain one, for ``jobchain worker`` with an event loop.

With ASYNC_SUBMIT set, importing it submits six ``square`` (async) and six
``plus_one`` (plain) jobs to ASYNC_BACKEND (default ``memory://``).
"""

from __future__ import annotations

import asyncio
import os

from jobchain import App

app = App(os.environ.get("ASYNC_BACKEND", "memory://"))


@app.task
async def square(n: int) -> dict[str, int]:
    await asyncio.sleep(0.01)
    return {"square": n * n, "pid": os.getpid()}


@app.task
def plus_one(n: int) -> int:
    return n + 1


if os.environ.get("ASYNC_SUBMIT"):
    for i in range(6):
        square.submit(i)
        plus_one.submit(i)
