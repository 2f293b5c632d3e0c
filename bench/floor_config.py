"""The config of ``bench_floor.py``: a no-op task and a three-step chain, every run recorded outside Redis.

Each execution writes one fixed-width record (``<kind><number>\\n``, 16 bytes)
to the FIFO named by ``$JOBCHAIN_FLOOR_FIFO`` with one ``os.write`` (atomic:
under ``PIPE_BUF``); the benchmark reads the FIFO, so it counts every job
outside the system under test and sees the last step of a chain arrive. The
same functions serve the bare floor (``FLOOR_TASKS``) and jobchain (``app``).
"""

from __future__ import annotations

import os

from jobchain import App, chain

RECORD = 16
_fd: list[int] = []  # opened lazily in each worker process
_pid: list[int] = []


def record(kind: str, i: int) -> None:
    if not _fd or _pid[0] != os.getpid():
        _fd[:] = [os.open(os.environ["JOBCHAIN_FLOOR_FIFO"], os.O_WRONLY)]
        _pid[:] = [os.getpid()]
    os.write(_fd[0], b"%s%014d\n" % (kind.encode(), i))


def noop(i: int) -> None:
    record("n", i)


def step1(i: int) -> int:
    record("a", i)
    return i


def step2(i: int) -> int:
    record("b", i)
    return i


def step3(i: int) -> int:
    record("c", i)
    return i


FLOOR_TASKS = {"noop": noop, "step1": step1, "step2": step2, "step3": step3}

app = App()  # the backend comes from `jobchain worker --backend`
noop_task = app.task(name="noop")(noop)
steps = chain(
    app.task(name="step1")(step1), app.task(name="step2")(step2), app.task(name="step3")(step3), name="floor"
)
