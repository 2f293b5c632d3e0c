"""The commands across processes, on a shared backend: a real redis-server and jobchain-redis.

`jobchain worker` runs in one process while submit, status, failed and workers
run in others, as in production. Skipped when redis-server or the redis plugin
is missing, except with ``CI=true``, where that fails the run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import forkserver
import pytest

Run = Callable[..., Any]
CONFIG = "examples/etl.py"


@pytest.fixture
def cli_env(installed_cli_env: dict[str, str]) -> dict[str, str]:
    """Installed plugins enabled: the redis backend is one of them."""
    return installed_cli_env


@pytest.fixture
def jobchain(jobchain: Run, cli_env: dict[str, str]) -> Run:
    """The conftest's runner, with the installed plugins enabled."""

    def run(*args: str, **options: Any) -> Any:
        options.setdefault("env", cli_env)
        return jobchain(*args, **options)

    return run


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and a real Redis is required: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A redis-server on a free loopback port, for this module."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed")
        raise AssertionError("unreachable")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                _unavailable(f"redis-server did not start on port {port}")
            time.sleep(0.02)
    yield port
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(params=["redis-streams", "redis-lists"])
def backend_url(redis_port: int, jobchain: Run, request: pytest.FixtureRequest) -> str:
    """A URL of each Redis backend on a database of its own for each test."""
    if importlib.util.find_spec("jobchain_redis") is None:
        _unavailable("jobchain-redis is not installed (pip install -e backends/redis)")
    schemes = {b["scheme"] for b in jobchain("backends", "--json").json()["backends"]}
    scheme = request.param
    if scheme not in schemes:
        _unavailable(f"{scheme} is not among the installed backends: {sorted(schemes)}")
    db = 1 + len(request.node.name) % 14
    return f"{scheme}://127.0.0.1:{redis_port}/{db}"


