"""A config for the limit tests on real processes: every run is logged outside the backend.

``LIMITS_LOG`` names a file each run appends one line to (``O_APPEND``, one
``write`` per line, so lines of several processes never mix):
``tick`` (at most 10 starts per second, across all workers) writes
``start <time>``; ``hold`` (at most 2 running at once) writes
``start <time> <job id> <pid>`` and, 0.3 s later, ``end <time> <job id> <pid>``.
"""

from __future__ import annotations

import os
import time

from jobchain import App, current_job

app = App()


def _log(line: str) -> None:
    fd = os.open(os.environ["LIMITS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@app.task(rate_limit="10/s")
def tick(i: int) -> int:
    _log(f"start {time.time()!r}")
    return i


@app.task(concurrency=2)
def hold(i: int) -> int:
    me = f"{current_job().id} {os.getpid()}"
    _log(f"start {time.time()!r} {me}")
    time.sleep(0.3)
    _log(f"end {time.time()!r} {me}")
    return i
