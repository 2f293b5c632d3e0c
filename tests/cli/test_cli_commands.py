"""worker, submit, status, failed, workers, backends.

memory:// lives inside one process, so the inspection commands are pointed at
tests/cli/configs/populated.py, a config that fills its store when imported
(with deterministic ids, t-0001 ...).
"""

from __future__ import annotations

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


@pytest.fixture
def populated(configs: Path) -> str:
    return str(configs / "populated.py")


def test_version_and_help(jobchain: Run) -> None:
    """`python -m jobchain` is the jobchain command; --help lists every command."""
    assert jobchain("--version").out.strip() == "jobchain, version 0.1.0"
    result = jobchain("--help")
    assert result.code == 0
    for command in ("run", "worker", "submit", "status", "failed", "workers", "backends"):
        assert f"  {command} " in result.out


def test_backends_lists_schemes_and_load_failures(
    jobchain: Run, plugin_env: Callable[..., dict[str, str]]
) -> None:
    """`backends` shows each scheme with its distribution, and plugins that failed to load, with why."""
    env = plugin_env({"jobchain-unreachable": "jobchain_unreachable", "jobchain-broken": "jobchain_broken"})
    result = jobchain("backends", env=env)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert any(line.split()[:2] == ["memory://", "jobchain"] for line in lines if line.strip())
    assert any(
        line.split()[:2] == ["unreachable://", "jobchain-unreachable"] for line in lines if line.strip()
    )
    assert "jobchain-broken" in result.out
    assert "needs libfoo" in result.out
    data = jobchain("backends", "--json", env=env).json()
    assert {"memory", "unreachable"} <= {b["scheme"] for b in data["backends"]}
    assert [f["distribution"] for f in data["failed"]] == ["jobchain-broken"]


def test_run_on_an_installed_plugin_backend(
    jobchain: Run, plugin_env: Callable[..., dict[str, str]], repo_root: Path
) -> None:
    """--backend runs the reference workload on any installed backend (here the example plugin)."""
    env = plugin_env(
        {"jobchain-dictstore": "jobchain_dictstore.plugin"}, repo_root / "examples" / "plugin_backend"
    )
    result = jobchain(
        "run", "--backend", "dictstore://", "--workers", "4", "--iterations", "20", "--json", env=env
    )
    assert result.code == 0, result
    report = result.json()
    assert report["backend"] == "dictstore://"
    assert report["jobs_succeeded"] == 20


def test_status_shows_queue_depths(jobchain: Run, populated: str) -> None:
    """`status`: ready, delayed, in flight and failed per queue."""
    result = jobchain("status", "--config", populated)
    assert result.code == 0, result
    rows = {line.split()[0]: line.split()[1:] for line in result.out.splitlines() if line.strip()}
    assert rows["default"] == ["0", "0", "0", "2"]
    assert rows["slow"] == ["3", "0", "0", "0"]
    assert "1 live worker" in result.out
    data = jobchain("status", "--config", populated, "--json").json()
    assert {q["queue"]: q["ready"] for q in data["queues"]} == {"default": 0, "slow": 3}


def test_status_of_a_chain_shows_every_step(jobchain: Run, populated: str) -> None:
    """`status ID` of a chain: its state and each step's state and job id."""
    result = jobchain("status", "--config", populated, "t-0006")
    assert result.code == 0, result
    assert "ok (succeeded) -> boom (failed) -> ok (not executed)" in result.out
    assert "state     failed" in result.out
    assert "Fail: boom 3" in result.out
    data = jobchain("status", "--config", populated, "t-0006", "--json").json()
    assert [(s["task"], s["state"], s["job_id"]) for s in data["steps"]] == [
        ("ok", "succeeded", "t-0003"),
        ("boom", "failed", "t-0004"),
        ("ok", "not_executed", "t-0005"),
    ]


def test_status_of_a_job(jobchain: Run, populated: str) -> None:
    """`status ID` of a job: state, result or error."""
    data = jobchain("status", "--config", populated, "t-0001", "--json").json()
    assert (data["task"], data["state"], data["result"]) == ("ok", "succeeded", 1)
    result = jobchain("status", "--config", populated, "t-0002")
    assert "failed" in result.out
    assert "Fail: boom 2" in result.out


