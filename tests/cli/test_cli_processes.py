"""``--processes N`` for ``jobchain run`` and ``jobchain worker``: real processes on a real redis-server.

The server is the session's (tests/redis_fixtures.py: missing redis-server
fails the run under ``CI=true``); each test keeps to a key prefix of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import forkserver
import pytest

Run = Callable[..., Any]
CONFIG = "tests/cli/configs/procs.py"


@pytest.fixture
def cli_env(installed_cli_env: dict[str, str]) -> dict[str, str]:
    """Installed plugins enabled: the redis backend is one of them."""
    return installed_cli_env


@pytest.fixture
def jobchain(jobchain: Run, cli_env: dict[str, str]) -> Run:
    def run(*args: str, **options: Any) -> Any:
        options.setdefault("env", cli_env)
        options.setdefault("timeout", 120)
        return jobchain(*args, **options)

    return run


@pytest.fixture
def lists_url(redis_server_url: str) -> str:
    """A redis-lists URL on the session's server, under a key prefix of this test's own."""
    return redis_server_url.replace("redis://", "redis-lists://") + f"?prefix=p{uuid.uuid4().hex[:10]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_with_two_processes_sums_their_reports(jobchain: Run, lists_url: str) -> None:
    """`run --processes 2` finishes every job; its report sums both processes and matches one process."""
    workload = ("--iterations", "40", "--chain-length", "2", "--fail-rate", "0.25", "--seed", "3")
    result = jobchain("run", "-b", lists_url, "--processes", "2", "--workers", "4", *workload, "--json")
    assert result.code == 0, result
    report = result.json()
    assert (report["processes"], report["workers"], report["jobs_total"]) == (2, 4, 80)
    assert report["interrupted"] is False
    assert report["jobs_left"] == 0
    assert report["jobs_succeeded"] + report["jobs_failed"] + report["jobs_not_executed"] == 80
    rows = report["per_worker"]
    assert [r["worker"] for r in rows] == ["p1-worker-1", "p1-worker-2", "p2-worker-1", "p2-worker-2"]
    assert report["runs"] == sum(r["jobs"] for r in rows)
    assert report["runs"] == report["jobs_succeeded"] + report["jobs_failed"] + report["retries"]
    assert report["retries"] == sum(r["retries"] for r in rows)
    assert report["jobs_failed"] == sum(r["failures"] for r in rows)
    for process in ("p1-", "p2-"):  # both processes took jobs
        assert sum(r["jobs"] for r in rows if r["worker"].startswith(process)) > 0
    assert report["latency_ms"]["count"] == report["jobs_succeeded"]
    assert report["chains"]["running"] == 0
    assert report["chains"]["succeeded"] + report["chains"]["failed"] == 40
    assert report["failed_queue"] == report["jobs_failed"]
    assert report["ideal_seconds"] > 0
    assert 0 < report["efficiency"] <= 1.0
    assert report["utilization"] > 0

    # the same seed on one process of the memory backend injects the same failures: same outcome
    alone = jobchain("run", "--workers", "4", *workload, "--json", env=None)
    assert alone.code == 0, alone
    single = alone.json()
    for key in ("jobs_succeeded", "jobs_failed", "jobs_not_executed", "retries", "runs", "chains", "errors"):
        assert report[key] == single[key], key


def test_run_report_names_the_processes(jobchain: Run, lists_url: str) -> None:
    """The plain report's title says how many processes shared the workers, and the totals add up."""
    result = jobchain("run", "-b", lists_url, "-p", "2", "-w", "2", "-n", "20")
    assert result.code == 0, result
    assert "· 2 workers in 2 processes ·" in result.out
    total = next(line for line in result.out.splitlines() if line.startswith("total"))
    assert total.split()[1:3] == ["20", "20"]
    assert "20 total: 20 succeeded, 0 failed" in result.out
    assert "Traceback" not in result.err


