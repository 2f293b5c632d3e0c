"""The tasks test_redis_leases runs in real worker processes (``jobchain worker --config`` this file).

With ``$LEASE_TEST_RUNS`` set, each worker process appends JSON lines to
``runs-<pid>.jsonl`` in that directory, one ``os.write`` per line through an
``O_APPEND`` descriptor (a SIGKILL cannot tear a line): ``start`` when a task
begins and ``end`` when it returns, each with the job id, attempt, key, the
worker's name, the pid and the wall-clock time.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from jobchain import App, Retry, hookimpl
from jobchain.model import Job

QUEUE = "leases"


class Recorder:
    """Writes this process' start and end lines (a pluggy plugin of the worker's App)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.local = threading.local()
        self.fd: int | None = None
        self.lock = threading.Lock()

    def write(self, kind: str, key: str) -> None:
        job: Job = self.local.job
        line = {
            "kind": kind,
            "job": job.id,
            "attempt": job.attempt,
            "key": key,
            "worker": self.local.worker,
            "pid": os.getpid(),
            "at": time.time(),
        }
        with self.lock:
            if self.fd is None:
                path = os.path.join(self.directory, f"runs-{os.getpid()}.jsonl")
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self.fd, (json.dumps(line) + "\n").encode())

    @hookimpl
    def jobchain_job_started(self, job: Job, worker: str) -> None:
        self.local.job = job
        self.local.worker = worker


app = App()
_recorder = Recorder(os.environ["LEASE_TEST_RUNS"]) if os.environ.get("LEASE_TEST_RUNS") else None
if _recorder is not None:
    app.plugins.register(_recorder, name="lease-recorder")


def _record(kind: str, key: str) -> None:
    if _recorder is not None:
        _recorder.write(kind, key)


@app.task(queue=QUEUE)
def work(key: str, ms: float) -> str:
    _record("start", key)
    time.sleep(ms / 1000.0)
    _record("end", key)
    return key


@app.task(queue=QUEUE)
def poison(key: str) -> None:
    """Kills its own worker process, every time."""
    _record("start", key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(queue=QUEUE, retry=Retry(attempts=2, base=3.0, factor=1.0, jitter=False))
def flaky(key: str) -> str:
    """Fails its first attempt; the retry is due 3 s later."""
    _record("start", key)
    if _recorder is not None and _recorder.local.job.attempt == 1:
        _record("end", key)
        raise RuntimeError("first attempt fails")
    _record("end", key)
    return key
