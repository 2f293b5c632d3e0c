"""Every example in examples/ runs with `jobchain run --config ... --target ...`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Run = Callable[..., Any]

SMALL = ("--workers", "4", "--iterations", "40", "--json")


@pytest.mark.parametrize(
    ("config", "target", "jobs_each"),
    [
        ("examples/seed.py", "nap", 1),
        ("examples/seed.py", "naps", 3),
        ("examples/etl.py", "etl", 3),
        ("examples/fanout.py", "thumbnails", 6),
        ("examples/fanout.py", "variants", 3),
    ],
)
def test_example_runs_and_every_job_is_accounted_for(
    jobchain: Run, config: str, target: str, jobs_each: int
) -> None:
    """The example runs to the end; succeeded + failed + not executed is every job."""
    result = jobchain("run", "--config", config, "--target", target, *SMALL)
    assert result.code == 0, result
    r = result.json()
    assert r["target"] == target
    assert r["jobs_total"] == 40 * jobs_each
    assert r["jobs_succeeded"] + r["jobs_failed"] + r["jobs_not_executed"] == r["jobs_total"]
    assert r["failed_queue"] == r["jobs_failed"]
    if jobs_each > 1:
        assert sum(r["chains"].values()) == 40


def test_seed_example_shows_the_naps_per_worker(jobchain: Run) -> None:
    """The seed workload's report has a row per worker with its jobs and seconds slept."""
    result = jobchain(
        "run", "--config", "examples/seed.py", "--target", "nap", "--workers", "3", "--iterations", "30"
    )
    assert result.code == 0, result
    rows = [line.split() for line in result.out.splitlines() if line.startswith("worker-")]
    assert [row[0] for row in rows] == ["worker-1", "worker-2", "worker-3"]
    assert sum(int(row[1]) for row in rows) == 30
    assert all(float(row[5]) > 0 for row in rows)


def test_seed_example_takes_arguments(jobchain: Run) -> None:
    """--args binds arguments to every submission."""
    result = jobchain(
        "run",
        "--config",
        "examples/seed.py",
        "--target",
        "nap",
        "--args",
        '{"low_ms": 1, "high_ms": 2}',
        *SMALL,
    )
    assert result.code == 0, result
    r = result.json()
    assert r["jobs_succeeded"] == 40
    assert sum(w["busy_seconds"] for w in r["per_worker"]) < 40 * 0.010


def test_etl_example_retries_and_halts(jobchain: Run) -> None:
    """The ETL chain retries its flaky extract and halts on a corrupt batch (ValueError, not retried)."""
    result = jobchain(
        "run",
        "--config",
        "examples/etl.py",
        "--target",
        "etl",
        "--workers",
        "8",
        "--iterations",
        "150",
        "--json",
    )
    assert result.code == 0, result
    r = result.json()
    assert r["retries"] > 0
    assert r["jobs_failed"] == r["chains"]["failed"] > 0
    assert set(r["errors"]) <= {"ValueError", "SourceTimeoutError"}
    halted = [c["rendered"] for c in r["example_chains"] if c["state"] == "failed"]
    assert "extract (succeeded) -> transform (failed) -> load (not executed)" in halted


def test_fanout_example_renders_the_group(jobchain: Run) -> None:
    """The fan-out chain shows its group step."""
    result = jobchain(
        "run",
        "--config",
        "examples/fanout.py",
        "--target",
        "thumbnails",
        "--workers",
        "4",
        "--iterations",
        "5",
    )
    assert result.code == 0, result
    assert (
        "fetch (succeeded) -> group(resize, resize, resize, resize) (succeeded) -> publish (succeeded)"
        in result.out
    )
