"""`jobchain queues [list|pause|resume]` and the paused mark of `status`, across processes on SQLite."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
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


def test_pause_list_and_resume(run: Run) -> None:
    """A paused queue accepts a submit, is listed paused by `queues` and `status`, and resumes."""
    assert run("queues").out.startswith("no queues on ")
    paused = run("queues", "pause", "db", "reports")
    assert paused.code == 0, paused
    assert paused.out.startswith("paused db, reports on sqlite://")
    assert run("queues", "pause", "db").code == 0  # idempotent
    submitted = run("submit", "-c", "examples/etl.py", "load", '[[{"id": 1, "eur": 2.5}]]')
    assert submitted.code == 0, submitted

    listed = {q["queue"]: q for q in run("queues", "list", "--json").json()}
    assert (listed["db"]["ready"], listed["db"]["paused"]) == (1, True)
    assert (listed["reports"]["ready"], listed["reports"]["paused"]) == (0, True)
    rows = {line.split()[0]: line.split()[1:] for line in run("queues").out.splitlines()[1:]}
    assert rows["db"] == ["1", "0", "0", "0", "paused"]
    status = run("status")
    table = {line.split()[0]: line.split()[1:] for line in status.out.splitlines() if line.strip()}
    assert table["queue"][-1] == "state"
    assert table["db"] == ["1", "0", "0", "0", "paused"]
    assert {q["queue"]: q["paused"] for q in run("status", "--json").json()["queues"]} == {
        "db": True,
        "reports": True,
    }

    resumed = run("queues", "resume", "db", "reports")
    assert resumed.code == 0, resumed
    assert [q["paused"] for q in run("queues", "--json").json()] == [False]
    assert "state" not in run("status").out  # no column while nothing is paused


def test_pause_needs_a_queue(run: Run) -> None:
    """`queues pause` without a name is a usage error."""
    result = run("queues", "pause")
    assert result.code == 2
    assert "QUEUE" in result.err