def test_status_of_an_unknown_id(jobchain: Run) -> None:
    """An id nobody knows: error, and the memory:// hint."""
    result = jobchain("status", "nope")
    assert result.code == 1
    assert result.err.startswith("error: no job or chain with id 'nope' on memory://")
    assert "lives inside one process" in result.err


def test_failed_list_and_show(jobchain: Run, populated: str) -> None:
    """`failed list` shows each failed job and its error; `failed show` adds the traceback."""
    result = jobchain("failed", "list", "--config", populated)
    assert result.code == 0, result
    assert "t-0002" in result.out
    assert "t-0004" in result.out
    assert "Fail: boom 2" in result.out
    entries = jobchain("failed", "list", "--config", populated, "--json").json()
    assert [(e["id"], e["task"], e["error"]["type"]) for e in entries] == [
        ("t-0002", "boom", "Fail"),
        ("t-0004", "boom", "Fail"),
    ]
    assert entries[1]["chain"] == {"id": "t-0006", "step": 2}
    shown = jobchain("failed", "show", "--config", populated, "t-0004")
    assert shown.code == 0
    assert "Traceback (most recent call last)" in shown.out
    assert "retry resumes it" in shown.out


def test_failed_list_says_when_more_follow(jobchain: Run, populated: str) -> None:
    """`failed list --limit` says that more entries follow and how to see them; --all shows every one."""
    page = jobchain("failed", "list", "--limit", "1", "--config", populated)
    assert page.code == 0, page
    assert "t-0002" in page.out
    assert "t-0004" not in page.out
    assert "1 shown of 2; more failed jobs follow: add --offset 1 for the next page, or --all" in page.out
    following = jobchain("failed", "list", "--limit", "1", "--offset", "1", "--config", populated)
    assert "t-0004" in following.out
    assert "more failed jobs follow" not in following.out
    everything = jobchain("failed", "list", "--all", "--limit", "1", "--config", populated, "--json")
    assert [e["id"] for e in everything.json()] == ["t-0002", "t-0004"]
    assert "more failed jobs" not in everything.err
    as_json = jobchain("failed", "list", "--limit", "1", "--config", populated, "--json")
    assert [e["id"] for e in as_json.json()] == ["t-0002"]
    assert "--offset 1" in as_json.err


def test_failed_retry_forms(jobchain: Run, populated: str) -> None:
    """`failed retry` takes IDs, --task or --all (exactly one), and names ids it could not find."""
    assert "re-driven 2 jobs" in jobchain("failed", "retry", "--all", "--config", populated).out
    assert "re-driven 2 jobs" in jobchain("failed", "retry", "--task", "boom", "--config", populated).out
    one = jobchain("failed", "retry", "t-0004", "--config", populated, "--json")
    assert one.json() == {"redriven": ["t-0004"], "not_found": []}
    missing = jobchain("failed", "retry", "t-0004", "t-9999", "--config", populated)
    assert missing.code == 1
    assert "not in the failed queue: t-9999; nothing was re-driven" in missing.err
    assert "re-driven 0 jobs" in missing.out, "a typo among good ids must not re-drive the good ones"
    assert jobchain("failed", "retry", "--config", populated).code == 2
    assert jobchain("failed", "retry", "t-0004", "--all", "--config", populated).code == 2


def test_failed_purge_asks_before_deleting_everything(jobchain: Run, populated: str) -> None:
    """`failed purge` without --yes refuses when it cannot ask; with --yes or ids it deletes."""
    refused = jobchain("failed", "purge", "--config", populated)
    assert refused.code == 1
    assert "add --yes" in refused.err
    assert jobchain("failed", "purge", "--yes", "--config", populated).out.strip() == "purged 2 failed jobs"
    assert jobchain("failed", "purge", "t-0002", "--config", populated).out.strip() == "purged 1 failed job"


def test_workers_list_and_stop(jobchain: Run, populated: str) -> None:
    """`workers` lists live workers; `workers stop NAME` asks one to stop, or names the live ones."""
    listed = jobchain("workers", "--config", populated)
    assert listed.code == 0, listed
    assert "fake-worker" in listed.out
    assert "example-host" in listed.out
    assert "zone=eu" in listed.out
    data = jobchain("workers", "list", "--config", populated, "--json").json()
    assert [w["name"] for w in data] == ["fake-worker"]
    stopped = jobchain("workers", "stop", "fake-worker", "--config", populated)
    assert stopped.code == 0
    assert "asked worker fake-worker to stop" in stopped.out
    unknown = jobchain("workers", "stop", "ghost", "--config", populated)
    assert unknown.code == 1
    assert "no live worker named 'ghost'" in unknown.err
    assert "fake-worker" in unknown.err


