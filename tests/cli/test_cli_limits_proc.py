"""Limits across real worker processes on a real redis-server, observed from outside (a log file).

* a rate limit of 10/s over 4 worker processes holds: no interval sees more
  starts than the bucket allows (10 at once, then 10 per second), and the
  whole run takes as long as the limit says (a per-process limit would go 4x faster);
* a concurrency limit of 2 is never exceeded while worker processes are
  SIGKILLed: a killed process's job counts as running until it was killed,
  its slot frees when its lease ends, and the job runs again elsewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import forkserver
import pytest

from jobchain import App

CONFIG = "tests/cli/configs/limits.py"


@pytest.fixture(params=["redis-lists", "redis-streams"])
def url(request: pytest.FixtureRequest, redis_server_url: str) -> str:
    """Each Redis backend on the session's server, under a key prefix of this test's own."""
    return redis_server_url.replace("redis://", f"{request.param}://") + f"?prefix=l{uuid.uuid4().hex[:10]}"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "runs.log"


@pytest.fixture
def start_worker(
    repo_root: Path, installed_cli_env: dict[str, str], log: Path, url: str
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `jobchain worker -c CONFIG -b URL ARGS...`; whatever still runs at teardown is killed."""
    started: list[subprocess.Popen[bytes]] = []
    env = {**installed_cli_env, "LIMITS_LOG": str(log)}

    def start(*args: str) -> subprocess.Popen[bytes]:
        process = forkserver.popen(
            [sys.executable, "-m", "jobchain", "worker", "-c", CONFIG, "-b", url, *args],
            cwd=repo_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _app(url: str) -> App:
    sys.path.insert(0, str(Path(CONFIG).parent.resolve()))
    try:
        from limits import app  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    assert isinstance(app, App)
    app.use_backend(url)
    return app


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _wait_for(log: Path, what: Callable[[list[list[str]]], bool], timeout: float) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _lines(log)
        if what(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_rate_limit_holds_across_four_worker_processes(
    url: str, log: Path, start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    app = _app(url)
    app.get_task("tick").submit_many([(i,) for i in range(40)])
    app.close()
    for _ in range(4):
        start_worker("--concurrency", "4")
    lines = _wait_for(log, lambda lines: len(lines) >= 40, 20)
    starts = sorted(float(fields[1]) for fields in lines)
    assert len(starts) == 40
    # GCRA of 10/s: 10 at once, then one per 0.1 s, so any interval of L seconds sees at most
    # 10 + 10 L starts (+1 for timing jitter of the processes)
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            span = starts[j] - first
            assert j - i + 1 <= 10 + 10 * span + 1, (i, j, span)
    assert starts[-1] - starts[0] >= 2.8  # 30 tokens after the burst, at 10/s


def _max_running(lines: list[list[str]], killed: dict[int, float]) -> int:
    """The most runs open at once: a run ends at its ``end`` line, or when its process was killed."""
    events: list[tuple[float, int]] = []
    ends = {(f[2], f[3]): float(f[1]) for f in lines if f[0] == "end"}
    for fields in lines:
        if fields[0] == "start":
            begin = float(fields[1])
            end = ends.get((fields[2], fields[3]), killed.get(int(fields[3]), float("inf")))
            events += [(begin, 1), (end, -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at one instant
        running += delta
        peak = max(peak, running)
    return peak


def test_a_concurrency_limit_is_never_exceeded_while_workers_are_killed(
    url: str, log: Path, start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    app = _app(url)
    app.get_task("hold").submit_many([(i,) for i in range(16)])
    app.close()
    workers = [start_worker("--concurrency", "3", "--lease", "2") for _ in range(3)]
    killed: dict[int, float] = {}
    for victim in workers[:2]:  # kill two of them while they hold jobs
        pid = victim.pid
        _wait_for(log, lambda lines, pid=pid: any(f[0] == "start" and int(f[3]) == pid for f in lines), 15)
        time.sleep(0.1)
        killed[victim.pid] = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        start_worker("--concurrency", "3", "--lease", "2")
    lines = _wait_for(log, lambda lines: len({f[2] for f in lines if f[0] == "end"}) >= 16, 20)
    assert len({f[2] for f in lines if f[0] == "end"}) == 16, lines
    assert _max_running(lines, killed) <= 2


def test_status_counts_the_jobs_held_by_a_limit(
    tmp_path: Path, installed_cli_env: dict[str, str], jobchain: Callable[..., Any]
) -> None:
    """A worker holding a job at a concurrency limit: `jobchain status` says so, in text and JSON."""
    from jobchain.plugins import Plugins

    url = f"sqlite://{tmp_path / 'jobs.db'}"
    app = App(backend=url, plugins=Plugins())
    gate = threading.Event()

    @app.task(concurrency=1)
    def blocked(i: int) -> int:
        gate.wait(20)
        return i

    blocked.submit(1)
    blocked.submit(2)
    with app.worker(concurrency=2, poll=0.02, heartbeat_ttl=0.3):
        deadline = time.monotonic() + 10
        while not any(w.held for w in app.workers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        data = jobchain("status", "-b", url, "--json", env=installed_cli_env).json()
        text = jobchain("status", "-b", url, env=installed_cli_env).out
        gate.set()
    app.close()
    assert data["held"] == 1
    assert "1 in flight held by a rate or concurrency limit" in text
