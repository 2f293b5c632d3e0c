"""`jobchain submit --unique-key K [--unique-for S]` across processes on SQLite."""

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


def test_a_duplicate_unique_submit_prints_the_holder(run: Run) -> None:
    """The second submit with a held key stores nothing and prints the first job's id; another key stores."""
    first = run("submit", "report", '["2026-12"]', "--unique-key", "report:2026-12", "--json")
    assert first.code == 0, first
    again = run("submit", "report", '["2026-12", "again"]', "--unique-key", "report:2026-12", "--json")
    assert again.code == 0, again
    assert again.json()["id"] == first.json()["id"]
    other = run("submit", "report", '["2027-01"]', "--unique-key", "report:2027-01")
    assert other.out.strip() != first.json()["id"]
    listed = {q["queue"]: q for q in run("queues", "list", "--json").json()}
    assert listed["default"]["ready"] == 2


def test_unique_for_holds_the_key(run: Run) -> None:
    """--unique-for: a submit within the hold answers with the holder."""
    first = run("submit", "ping", "--unique-key", "ping", "--unique-for", "3600")
    again = run("submit", "ping", "--unique-key", "ping", "--unique-for", "3600")
    assert (first.code, again.code) == (0, 0), (first, again)
    assert first.out == again.out


def test_a_chain_cannot_be_unique(run: Run) -> None:
    """A chain given --unique-key is a usage error that points at --id."""
    result = run("submit", "-c", "examples/etl.py", "etl", "[]", "--unique-key", "k")
    assert result.code == 2
    assert "--id" in result.err
