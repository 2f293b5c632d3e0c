"""`jobchain submit --delay DURATION | --at ISO8601` on SQLite: the job waits, bad input is one line."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

Run = Callable[..., Any]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jobchain_sqlite") is None, reason="jobchain-sqlite is not installed"
)


def test_delay_and_at_make_the_job_wait(sqlite_run: Run) -> None:
    """--delay 5m and --at (a future time) store delayed jobs, not ready ones."""
    assert sqlite_run("submit", "ping", "--delay", "5m").code == 0
    later = sqlite_run("submit", "ping", "--at", "2999-01-01T00:00:00+00:00", "--json")
    assert later.code == 0, later
    assert later.json()["state"] == "delayed"
    listed = {q["queue"]: q for q in sqlite_run("queues", "list", "--json").json()}
    assert (listed["default"]["ready"], listed["default"]["delayed"]) == (0, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--delay", "-5s"), "must be >= 0"),
        (("--delay", "soon"), "30s, 5m"),
        (("--at", "2030-01-01T09:00:00"), "no time zone"),
        (("--delay", "5s", "--at", "2030-01-01T09:00:00Z"), "not both"),
    ],
)
def test_bad_delays_are_usage_errors(sqlite_run: Run, args: tuple[str, ...], message: str) -> None:
    """A negative or unreadable delay, a naive time, or both options: exit 2 and one line saying why."""
    result = sqlite_run("submit", "ping", *args)
    assert result.code == 2, result
    assert message in result.err
