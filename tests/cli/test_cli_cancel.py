"""`jobchain jobs cancel ID...` and `jobchain queues purge QUEUE` (counted, confirmed unless --yes)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from jobchain import App, Plugins
from jobchain.cli.main import cli
from jobchain.memory import MemoryBackend

Run = Callable[..., Any]

needs_sqlite = pytest.mark.skipif(
    importlib.util.find_spec("jobchain_sqlite") is None, reason="jobchain-sqlite is not installed"
)
LOAD = '[[{"id": 1, "eur": 2.5}]]'


@pytest.fixture
def run(sqlite_run: Run) -> Run:
    """`jobchain` on a SQLite file shared by every command of the test."""
    return sqlite_run


@needs_sqlite
def test_cancel_reports_each_id(run: Run) -> None:
    """A queued job is cancelled; a second cancel finds it finished; an unknown id is reported."""
    job_id = run("submit", "-c", "examples/etl.py", "load", LOAD).out.strip()
    first = run("jobs", "cancel", job_id, "nope")
    assert first.code == 0, first
    assert first.out.splitlines() == [f"cancelled (never run): {job_id}", "unknown: nope"]
    again = run("jobs", "cancel", job_id, "--json")
    assert again.json() == {"cancelled": [], "requested": [], "finished": [job_id], "unknown": []}
    assert "state      cancelled" in run("status", job_id).out


@needs_sqlite
def test_cancel_needs_an_id(run: Run) -> None:
    result = run("jobs", "cancel")
    assert result.code == 2
    assert "ID" in result.err


@needs_sqlite
def test_purge_with_yes(run: Run) -> None:
    """--yes purges without asking; the queue is empty afterwards, its jobs cancelled."""
    for _ in range(3):
        assert run("submit", "-c", "examples/etl.py", "load", LOAD).code == 0
    purged = run("queues", "purge", "db", "--yes")
    assert purged.code == 0, purged
    assert purged.out.strip() == "purged 3 jobs of queue db (recorded cancelled)"
    assert {q["queue"]: q["ready"] for q in run("queues", "--json").json()}["db"] == 0


@needs_sqlite
def test_purge_without_an_answer_purges_nothing(run: Run) -> None:
    """With no one to answer the question (stdin closed), nothing is purged."""
    assert run("submit", "-c", "examples/etl.py", "load", LOAD).code == 0
    refused = run("queues", "purge", "db")
    assert refused.code == 1
    assert "purge 1 ready or delayed job of queue db on sqlite://" in refused.err
    assert {q["queue"]: q["ready"] for q in run("queues", "--json").json()}["db"] == 1


def test_purge_shows_the_count_and_asks() -> None:
    """The count comes first; answering yes purges, an empty queue needs no question."""
    backend = MemoryBackend.from_url("memory://cli-purge")
    app = App(backend=backend, plugins=Plugins(entry_points=False))

    @app.task(queue="q")
    def noop() -> None: ...

    noop.submit()
    noop.submit()
    runner = CliRunner()
    asked = runner.invoke(cli, ["queues", "purge", "q", "-b", "memory://cli-purge"], input="y\n")
    assert asked.exit_code == 0, asked.output
    assert "purge 2 ready or delayed jobs of queue q on memory://cli-purge? [y/N]" in asked.output
    assert "purged 2 jobs of queue q" in asked.output
    empty = runner.invoke(cli, ["queues", "purge", "q", "-b", "memory://cli-purge"])
    assert empty.exit_code == 0
    assert "nothing to purge" in empty.output


@needs_sqlite
def test_cancel_by_filter_counts_then_asks(run: Run) -> None:
    """--queue/--state [--task]: the count is shown and confirmed; --yes skips the question."""
    ids = [run("submit", "-c", "examples/etl.py", "load", LOAD).out.strip() for _ in range(3)]
    refused = run("jobs", "cancel", "--queue", "db", "--state", "ready")  # stdin closed: no answer
    assert refused.code == 1, refused
    assert "cancel 3 queued jobs of queue db" in refused.err
    assert run("jobs", "counts", "--queue", "db", "--json").json()["counts"]["queued"] == 3
    done = run("jobs", "cancel", "--queue", "db", "--state", "ready", "--task", "load", "--yes", "--json")
    assert done.code == 0, done
    assert sorted(done.json()["cancelled"]) == sorted(ids)
    again = run("jobs", "cancel", "--queue", "db", "--state", "queued", "--yes")
    assert again.code == 0
    assert "nothing to cancel" in again.err


@needs_sqlite
def test_cancel_by_filter_refuses_bad_filters(run: Run) -> None:
    """Ids and a filter together, a filter without a state, or a finished state: one usage line each."""
    both = run("jobs", "cancel", "some-id", "--queue", "db", "--state", "ready")
    assert both.code == 2
    assert "not both" in both.err
    assert "needs --queue and --state" in run("jobs", "cancel", "--queue", "db").err
    finished = run("jobs", "cancel", "--queue", "db", "--state", "succeeded")
    assert finished.code == 2
    assert "only ready, delayed or running jobs can be cancelled" in finished.err
    assert "Traceback" not in finished.err
