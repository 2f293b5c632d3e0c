"""``jobchain worker`` with ``async def`` tasks: --async-concurrency, --loop-block-threshold, --processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobchain import App

Run = Callable[..., Any]


def test_burst_worker_runs_async_and_plain_tasks(
    jobchain: Run, configs: Path, cli_env: dict[str, str]
) -> None:
    """A worker runs the coroutine jobs on its loop and the plain ones on its threads, then exits 0."""
    env = {**cli_env, "ASYNC_SUBMIT": "1"}
    config = str(configs / "async_tasks.py")
    result = jobchain("worker", "--config", config, "--burst", "--async-concurrency", "3", env=env)
    assert result.code == 0, result
    assert "8 threads · 3 async · memory://" in result.err
    assert "12 succeeded, 0 failed" in result.err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--async-concurrency", "0"), ("--async-concurrency", "10001"), ("--loop-block-threshold", "0")],
)
def test_async_options_out_of_range_are_usage_errors(
    jobchain: Run, configs: Path, cli_env: dict[str, str], option: str, value: str
) -> None:
    """An out-of-range option is refused in a line or two naming it, exit 2, no traceback."""
    result = jobchain("worker", "--config", str(configs / "async_tasks.py"), option, value, env=cli_env)
    assert result.code == 2, result
    assert f"error: invalid value for '{option}'" in result.err
    assert "Traceback" not in result.err


def test_worker_processes_each_run_their_own_loop(
    repo_root: Path, installed_cli_env: dict[str, str], redis_server_url: str
) -> None:
    """`worker --processes 2 --async-concurrency 4`: both processes run coroutine jobs; SIGTERM stops them."""
    url = redis_server_url.replace("redis://", "redis-lists://") + f"?prefix=a{uuid.uuid4().hex[:10]}"
    config = str(repo_root / "tests" / "cli" / "configs" / "async_tasks.py")
    name = f"aio-{os.getpid()}"
    command = ["worker", "-c", config, "-b", url, "--processes", "2", "-j", "1"]
    parent = subprocess.Popen(
        [sys.executable, "-m", "jobchain", *command, "--async-concurrency", "4", "-n", name],
        cwd=repo_root,
        env=installed_cli_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    app = App(url)
    try:
        deadline = time.monotonic() + 60
        while {w.name for w in app.workers()} != {f"{name}-1", f"{name}-2"}:
            if parent.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker processes did not register: {parent.communicate()[1]}")
            time.sleep(0.2)
        pids = {w.pid for w in app.workers()}

        @app.task(name="square")
        async def square(n: int) -> dict[str, int]:  # the workers run the config's task of this name
            raise AssertionError("runs in the worker processes only")

        seen: set[int] = set()
        while seen != pids:  # both processes take coroutine jobs (each from its own loop)
            assert time.monotonic() < deadline, (seen, pids)
            handles = [square.submit(n) for n in range(16)]
            results = [h.wait(30) for h in handles]
            assert [r["square"] for r in results] == [n * n for n in range(16)]
            seen |= {r["pid"] for r in results}
    finally:
        app.close()
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err
    assert f"worker {name} stopped: 2 processes" in err
    assert "Traceback" not in err


def test_run_reports_the_event_loops_jobs_in_a_row_of_its_own(
    jobchain: Run, configs: Path, cli_env: dict[str, str]
) -> None:
    """`jobchain run --target` an async task: the report counts its jobs in the loop's row."""
    config = str(configs / "async_tasks.py")
    result = jobchain(
        "run", "--config", config, "--target", "square", "--args", "[3]", "-n", "20", "--json", env=cli_env
    )
    assert result.code == 0, result
    rows = {row["worker"]: row for row in result.json()["per_worker"]}
    assert (rows["async"]["jobs"], rows["async"]["succeeded"]) == (20, 20)
    assert result.json()["jobs_succeeded"] == 20
