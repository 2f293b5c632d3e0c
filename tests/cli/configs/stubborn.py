"""A config for ``jobchain worker --processes 2 --abort-grace S``: a task that never checks for a cancel.

``stubborn()`` sleeps for two minutes without looking at
``jobchain.current_job()``; only a hard abort ends it early. ``square(n)``
returns ``n * n`` and the pid of the process that ran it.
"""

from __future__ import annotations

import os
import time

from jobchain import App

app = App()


@app.task
def stubborn() -> None:
    time.sleep(120)


@app.task
def square(n: int) -> dict[str, int]:
    return {"square": n * n, "pid": os.getpid()}