@pytest.fixture
def start_worker(repo_root: Path, cli_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `jobchain worker ARGS...`; whatever is still running at teardown is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = forkserver.popen(
            [sys.executable, "-m", "jobchain", "worker", *args],
            cwd=repo_root,
            env=cli_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def _registered(jobchain: Run, url: str, names: set[str], process: subprocess.Popen[str]) -> dict[str, int]:
    """Wait until the workers ``names`` are registered; their pids by name."""
    deadline = time.monotonic() + 60
    while True:
        listed = {w["name"]: w["pid"] for w in jobchain("workers", "-b", url, "--json").json()}
        if names <= set(listed):
            return {name: listed[name] for name in names}
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the worker processes did not register: {listed}\n{process.communicate()[1]}")
        time.sleep(0.2)


def test_worker_processes_drain_submitted_jobs_and_stop_on_sigterm(
    jobchain: Run, lists_url: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    """`worker --processes 2`: two named processes run what `submit` sends; SIGTERM stops them all."""
    b = ("-b", lists_url)
    name = f"procs-{os.getpid()}"
    parent = start_worker("-c", CONFIG, *b, "--processes", "2", "-j", "2", "-n", name)
    pids = _registered(jobchain, lists_url, {f"{name}-1", f"{name}-2"}, parent)
    assert len(set(pids.values())) == 2
    assert parent.pid not in pids.values()

    single = jobchain("submit", "-c", CONFIG, *b, "square", "[7]", "--wait", "--timeout", "60", "--json")
    assert single.code == 0, single
    assert single.json()["result"]["square"] == 49
    burst = jobchain("submit", "-c", CONFIG, *b, "burst", "--wait", "--timeout", "60", "--json")
    assert burst.code == 0, burst
    results = burst.json()["result"]
    assert [r["square"] for r in results] == [n * n for n in range(8)]
    assert {r["pid"] for r in results} == set(pids.values())  # both processes took part

    status = jobchain("status", *b, "--json")
    assert status.code == 0, status
    assert all(q["ready"] == 0 and q["in_flight"] == 0 for q in status.json()["queues"])

    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err
    assert f"worker {name} stopped: 2 processes, 9 succeeded, 0 failed" in err
    assert f"worker {name}-1 stopped" in err
    assert f"worker {name}-2 stopped" in err
    assert "Traceback" not in err
    assert out == ""
    assert not any(_alive(pid) for pid in pids.values())
    assert jobchain("workers", *b, "--json").json() == []


def test_worker_exits_non_zero_when_one_of_its_processes_dies(
    jobchain: Run, lists_url: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    """A worker process killed under the supervisor: the others are stopped, the exit code is 1."""
    name = f"dies-{os.getpid()}"
    parent = start_worker("-c", CONFIG, "-b", lists_url, "--processes", "2", "-j", "1", "-n", name)
    pids = _registered(jobchain, lists_url, {f"{name}-1", f"{name}-2"}, parent)
    os.kill(pids[f"{name}-1"], signal.SIGKILL)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 1, err
    assert f"worker process {name}-1 (pid {pids[f'{name}-1']}) was killed by SIGKILL" in err
    assert f"worker {name}-2 stopped" in err
    assert not _alive(pids[f"{name}-2"])


@pytest.mark.parametrize("command", ["run", "worker"])
def test_processes_on_the_memory_backend_is_a_usage_error(jobchain: Run, command: str) -> None:
    """The memory backend lives in one process: --processes with it is a usage error (exit code 2)."""
    args = ["-c", CONFIG] if command == "worker" else ["-n", "5"]
    result = jobchain(command, *args, "-b", "memory://", "--processes", "2")
    assert result.code == 2, result
    assert "memory backend" in result.err
    assert "cannot be shared between processes" in result.err
    assert "use a Redis backend" in result.err
    assert "Traceback" not in result.err


def test_abort_grace_ends_the_process_of_a_cancelled_job(
    jobchain: Run, lists_url: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    """A cancelled task that never checks ends with its process; the job is recorded cancelled, a new
    process takes the old one's place and the worker goes on."""
    stubborn = "tests/cli/configs/stubborn.py"
    b = ("-b", lists_url)
    name = f"abort-{os.getpid()}"
    parent = start_worker(
        "-c", stubborn, *b, "--processes", "2", "-j", "1", "-n", name, "--abort-grace", "0.5"
    )
    pids = _registered(jobchain, lists_url, {f"{name}-1", f"{name}-2"}, parent)
    job_id = jobchain("submit", "-c", stubborn, *b, "stubborn").out.strip()
    deadline = time.monotonic() + 60
    while "state      running" not in jobchain("status", job_id, *b).out:
        assert time.monotonic() < deadline, "the stubborn job never started"
        time.sleep(0.2)
    cancelled = jobchain("jobs", "cancel", job_id, *b, "--json")
    assert cancelled.json()["requested"] == [job_id], cancelled
    while "state      cancelled" not in jobchain("status", job_id, *b).out:
        assert time.monotonic() < deadline, "the stubborn job was not aborted"
        time.sleep(0.2)
    again = jobchain("submit", "-c", stubborn, *b, "square", "[6]", "--wait", "--timeout", "60", "--json")
    assert again.json()["result"]["square"] == 36
    later = _registered(jobchain, lists_url, {f"{name}-1", f"{name}-2"}, parent)
    assert len(set(later.values()) - set(pids.values())) == 1  # one process was replaced

    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err
    assert f"1 job cancelled 0.5s ago still running ({job_id})" in err
    assert "Traceback" not in err
    assert not any(_alive(pid) for pid in later.values())
