"""bench/bench_peers.py --quick with every peer: makes the peers' venvs (package registry), minutes long.

Marked ``peers``: skipped unless ``--peers`` or ``JOBCHAIN_PEERS=1`` (see tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_peers.py"
SYSTEMS = ("floor", "redis-lists", "redis-streams", "huey", "dramatiq", "rq", "taskiq", "arq", "saq")
SYSTEMS += ("celery",)


@pytest.mark.peers
def test_quick_peer_run_counts_every_job_once_for_every_system(redis_server_url: str) -> None:
    """--quick makes every peer's venv, runs every workload on every system, exits 0, and says every
    job ran exactly once, as counted through the FIFO outside every system."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--redis-url", redis_server_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "BENCHMARK FAILED" not in proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for system in SYSTEMS:
        rows = [line for line in table if line.split("|")[1].strip().split(" ")[0] == system]
        assert len(rows) == 1, f"no row for {system}:\n{proc.stdout}"
        assert " - |" not in rows[0], f"{system} lacks a figure: {rows[0]}"
    assert "verified: every job ran exactly once (300 no-op jobs, 6 x 3 chain steps" in proc.stdout


@pytest.mark.peers
def test_quick_memory_comparison_has_every_figure_for_jobchain_huey_and_dramatiq() -> None:
    """bench_memory_peers.py --quick runs both jobchain layouts, huey and Dramatiq to the end (every
    job counted through the FIFO) and prints a row of four figures for each."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_memory_peers.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    for system in ("redis-lists", "redis-streams", "huey", "dramatiq"):
        assert rows[system].count(" B |") == 4, rows.get(system)


@pytest.mark.peers
def test_quick_asyncio_run_ends_every_job_of_arq_saq_and_taskiq(redis_server_url: str) -> None:
    """bench_async.py --quick runs the three asyncio peers in one worker process each to the end (every
    job counted through the FIFO; one that ends twice is counted once and shown) with a full row each."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_async.py"),
            "--quick",
            "--systems",
            "floor,arq,saq,taskiq",
            "--redis-url",
            redis_server_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {
        line.split("|")[1].strip().split(" ")[0]: line
        for line in proc.stdout.splitlines()
        if line.startswith("| ")
    }
    for system in ("floor", "arq", "saq", "taskiq"):
        assert " - |" not in rows[system], rows.get(system)
    assert "verified: every one of the 500 jobs ended" in proc.stdout
