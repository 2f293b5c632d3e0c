"""Smoke test of bench/bench_floor.py: a --quick run against the session's redis-server."""

from __future__ import annotations

import os
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


class _InstantSystem:
    """Runs every job the moment its workers are let go, before go() returns: the fastest floor."""

    name = "instant"

    def __init__(self, tally: object) -> None:
        self.tally = tally
        self.jobs = 0
        self.fd = os.open(tally.path, os.O_WRONLY)  # type: ignore[attr-defined]

    def _write(self, kind: str, i: int) -> None:
        os.write(self.fd, b"%s%014d\n" % (kind.encode(), i))

    def enqueue_range(self, start: int, count: int) -> float:
        self.jobs += count
        return 0.001

    def bulk_range(self, start: int, count: int) -> float:
        return self.enqueue_range(start, count)

    def submit_sleeps(self, start: int, ms: object) -> None:
        raise AssertionError("no sleeps in this test")

    def submit_chain(self, i: int) -> None:
        for kind in "abc":
            self._write(kind, i)

    def start(self) -> list[int]:
        return [os.getpid()]

    def go(self) -> None:
        for i in range(self.jobs):
            self._write("n", i)
        tally = self.tally
        tally.wait(lambda: tally.total >= self.jobs, "instant go")  # type: ignore[attr-defined]

    def stop(self) -> None:
        os.close(self.fd)


def test_jobs_run_before_start_returns_are_counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Workers that drain every job before run_once goes on (a fast floor on a busy machine) still
    have every job counted: the counts are cleared before the workers start, not after."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        import _harness
        import bench_floor
    finally:
        sys.path.remove(str(BENCH.parent))
    monkeypatch.setattr(_harness, "STALL", 3.0)
    tally = bench_floor.Tally(str(tmp_path / "runs.fifo"))
    result = bench_floor.run_once(_InstantSystem(tally), tally, jobs=50, chains=3)
    assert result["drain"] > 0
    assert len(tally.seen["n"]) == 50
    assert set(tally.seen["n"].values()) == {1}
