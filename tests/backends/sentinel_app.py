"""The tasks test_redis_sentinel runs in ``jobchain worker`` processes (``--config`` this file).

Every run appends one JSON line (task, key, start, end, pid) to a file of its
own process under ``$SENTINEL_TEST_RUNS``: executions are recorded outside the
Redis under test. With ``$SENTINEL_TEST_BACKEND`` set to a
``redis-streams+sentinel://`` URL the App opens it itself, with a short
``orphan_idle`` (``$SENTINEL_TEST_ORPHAN_IDLE``), which no URL option sets.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from jobchain import App, chain


def _app() -> App:
    url = os.environ.get("SENTINEL_TEST_BACKEND", "")
    if not url.startswith("redis-streams+sentinel://"):
        return App()
    from jobchain_redis.streams import StreamsBackend

    idle = float(os.environ.get("SENTINEL_TEST_ORPHAN_IDLE", "30"))
    return App(StreamsBackend.from_url(url, orphan_idle=idle))


app = _app()

_lock = threading.Lock()
_fd: list[int] = []


def _record(task: str, key: str, started: float) -> None:
    line = json.dumps({"task": task, "key": key, "start": started, "end": time.time(), "pid": os.getpid()})
    with _lock:
        if not _fd:
            path = os.path.join(os.environ["SENTINEL_TEST_RUNS"], f"runs-{os.getpid()}.jsonl")
            _fd.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        os.write(_fd[0], (line + "\n").encode())


@app.task
def job(key: str) -> str:
    started = time.time()
    time.sleep(0.01)
    _record("job", key, started)
    return key


@app.task
def first(key: str) -> list[str]:
    started = time.time()
    time.sleep(0.005)
    _record("first", key, started)
    return [key]


@app.task
def second(acc: list[str]) -> list[str]:
    started = time.time()
    time.sleep(0.005)
    _record("second", acc[0], started)
    return [*acc, "2"]


@app.task
def third(acc: list[str]) -> list[str]:
    started = time.time()
    time.sleep(0.005)
    _record("third", acc[0], started)
    return [*acc, "3"]


def three_steps(key: str) -> Any:
    """The chain first(key) -> second -> third, whose result is [key, "2", "3"]."""
    return chain(first.s(key), second, third, name="three-steps")
