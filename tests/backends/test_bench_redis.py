"""Smoke test of bench/bench_redis.py: a --quick run against the session's redis-server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_redis.py"

SYSTEMS = ("baseline", "memory", "redis-lists", "redis-streams")
REDIS_SYSTEMS = ("baseline", "redis-lists", "redis-streams")
WORKLOADS = (
    "enqueue 1-by-1",
    "bulk enqueue",
    "drain no-op",
    "worker CPU/job",
    "chain p50",
    "chain p95",
    "sleep efficiency",
)


@pytest.mark.slow
def test_quick_run_prints_every_row_and_verifies_every_job(redis_server_url: str) -> None:
    """--quick (a few hundred jobs, one repetition) exits 0, prints a row per workload and system,
    a target and a verdict for both Redis backends, and says every job completed exactly once."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-save", "--redis-url", redis_server_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BENCHMARK FAILED" not in proc.stderr
    rows: dict[tuple[str, str], str] = {}
    for line in proc.stdout.splitlines():
        cells = line.split("  ")
        label = cells[0].strip()
        rest = line[len(cells[0]) :].split()
        if label in (*WORKLOADS, "redis CPU/job") and rest:
            rows[(label, rest[0])] = line
    for workload in WORKLOADS:
        for system in SYSTEMS:
            assert (workload, system) in rows, f"no row for {workload} / {system}:\n{proc.stdout}"
        for system in ("redis-lists", "redis-streams"):
            assert rows[(workload, system)].rstrip().endswith(("met", "MISSED")), rows[(workload, system)]
    for system in REDIS_SYSTEMS:
        assert ("redis CPU/job", system) in rows, f"no redis CPU row for {system}:\n{proc.stdout}"
    assert "verified: every job ran and was acknowledged exactly once" in proc.stdout
