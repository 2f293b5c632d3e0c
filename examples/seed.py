"""The seed workload: jobs that sleep a while, to watch workers share them out.

Each ``nap`` sleeps a random 10-60 ms (or between the bounds you pass) and
returns the seconds it slept; the report of ``jobchain run`` shows how the
naps spread over the workers (jobs and seconds slept per worker)::

    jobchain run --config examples/seed.py --target nap --workers 8 --iterations 500
    jobchain run --config examples/seed.py --target nap --args '{"low_ms": 1, "high_ms": 5}'
    jobchain run --config examples/seed.py --target naps --workers 4 --iterations 100

``naps`` is a three-step chain: each step adds its own sleep to the total
handed on by the previous one.
"""

from __future__ import annotations

import random
import time

from jobchain import App, chain

app = App()


def _sleep(low_ms: float, high_ms: float) -> float:
    seconds = random.uniform(low_ms, high_ms) / 1000.0
    time.sleep(seconds)
    return seconds


@app.task
def nap(low_ms: float = 10, high_ms: float = 60) -> float:
    """Sleep a random time between the bounds (milliseconds); return the seconds slept."""
    return round(_sleep(low_ms, high_ms), 6)


@app.task
def nap_again(slept: float, low_ms: float = 10, high_ms: float = 60) -> float:
    """Sleep again; return the seconds slept by the chain so far."""
    return round(slept + _sleep(low_ms, high_ms), 6)


naps = chain(nap, nap_again, nap_again, name="naps")
