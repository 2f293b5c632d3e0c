"""A config whose memory backend already holds work when it is imported.

memory:// lives inside one process, so the inspection commands (status,
failed, workers) can only be shown something by a config that fills the
store itself. Ids are made deterministic (``t-0001`` ...) so that tests can
name them on the command line:

* t-0001 ``ok(1)`` succeeded; t-0002 ``boom(2)`` failed (in the failed queue);
* chain t-0006 ``pipeline(3)``: its steps t-0003 ``ok`` completed, t-0004
  ``boom`` failed (in the failed queue), t-0005 ``ok`` not executed;
* t-0007 ... t-0009: ``later()`` jobs waiting in queue ``slow``;
* a live worker named ``fake-worker``.
"""

from __future__ import annotations

import contextlib
import itertools
import time

import jobchain.submission
from jobchain import App, Fail, WorkerInfo, chain

_ids = itertools.count(1)
jobchain.submission.new_id = lambda: f"t-{next(_ids):04d}"  # the submit pipeline makes the ids

app = App("memory://populated")


@app.task
def ok(x: int = 0) -> int:
    return x


@app.task
def boom(x: int = 0) -> int:
    raise Fail(f"boom {x}")


@app.task(queue="slow")
def later() -> None:
    """Never run here: nothing serves queue ``slow``."""


pipeline = chain(ok, boom, ok, name="pipeline")

_handles = [ok.submit(1), boom.submit(2), pipeline.submit(3)]
with app.worker(queues=["default"], concurrency=1, poll=0.01, name="populate"):  # one thread: FIFO
    for _handle in _handles:
        with contextlib.suppress(Exception):  # boom and pipeline fail, as they should
            _handle.wait(10)
for _ in range(3):
    later.submit()

_now = time.time()
app.backend.heartbeat(
    WorkerInfo(
        name="fake-worker",
        host="example-host",
        pid=4242,
        queues=("default", "slow"),
        labels={"zone": "eu"},
        concurrency=4,
        started_at=_now - 60,
        heartbeat_at=_now,
    ),
    ttl=60,
)
