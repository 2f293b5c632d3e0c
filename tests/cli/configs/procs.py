"""A config for ``jobchain worker --processes``: jobs that say which process ran them.

``square(n)`` sleeps 100 ms (long enough that one process cannot take every
job of a burst) and returns ``{"square": n * n, "pid": <the worker's pid>}``;
``burst`` is a group of eight of them.
"""

from __future__ import annotations

import os
import time

from jobchain import App, group

app = App()


@app.task
def square(n: int) -> dict[str, int]:
    time.sleep(0.1)
    return {"square": n * n, "pid": os.getpid()}


burst = group(*(square.s(i) for i in range(8)))
