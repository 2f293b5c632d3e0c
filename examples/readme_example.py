"""The README's example: a chain halts at a failing step, then a re-drive from the failed queue finishes it.

Run it with ``python examples/readme_example.py``.
"""

import logging
import sys

import structlog

from jobchain import App, ChainHaltedError, Fail, chain

# jobchain never configures logging; unconfigured structlog would print the worker's own
# info lines ("worker_started" ...) to stdout between ours. Keep warnings, on stderr.
structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    logger_factory=structlog.PrintLoggerFactory(sys.stderr),
)

app = App()  # the embedded memory:// backend
b_is_broken = True


@app.task(name="A")
def fetch(n: int) -> int:
    return n + 1


@app.task(name="B")
def double(n: int) -> int:
    if b_is_broken:
        raise Fail("the B service is down")  # Fail: straight to the failed queue, no retry
    return n * 2


@app.task(name="C")
def describe(n: int) -> str:
    return f"the answer is {n}"


pipeline = chain(fetch, double, describe, name="abc")  # or: fetch >> double >> describe

with app.worker(concurrency=4):
    run = pipeline.submit(20)
    try:
        run.wait(timeout=10)
    except ChainHaltedError as exc:
        print(f"halted: {exc}")
    print(run.render())  # rendered from the chain record

    entry = app.failed.list()[0]
    print(f"failed queue: {entry.job.task} {entry.error.type}: {entry.error.message}")

    b_is_broken = False  # the cause is fixed: re-drive the failed job, and the chain resumes at B
    app.failed.redrive([entry.job.id])
    print(f"result: {run.wait(timeout=10)!r}")
    print(run.render())
