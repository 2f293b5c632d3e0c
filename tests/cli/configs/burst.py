"""A config for ``jobchain worker --burst``: with BURST_SUBMIT set, importing it submits work.

``fan(5)`` submits five ``double`` jobs while it runs, and ``chain(double, double)``
has a second step stored only when the first is settled: a burst worker must
wait for both kinds. Eight jobs succeed. ``python burst.py`` submits the same
work to BURST_BACKEND (a shared backend) and exits.
"""

from __future__ import annotations

import os

from jobchain import App, chain

app = App(os.environ.get("BURST_BACKEND", "memory://"))


@app.task
def double(x: int) -> int:
    return 2 * x


@app.task
def fan(n: int) -> int:
    for i in range(n):
        double.submit(i)
    return n


def submit_work() -> None:
    fan.submit(5)
    chain(double, double).submit(1)


if os.environ.get("BURST_SUBMIT") and __name__ != "__main__":
    submit_work()

if __name__ == "__main__":
    submit_work()
    app.close()
