"""The tasks the dashboard's browser tests run on a real worker process.

``parse`` fails (twice: one retry) while the file named by ``$DASH_BROKEN``
exists, so a test breaks the middle step of ``pipeline``, watches the chain
halt, removes the file and re-drives the failed step from the dashboard.
``nap`` sleeps in small steps and stops when its job is cancelled. Jobs of
the ``idle`` queue wait: the test's worker does not serve it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from jobchain import App, Retry, chain, current_job

app = App()


def _broken() -> bool:
    flag = os.environ.get("DASH_BROKEN")
    return bool(flag) and Path(flag).exists()


@app.task(name="fetch")
def fetch(n: int) -> int:
    return n + 1


@app.task(name="parse", retry=Retry(attempts=2, base=0.05, factor=2.0, cap=0.1))
def parse(n: int) -> int:
    if _broken():
        raise ValueError("the parse service is down")
    return n * 2


@app.task(name="publish")
def publish(n: int) -> str:
    return f"published {n}"


@app.task(name="echo")
def echo(*args: object, **kwargs: object) -> list[object]:
    return [list(args), kwargs]


@app.task(name="nap")
def nap(seconds: float) -> str:
    job = current_job()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        job.raise_if_cancelled()
        time.sleep(0.05)
    return "rested"


@app.task(name="wait_here", queue="idle")
def wait_here(n: int) -> int:
    return n


pipeline = chain(fetch, parse, publish, name="pipeline")

# shown on the workers page (nothing runs them in the tests: no scheduler is started)
app.schedule("nightly-pipeline", pipeline, cron="30 2 * * *", args=[1])
app.schedule("heartbeat-echo", echo, every=3600, args=["tick"])
