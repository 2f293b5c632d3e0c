"""The end-of-run report's worker incidents: pool threads that died and outcomes the backend refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobchain import App
from jobchain.cli.processes import Totals
from jobchain.cli.report import RunReport, build_report, render_report, summary_line, worker_incidents
from jobchain.memory import MemoryBackend
from jobchain.worker import SlotStats


class _Workers:
    """What the report reads of a worker (RunStats), with chosen counters."""

    def __init__(self, counters: Totals) -> None:
        self.concurrency = 2
        self.counters = counters
        self.slots = [SlotStats("worker-1", 3, 3, 0, 0, 0.3)]


def _report(threads_died: int, refused: int) -> RunReport:
    app = App(backend=MemoryBackend(), buffer=None)
    counters = Totals(done=3, threads_died=threads_died, refused=refused)
    return build_report(
        app=app,
        worker=_Workers(counters),
        handles=[],
        wall=1.0,
        iterations=3,
        jobs_total=3,
        workload="noop",
        target=None,
        interrupted=False,
    )


def test_incidents_are_shown_pluralised_only_when_there_are_some() -> None:
    assert worker_incidents(0, 0) == ""
    assert worker_incidents(1, 0) == "1 thread died"
    assert worker_incidents(0, 1) == "1 outcome refused by the backend"
    assert worker_incidents(2, 3) == "2 threads died, 3 outcomes refused by the backend"


@pytest.mark.parametrize("quiet", [False, True])
def test_the_human_report_shows_threads_died_and_refused_outcomes(
    capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    render_report(_report(2, 1), quiet=quiet)
    out = capsys.readouterr().out
    assert "2 threads died, 1 outcome refused by the backend" in out
    if not quiet:
        assert "incidents      2 threads died" in out


@pytest.mark.parametrize("quiet", [False, True])
def test_a_run_without_incidents_says_nothing_of_them(
    capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    report = _report(0, 0)
    render_report(report, quiet=quiet)
    out = capsys.readouterr().out
    assert "died" not in out
    assert "refused" not in out
    assert "incidents" not in out
    assert "died" not in summary_line(report)


def test_the_json_report_always_has_both_counters() -> None:
    assert {k: _report(0, 0).to_json()[k] for k in ("threads_died", "refused")} == {
        "threads_died": 0,
        "refused": 0,
    }
    document = json.loads(json.dumps(_report(1, 4).to_json()))
    assert (document["threads_died"], document["refused"]) == (1, 4)


def test_worker_processes_report_and_sum_both_counters() -> None:
    """``--processes``: each child's counts travel over its pipe and are summed for the report."""
    one = Totals(done=1, threads_died=1, refused=2)
    total = Totals.from_wire(one.to_wire())
    total.add(Totals(done=2, threads_died=0, refused=3))
    assert (total.done, total.threads_died, total.refused) == (3, 1, 5)


def test_jobchain_run_json_carries_both_counters(jobchain: Any) -> None:
    """A real run: the counters are in the --json document, 0 when nothing went wrong."""
    result = jobchain("run", "--workers", "2", "--iterations", "4", "--json")
    assert result.code == 0, result
    report = result.json()
    assert (report["threads_died"], report["refused"]) == (0, 0)