@pytest.fixture
def worker(repo_root: Path, cli_env: dict[str, str], backend_url: str, jobchain: Run) -> Iterator[str]:
    """A `jobchain worker` process serving examples/etl.py; yields its name."""
    name = f"etl-{os.getpid()}"
    command = ["worker", "-c", CONFIG, "-b", backend_url, "-n", name, "-j", "4", "-l", "zone=test"]
    process = forkserver.popen(
        [sys.executable, "-m", "jobchain", *command],
        cwd=repo_root,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while name not in {w["name"] for w in jobchain("workers", "-b", backend_url, "--json").json()}:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the worker did not register: {process.communicate()[1]}")
        time.sleep(0.1)
    yield name
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=20)  # also closes the pipe
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def test_submit_status_failed_and_workers_across_processes(
    jobchain: Run, backend_url: str, worker: str
) -> None:
    """A worker in its own process runs what `submit` sends; status, failed and workers see it all."""
    b = ("-b", backend_url)
    listed = jobchain("workers", *b, "--json").json()
    assert [(w["name"], w["labels"], sorted(w["queues"])) for w in listed] == [
        (worker, {"zone": "test"}, ["db", "default"])
    ]

    loaded = jobchain(
        "submit", "-c", CONFIG, *b, "load", '[[{"id": 1, "eur": 2.5}]]', "--wait", "--timeout", "20"
    )
    assert loaded.code == 0, loaded
    assert 'result: {"rows": 1, "total_eur": 2.5}' in loaded.out

    chain_id = jobchain("submit", "-c", CONFIG, *b, "etl").out.strip()
    deadline = time.monotonic() + 20
    while (state := jobchain("status", *b, chain_id, "--json").json()["state"]) in ("pending", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shown = jobchain("status", *b, chain_id, "--json").json()
    assert state in ("succeeded", "failed")
    assert [s["task"] for s in shown["steps"]] == ["extract", "transform", "load"]

    bad = '[[{"id": 7, "amount": null, "currency": "EUR"}]]'
    failed = jobchain("submit", "-c", CONFIG, *b, "transform", bad, "--wait", "--timeout", "20")
    assert failed.code == 1
    assert "ValueError: row 7 has no amount" in failed.err
    job_id = failed.out.split()[1]
    entries = jobchain("failed", "list", *b, "--task", "transform", "--json").json()
    assert job_id in [e["id"] for e in entries]
    assert jobchain("failed", "retry", *b, job_id, "--json").json()["redriven"] == [job_id]
    purged = jobchain("failed", "purge", *b, "--yes")
    assert purged.code == 0
    assert purged.out.startswith("purged ")

    stats = jobchain("status", *b, "--json").json()
    assert {q["queue"] for q in stats["queues"]} >= {"default", "db"}
    assert stats["workers"] == 1

    assert jobchain("workers", "stop", worker, *b).code == 0
    deadline = time.monotonic() + 20
    while worker in {w["name"] for w in jobchain("workers", *b, "--json").json()}:
        assert time.monotonic() < deadline, "the worker did not stop"
        time.sleep(0.2)


def test_run_on_redis(jobchain: Run, backend_url: str) -> None:
    """The reference workload with chains and failures runs on a redis backend too."""
    result = jobchain(
        "run", "-b", backend_url, "-w", "4", "-n", "30", "-k", "2", "--fail-rate", "0.3", "--json"
    )
    assert result.code == 0, result
    r = result.json()
    assert r["backend"] == backend_url
    assert r["jobs_succeeded"] + r["jobs_failed"] + r["jobs_not_executed"] == 60
    assert r["failed_queue"] == r["jobs_failed"]


def test_a_second_worker_under_a_live_name_is_refused(jobchain: Run, backend_url: str, worker: str) -> None:
    """`jobchain worker -n NAME` while a live worker holds NAME exits 1 with one line naming its host and pid.

    The first worker keeps its registration and its jobs: it still serves what is submitted.
    """
    b = ("-b", backend_url)
    [holder] = jobchain("workers", *b, "--json").json()
    second = jobchain("worker", "-c", CONFIG, *b, "-n", worker, "-j", "2", timeout=30)
    assert second.code == 1, second
    lines = second.err.strip().splitlines()
    assert len(lines) == 1, second
    assert "taken by a live worker" in lines[0]
    assert f"host {holder['host']}, pid {holder['pid']}" in lines[0]
    assert "Traceback" not in second.err

    [still] = jobchain("workers", *b, "--json").json()
    assert (still["name"], still["pid"]) == (worker, holder["pid"])
    loaded = jobchain(
        "submit", "-c", CONFIG, *b, "load", '[[{"id": 1, "eur": 2.5}]]', "--wait", "--timeout", "20"
    )
    assert loaded.code == 0, loaded


def test_a_worker_stops_taking_jobs_of_a_paused_queue(jobchain: Run, backend_url: str, worker: str) -> None:
    """`queues pause db`: within a second the worker takes no db job; `queues resume db` serves it again."""
    b = ("-b", backend_url)
    paused = jobchain("queues", "pause", "db", *b)
    assert paused.code == 0, paused
    assert paused.out.startswith("paused db on ")
    time.sleep(1.0)  # the promise: a pause is honoured within a second
    job_id = jobchain("submit", "-c", CONFIG, *b, "load", '[[{"id": 1, "eur": 2.5}]]').out.strip()
    time.sleep(1.5)
    assert jobchain("status", *b, job_id, "--json").json()["state"] == "queued"  # accepted, not taken
    listed = {q["queue"]: q for q in jobchain("queues", "list", *b, "--json").json()}
    assert (listed["db"]["paused"], listed["db"]["ready"]) == (True, 1)
    status = jobchain("status", *b)
    assert [line.split()[-1] for line in status.out.splitlines() if line.startswith("db ")] == ["paused"]
    assert {q["queue"]: q["paused"] for q in jobchain("status", *b, "--json").json()["queues"]}["db"]

    assert jobchain("queues", "resume", "db", *b).code == 0
    deadline = time.monotonic() + 10
    while jobchain("status", *b, job_id, "--json").json()["state"] != "succeeded":
        assert time.monotonic() < deadline, "the worker did not take the job after resume"
        time.sleep(0.1)
    assert {q["queue"]: q["paused"] for q in jobchain("queues", *b, "--json").json()} == {"db": False}
