"""Smoke test of bench/bench_scaling.py: a --quick run on servers and Clusters it starts itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_scaling.py"

DEPLOYMENTS = ("standalone", "cluster-1", "cluster-3")
SYSTEMS = ("redis-lists", "redis-streams")


def _rows(stdout: str, columns: int) -> dict[tuple[str, str], list[str]]:
    """The table rows with ``columns`` cells, keyed by (deployment, system)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == columns and cells[0] in DEPLOYMENTS:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


@pytest.mark.slow
def test_quick_run_prints_a_row_per_deployment_and_layout(redis_unavailable: Callable[[str], None]) -> None:
    """--quick exits 0 and prints, for a plain server and Clusters of 1 and 3 masters on both layouts,
    sane per-job counts: a submit is one EXEC of several commands, a drained job and a chain step
    take commands, every worker process holds connections, and idle workers still poll."""
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        redis_unavailable("redis-server is not installed (apt-get install redis-server)")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "BENCHMARK FAILED" not in proc.stderr
    costs, load = _rows(proc.stdout, 16), _rows(proc.stdout, 11)
    for deployment in DEPLOYMENTS:
        for system in SYSTEMS:
            key = (deployment, system)
            assert key in costs, f"no cost row for {key}:\n{proc.stdout}"
            assert key in load, f"no load row for {key}:\n{proc.stdout}"
            submit_cmds, submit_exec, submit_trips = (_number(c) for c in costs[key][:3])
            drained_cmds, step_cmds = _number(costs[key][4]), _number(costs[key][9])
            assert submit_exec == pytest.approx(1.0, abs=0.05)  # one transaction per submitted job
            assert 3 <= submit_cmds <= 20
            assert submit_trips >= 1
            assert 1 <= drained_cmds <= 40
            assert step_cmds >= drained_cmds  # a step also hands off the next one and updates the chain
            connections, idle_cmds = _number(load[key][2]), _number(load[key][3])
            assert connections >= 1
            assert idle_cmds > 0
    # on 3 masters the queues (one per master) spread the drain's Redis CPU: no master did it all
    for system in SYSTEMS:
        assert _number(load[("cluster-3", system)][1]) < 100
    assert "model inputs" in proc.stdout
