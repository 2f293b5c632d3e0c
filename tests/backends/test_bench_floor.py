"""Smoke test of bench/bench_floor.py: a --quick run against the session's redis-server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_floor.py"

SYSTEMS = ("floor", "redis-lists", "redis-streams")
WORKLOADS = ("enqueue 1-by-1", "drain no-op (steady)", "worker CPU/job", "warm chain p50", "warm chain p95")


@pytest.mark.slow
def test_quick_run_counts_every_job_once_and_prints_every_row(redis_server_url: str) -> None:
    """--quick exits 0, prints a row per workload and system (the floor's ratio 1.00x), and says
    every job and chain step ran exactly once, as counted through the FIFO outside Redis."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--redis-url", redis_server_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "BENCHMARK FAILED" not in proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        for workload in WORKLOADS:
            if line.startswith(workload + " "):
                system = line[len(workload) :].split()[0]
                rows[(workload, system)] = line
    for workload in WORKLOADS:
        for system in SYSTEMS:
            assert (workload, system) in rows, f"no row for {workload} / {system}:\n{proc.stdout}"
        assert rows[(workload, "floor")].rstrip().endswith("1.00x")
    assert "verified: every job ran exactly once (200 no-op jobs and 10 x 3 chain steps" in proc.stdout