def test_submit_wait_prints_the_result(jobchain: Run) -> None:
    """`submit --wait` prints the id and the result (on memory:// the job runs in the command)."""
    result = jobchain("submit", "--config", "examples/fanout.py", "thumbnails", '["img-7"]', "--wait")
    assert result.code == 0, result
    assert "(thumbnails): succeeded" in result.out
    assert 'result: {"id": "img-7", "widths": [160, 320, 640, 1280]' in result.out
    data = jobchain("submit", "--config", "examples/seed.py", "nap", "[1, 2]", "--json").json()
    assert data["kind"] == "job"
    assert data["state"] == "succeeded"
    assert 0.001 <= data["result"] <= 0.002


def test_submit_wait_reports_a_failure(jobchain: Run, populated: str) -> None:
    """A job that fails: its error on stderr, exit code 1."""
    result = jobchain("submit", "--config", populated, "boom", "[7]", "--wait")
    assert result.code == 1
    assert "Fail: boom 7" in result.err
    assert "Traceback" not in result.err


def test_submit_with_id_uses_it(jobchain: Run) -> None:
    """`submit --id ID` stores the job (or chain) under ID and prints it."""
    data = jobchain(
        "submit", "--config", "examples/seed.py", "nap", "[1, 2]", "--id", "nap-1", "--json"
    ).json()
    assert data["id"] == "nap-1"
    assert data["state"] == "succeeded"
    data = jobchain(
        "submit", "--config", "examples/fanout.py", "thumbnails", '["img-7"]', "--id", "th-7", "--json"
    ).json()
    assert data["id"] == "th-7"
    assert data["kind"] == "chain"


def test_submit_with_an_existing_id_stores_nothing(jobchain: Run, populated: str) -> None:
    """`submit --id` of an id that exists answers with the existing job: t-0001 is ok(1), done already."""
    data = jobchain("submit", "--config", populated, "ok", "[5]", "--id", "t-0001", "--json").json()
    assert data["id"] == "t-0001"
    assert data["result"] == 1


def test_submit_with_an_invalid_id_is_refused(jobchain: Run) -> None:
    """`submit --id` with whitespace in it: a clear error, exit code 1, nothing run."""
    result = jobchain("submit", "--config", "examples/seed.py", "nap", "[1, 2]", "--id", "has space")
    assert result.code == 1, result
    assert "job id 'has space' has whitespace" in result.err
    assert "Traceback" not in result.err


def test_worker_stops_gracefully_on_sigterm(repo_root: Path, cli_env: dict[str, str], populated: str) -> None:
    """`worker` runs jobs until SIGTERM, then stops cleanly with exit code 0."""
    command = [
        "--log-level",
        "debug",
        "worker",
        "--config",
        populated,
        "-Q",
        "slow",
        "-j",
        "2",
        "--name",
        "w1",
    ]
    process = forkserver.popen(
        [sys.executable, "-m", "jobchain", *command],
        cwd=repo_root,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        seen = ""
        # the three `later` jobs waiting in queue slow run first
        # (the banner follows start(): the first jobs may be logged before it)
        while time.monotonic() < deadline and (
            seen.count("job_succeeded") < 3 or "worker w1: queues slow" not in seen
        ):
            line = process.stderr.readline()
            if not line:
                break
            seen += line
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    err = seen + err
    assert process.returncode == 0, err
    assert out == ""
    assert "worker w1: queues slow" in err
    assert "received SIGTERM" in err
    assert "worker w1 stopped: 3 succeeded, 0 failed" in err
    assert "Traceback" not in err


def test_plugins_add_commands(jobchain: Run, plugin_env: Callable[..., dict[str, str]]) -> None:
    """A plugin's jobchain_add_commands hook adds commands to `jobchain`, listed after the built-in ones."""
    env = plugin_env({"jobchain-hello": "jobchain_hello"})
    result = jobchain("hello", "plugins", env=env)
    assert result.code == 0, result
    assert result.out == "hello, plugins\n"
    listed = jobchain("--help", env=env).out
    assert listed.index("  backends ") < listed.index("  hello ")
