"""A config for the metrics tests: tasks that succeed, fail, retry, wait to be cancelled, and are parked.

``flaky`` fails its first two attempts and succeeds on the third;
``stubborn`` runs until it is cancelled (ten seconds at most), ``stuck``
ignores a cancel request (ten seconds); ``parked``
lives on a queue the tests' workers do not serve, so its jobs stay ready.
"""

from __future__ import annotations

import time

import jobchain
from jobchain import App, Fail, Retry

app = App()


@app.task
def ok(n: int) -> int:
    time.sleep(0.02)
    return n


@app.task
def boom(*args: object) -> None:
    raise Fail("boom")


@app.task(retry=Retry(attempts=3, base=0.05, factor=1.0, cap=0.05, jitter=False))
def flaky() -> str:
    if jobchain.current_job().attempt < 3:
        raise RuntimeError("not yet")
    return "done"


@app.task
def stubborn() -> None:
    deadline = time.monotonic() + 10
    while not jobchain.current_job().cancel_requested and time.monotonic() < deadline:
        time.sleep(0.02)


@app.task
def stuck() -> None:
    time.sleep(10)  # deaf to cancel requests: only ending its process stops it (--abort-grace)


@app.task(queue="parked")
def parked() -> None:
    pass
