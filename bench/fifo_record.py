"""One record per task execution, written to the benchmark's FIFO (no dependencies: peers' venvs import it).

Each execution writes one fixed-width record, ``<kind><number:014d>\\n`` (16
bytes), to the FIFO named by ``$JOBCHAIN_FLOOR_FIFO`` with one ``os.write``:
atomic, being under ``PIPE_BUF``, so records from many processes never mix.
The benchmark reads the FIFO, so every job is counted outside the system
under test. Kinds: ``n`` no-op job, ``a``/``b``/``c`` the steps of a chain,
``z`` a sleeping job's end and ``y`` an asyncio one's start (``s`` is the
reader's own flush marker).
"""

from __future__ import annotations

import asyncio
import os
import time

RECORD = 16
KINDS = "nabcyz"
_fd: list[int] = []  # opened lazily in each worker process (and again after a fork)
_pid: list[int] = []


def encode(kind: str, i: int) -> bytes:
    """The record of one execution of ``kind`` number ``i``."""
    if len(kind) != 1 or not 0 <= i < 10**14:
        raise ValueError(f"cannot record {kind!r} {i}")
    return b"%s%014d\n" % (kind.encode(), i)


def decode(data: bytes) -> tuple[str, int]:
    """``(kind, number)`` of one record."""
    if len(data) != RECORD or data[-1:] != b"\n":
        raise ValueError(f"not a record: {data!r}")
    return chr(data[0]), int(data[1 : RECORD - 1])


def record(kind: str, i: int) -> None:
    if not _fd or _pid[0] != os.getpid():
        _fd[:] = [os.open(os.environ["JOBCHAIN_FLOOR_FIFO"], os.O_WRONLY)]
        _pid[:] = [os.getpid()]
    os.write(_fd[0], encode(kind, i))


# the tasks every system runs, as plain functions (the adapters wrap them in their peer's decorators)


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


def sleeper(i: int, ms: int) -> None:
    time.sleep(ms / 1000)
    record("z", i)


async def nap(i: int, ms: int) -> None:
    """The asyncio benchmark's job: a ``y`` record when it starts, ``z`` when its sleep ends."""
    record("y", i)
    await asyncio.sleep(ms / 1000)
    record("z", i)
