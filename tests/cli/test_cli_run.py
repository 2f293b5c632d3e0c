"""``jobchain run``: the reference workload, its report, --json, --quiet and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forkserver
import pytest

Run = Callable[..., Any]

SMALL = ("--workers", "4", "--iterations", "40")

REQUIRED_KEYS = {
    "backend",
    "workers",
    "iterations",
    "jobs_succeeded",
    "jobs_failed",
    "retries",
    "wall_seconds",
    "throughput_per_s",
    "latency_ms",
    "per_worker",
    "chains",
    "failed_queue",
}


def test_report_has_a_row_per_worker_and_the_totals(jobchain: Run) -> None:
    """The plain report lists every worker, the totals, throughput, latency and the failed queue."""
    result = jobchain("run", *SMALL)
    assert result.code == 0, result
    out = result.out
    for n in range(1, 5):
        assert f"worker-{n} " in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[1] == "40"  # jobs run, summed over the workers
    assert "throughput" in out
    assert "jobs/s" in out
    assert "p50" in out
    assert "p95" in out
    assert "p99" in out
    assert "failed queue   0" in out
    assert "40 total: 40 succeeded, 0 failed" in out
    assert "\x1b[" not in out  # no colour codes when stdout is not a terminal
    assert "Traceback" not in result.err


def test_plain_progress_lines_go_to_stderr_when_stdout_is_not_a_terminal(jobchain: Run) -> None:
    """Without a terminal, progress is plain lines on stderr, ending at 100%."""
    result = jobchain("run", *SMALL)
    assert result.code == 0, result
    lines = [line for line in result.err.splitlines() if line.startswith("progress:")]
    assert lines, result
    assert lines[-1].startswith("progress: 40/40 (100%)")
    assert "left=0" in lines[-1]
    assert "progress:" not in result.out


def test_json_report_has_the_documented_keys(jobchain: Run) -> None:
    """--json prints one JSON object with at least the keys the issue lists."""
    result = jobchain("run", *SMALL, "--json")
    assert result.code == 0, result
    report = result.json()
    assert set(report) >= REQUIRED_KEYS
    assert report["backend"] == "memory://"
    assert report["workers"] == 4
    assert report["iterations"] == 40
    assert set(report["latency_ms"]) >= {"p50", "p95", "p99"}
    assert [w["worker"] for w in report["per_worker"]] == ["worker-1", "worker-2", "worker-3", "worker-4"]
    assert all({"worker", "jobs", "busy_seconds"} <= set(w) for w in report["per_worker"])


def test_json_figures_are_consistent(jobchain: Run) -> None:
    """The counts add up: every job accounted for, every run in exactly one worker's row."""
    report = jobchain("run", *SMALL, "--json").json()
    assert report["jobs_succeeded"] == 40
    assert report["jobs_failed"] == 0
    assert sum(w["jobs"] for w in report["per_worker"]) == 40
    busy = sum(w["busy_seconds"] for w in report["per_worker"])
    assert busy >= 40 * 0.010  # every job slept at least 10 ms
    assert report["wall_seconds"] >= busy / 4 * 0.9
    assert report["throughput_per_s"] == pytest.approx(40 / report["wall_seconds"], rel=0.01)
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= report["wall_seconds"] * 1000 + 50
    assert latency["count"] == 40
    assert report["failed_queue"] == 0
    assert report["chains"] == {}


def test_chains_with_failures_show_retries_halting_and_the_failed_queue(jobchain: Run) -> None:
    """--chain-length and --fail-rate: retries, halted chains, not-executed steps and failed jobs agree."""
    result = jobchain("run", *SMALL, "--chain-length", "3", "--fail-rate", "0.3", "--seed", "3", "--json")
    assert result.code == 0, result
    r = result.json()
    assert r["jobs_total"] == 120
    assert r["jobs_succeeded"] + r["jobs_failed"] + r["jobs_not_executed"] == 120
    assert r["jobs_left"] == 0
    assert sum(w["jobs"] for w in r["per_worker"]) == r["jobs_succeeded"] + r["jobs_failed"] + r["retries"]
    assert sum(w["retries"] for w in r["per_worker"]) == r["retries"]
    assert sum(w["failures"] for w in r["per_worker"]) == r["jobs_failed"]
    assert r["retries"] > 0
    assert r["jobs_failed"] > 0
    assert r["failed_queue"] == r["jobs_failed"] == r["chains"]["failed"]
    assert r["chains"]["succeeded"] + r["chains"]["failed"] == 40
    assert r["errors"] == {"InjectedFailure": r["jobs_failed"]}
    rendered = [c["rendered"] for c in r["example_chains"]]
    assert any("(failed)" in text for text in rendered)
    assert any(text.endswith("(succeeded)") and "failed" not in text for text in rendered)
    halted = next(c for c in r["example_chains"] if c["state"] == "failed")
    failed_at = (
        halted["rendered"]
        .split(" -> ")
        .index(next(s for s in halted["rendered"].split(" -> ") if s.endswith("(failed)")))
    )
    assert all(s.endswith("(not executed)") for s in halted["rendered"].split(" -> ")[failed_at + 1 :])


def test_the_seed_fixes_the_failures(jobchain: Run) -> None:
    """The same seed injects the same failures, however the threads interleave."""
    args = (
        "run",
        "-w",
        "4",
        "-n",
        "16",
        "--chain-length",
        "2",
        "--fail-rate",
        "0.4",
        "--seed",
        "11",
        "--json",
    )
    first, second = jobchain(*args).json(), jobchain(*args).json()
    keys = ("jobs_succeeded", "jobs_failed", "jobs_not_executed", "retries", "chains", "ideal_seconds")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}


def test_report_renders_example_chains(jobchain: Run) -> None:
    """The plain report shows chains as `A (succeeded) -> B (failed) -> C (not executed)`."""
    result = jobchain(
        "run", "-w", "4", "-n", "12", "--chain-length", "3", "--fail-rate", "0.5", "--seed", "5"
    )
    assert result.code == 0, result
    assert "example chains" in result.out
    assert "step1 (succeeded) -> step2 (succeeded) -> step3 (succeeded)" in result.out
    assert "chain-1: step1 (failed) -> step2 (not executed) -> step3 (not executed)" in result.out
    assert "chains         " in result.out
    assert "failed" in result.out


def test_quiet_prints_one_summary_line(jobchain: Run) -> None:
    """--quiet: no progress, a single summary line."""
    result = jobchain("run", *SMALL, "--quiet")
    assert result.code == 0, result
    assert result.out.count("\n") == 1
    assert result.out.startswith("40 jobs: 40 succeeded, 0 failed")
    assert "progress:" not in result.err


def test_ctrl_c_stops_gracefully_and_reports(repo_root: Path, cli_env: dict[str, str]) -> None:
    """SIGINT mid-run: running jobs finish, the partial report is printed, the exit code is 130."""
    process = forkserver.popen(
        [sys.executable, "-m", "jobchain", "run", "--workers", "2", "--iterations", "2000", "--json"],
        cwd=repo_root,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        assert process.stderr is not None
        # wait until the run is under way (the first progress line), let it work, then interrupt it
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if line.startswith("progress:") or not line:
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    report = json.loads(out)
    assert report["interrupted"] is True
    assert 0 < report["jobs_succeeded"] < 2000
    assert report["jobs_left"] == 2000 - report["jobs_succeeded"]
    assert "Traceback" not in err
    assert "interrupted" in err
