"""The tasks test_redis_restart runs in real worker processes (``jobchain worker --config`` this file).

Every run appends one JSON line (what ran, when it started and ended) to a
file of its own process under ``$RESTART_TEST_RUNS``: executions are counted
outside the Redis under test.

With ``$RESTART_TEST_BACKEND`` set to a ``redis-streams://`` URL the App opens
that backend itself, with ``orphan_idle`` from ``$RESTART_TEST_ORPHAN_IDLE``:
entries whose ``XREADGROUP`` reply was lost when Redis went down are only
taken back by the orphan sweep, which waits that long (30 s by default, which
no URL option changes).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from jobchain import App, chain


def _app() -> App:
    url = os.environ.get("RESTART_TEST_BACKEND", "")
    if not url.startswith("redis-streams://"):
        return App()
    from jobchain_redis.streams import StreamsBackend

    idle = float(os.environ.get("RESTART_TEST_ORPHAN_IDLE", "30"))
    return App(StreamsBackend.from_url(url, orphan_idle=idle))


app = _app()

_lock = threading.Lock()
_fd: list[int] = []


def _record(task: str, key: str, started: float, **extra: Any) -> None:
    line = json.dumps({"task": task, "key": key, "start": started, "end": time.time(), **extra}) + "\n"
    with _lock:
        if not _fd:
            path = os.path.join(os.environ["RESTART_TEST_RUNS"], f"runs-{os.getpid()}.jsonl")
            _fd.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        os.write(_fd[0], line.encode())


@app.task
def job(n: int) -> int:
    started = time.time()
    time.sleep(0.02)
    _record("job", str(n), started)
    return n


@app.task
def first(c: int) -> list[int]:
    started = time.time()
    time.sleep(0.01)
    _record("first", str(c), started)
    return [c]


@app.task
def second(acc: list[int]) -> list[int]:
    started = time.time()
    time.sleep(0.01)
    _record("second", str(acc[0]), started)
    return [*acc, 2]


@app.task
def third(acc: list[int]) -> list[int]:
    started = time.time()
    time.sleep(0.01)
    _record("third", str(acc[0]), started)
    return [*acc, 3]


def three_steps(c: int) -> Any:
    """The chain first(c) -> second -> third, whose result is [c, 2, 3]."""
    return chain(first.s(c), second, third, name="three-steps")
