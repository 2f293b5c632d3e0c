"""The config of ``bench_floor.py``: a no-op task, a three-step chain and a sleeping task, each run recorded.

Each execution writes one fixed-width record to the FIFO named by
``$JOBCHAIN_FLOOR_FIFO`` (see :mod:`fifo_record`); the benchmark reads the
FIFO, so it counts every job outside the system under test and sees the last
step of a chain arrive. The same functions serve the bare floor
(``FLOOR_TASKS``), jobchain (``app``) and, wrapped by their adapters in
``bench/peers/``, the peers of ``bench_peers.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from fifo_record import RECORD, noop, record, sleeper, step1, step2, step3

from jobchain import App, chain

__all__ = ["FLOOR_TASKS", "RECORD", "app", "noop_task", "record", "sleep_task", "steps"]

FLOOR_TASKS: dict[str, Callable[..., object]] = {
    "noop": noop,
    "step1": step1,
    "step2": step2,
    "step3": step3,
    "sleep": sleeper,
}

app = App()  # the backend comes from `jobchain worker --backend`
noop_task = app.task(name="noop")(noop)
sleep_task = app.task(name="sleep")(sleeper)
steps = chain(
    app.task(name="step1")(step1), app.task(name="step2")(step2), app.task(name="step3")(step3), name="floor"
)
