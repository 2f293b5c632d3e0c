"""`jobchain jobs list|show|counts` across processes on SQLite, and the one-line errors."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jobchain_sqlite") is None, reason="jobchain-sqlite is not installed"
)


@pytest.fixture
def run(sqlite_run: Run) -> Run:
    """`jobchain` on a SQLite file shared by every command of the test."""
    return sqlite_run


def test_list_pages_and_show(run: Run) -> None:
    """Jobs submitted are listed newest first a page at a time (the cursor continues), and shown by id."""
    for n in range(3):
        assert run("submit", "add", f"[{n}, 1]", "--queue", "q", "--id", f"job-{n}").code == 0
    first = run("jobs", "list", "--queue", "q", "--state", "ready", "--limit", "2", "--json").json()
    assert [j["id"] for j in first["jobs"]] == ["job-2", "job-1"]
    assert first["state"] == "queued"
    rest = run("jobs", "list", "-q", "q", "-n", "2", "--cursor", first["cursor"], "--json").json()
    assert ([j["id"] for j in rest["jobs"]], rest["cursor"]) == (["job-0"], None)
    oldest = run("jobs", "list", "-q", "q", "--oldest", "--task", "add", "--json").json()
    assert [j["id"] for j in oldest["jobs"]] == ["job-0", "job-1", "job-2"]

    table = run("jobs", "list", "-q", "q", "--limit", "2")
    assert table.code == 0, table
    assert table.out.split()[:5] == ["id", "task", "attempt", "enqueued", "arguments"]
    assert "job-2" in table.out
    assert "more: jobchain jobs list --queue q --state queued --limit 2 --cursor " in table.err

    shown = run("jobs", "show", "job-1")
    assert shown.code == 0, shown
    assert "queued" in shown.out
    assert run("jobs", "show", "job-1", "--json").json()["args"] == [1, 1]
    counts = run("jobs", "counts", "-q", "q", "--json").json()
    assert counts["counts"]["queued"] == 3
    assert counts["counts"]["cancelled"] == 0


def test_bad_input_is_one_line(run: Run) -> None:
    """A bad state, an unknown id and a bad cursor each give one error line, exit code 1."""
    for args, message in [
        (("jobs", "list", "--state", "later"), "error: unknown job state 'later'"),
        (("jobs", "show", "nope"), "error: no job with id 'nope'"),
        (("jobs", "list", "--cursor", "zz"), "error: not a cursor of this listing"),
    ]:
        result = run(*args)
        assert result.code == 1, result
        assert result.err.startswith(message)
        assert len(result.err.strip().splitlines()) == 1


def test_control_characters_in_names_are_escaped(run: Run) -> None:
    """A task name with an escape sequence is printed escaped in the table."""
    assert run("submit", "bad\x1b[2Jtask", "--queue", "q").code == 0
    listed = run("jobs", "list", "-q", "q")
    assert "bad\\x1b[2Jtask" in listed.out
    assert "\x1b" not in listed.out


def test_a_backend_without_browse_says_so(jobchain: Run, plugin_env: Callable[..., dict[str, str]]) -> None:
    """On a backend without Browse, `jobs list` is one NotSupportedError line; `jobs show` still works."""
    env = plugin_env({"jobchain-minimal": "jobchain_minimal"})
    result = jobchain("jobs", "list", "-b", "minimal://", env=env)
    assert result.code == 1, result
    assert "does not support browsing jobs (capability Browse)" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert jobchain("jobs", "show", "x", "-b", "minimal://", env=env).code == 1


def test_show_lists_the_failed_attempts(run: Run, tmp_path: Path) -> None:
    """`jobs show` and `failed show` list each failed attempt with its backoff; --json has them all."""
    from jobchain_sqlite import SqliteBackend

    from jobchain.clock import ManualClock
    from jobchain.testing import failed, make_job, reserve_one, retried

    clock = ManualClock(1_700_000_000.0)
    backend = SqliteBackend(str(tmp_path / "jobs.db"), clock=clock)
    try:
        job = make_job(clock, "fetch", id="flaky-1")
        backend.enqueue([job])
        backend.settle([retried(reserve_one(backend), 2.5, "refused\x1b[2J", clock=clock)])
        clock.advance(3.0)
        backend.settle([failed(reserve_one(backend), "gave up", clock=clock, error_type="OSError")])
    finally:
        backend.close()

    shown = run("jobs", "show", "flaky-1")
    assert shown.code == 0, shown
    lines = shown.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["attempt", "failed"])
    assert lines[header + 1].split()[0] == "1"
    assert "RuntimeError: refused\\x1b[2J" in lines[header + 1]
    assert lines[header + 1].endswith("2.50s")
    assert lines[header + 2].split()[0] == "2"
    assert "OSError: gave up" in lines[header + 2]
    assert lines[header + 2].endswith("-")
    assert "\x1b" not in shown.out
    assert shown.out.count("Traceback (most recent call last):") == 1  # the last attempt's

    every = run("jobs", "show", "flaky-1", "--tracebacks")
    assert every.code == 0, every
    assert every.out.count("Traceback (most recent call last):") == 2
    assert "attempt 1 (RuntimeError: refused\\x1b[2J):" in every.out

    data = run("jobs", "show", "flaky-1", "--json").json()
    assert [(e["attempt"], e["message"], e.get("retry_in")) for e in data["errors"]] == [
        (1, "refused\x1b[2J", 2.5),
        (2, "gave up", None),
    ]
    assert all(e["traceback"].startswith("Traceback") for e in data["errors"])

    entry = run("failed", "show", "flaky-1")
    assert entry.code == 0, entry
    assert "attempts that failed" in entry.out
    assert "RuntimeError: refused\\x1b[2J" in entry.out
    assert [e["attempt"] for e in run("failed", "show", "flaky-1", "--json").json()["errors"]] == [1, 2]
