"""The closing report of ``jobchain run``: gathered from the worker and the job records.

:func:`build_report` reads the worker's per-thread stats and counters and,
once the run is over, the records of the jobs and chains it submitted
(latency is ``finished_at - enqueued_at`` of every succeeded job).
:meth:`RunReport.to_json` is the ``--json`` document; :func:`render_report`
prints it for people, with rich on a terminal and plain text otherwise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import click
from attrs import define, field
from rich.markup import escape

from jobchain.app import App
from jobchain.cli.output import Column, console, fmt_seconds, is_tty, plural, print_table, state_style
from jobchain.handles import ChainHandle, JobHandle
from jobchain.model import ChainRecord, ChainState, JobRecord, JobState, StepState
from jobchain.worker import SlotStats

__all__ = [
    "RunReport",
    "RunStats",
    "WorkerRow",
    "build_report",
    "percentile",
    "render_report",
    "summary_line",
    "worker_incidents",
]

#: chain states the summary line leaves out when no chain is in them
_QUIET_CHAIN_STATES = (ChainState.PENDING.value, ChainState.RUNNING.value)


class _Counts(Protocol):
    @property
    def done(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def retried(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def threads_died(self) -> int: ...
    @property
    def refused(self) -> int: ...


class RunStats(Protocol):
    """What the report reads of the workers: a :class:`jobchain.Worker`, or the sum of several processes."""

    @property
    def concurrency(self) -> int: ...
    @property
    def counters(self) -> _Counts: ...
    @property
    def slots(self) -> Sequence[SlotStats]: ...


def _loop_row(worker: RunStats) -> list[SlotStats]:
    """The row of a worker's event loop (its coroutine jobs), if it ran any."""
    loop: SlotStats | None = getattr(worker, "async_slot", None)
    return [loop] if loop is not None and loop.jobs else []


@define
class WorkerRow:
    worker: str
    jobs: int
    succeeded: int
    retries: int
    failures: int
    busy_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "jobs": self.jobs,
            "succeeded": self.succeeded,
            "retries": self.retries,
            "failures": self.failures,
            "busy_seconds": round(self.busy_seconds, 6),
        }


@define
class RunReport:
    backend: str
    workers: int
    iterations: int
    workload: str
    target: str | None
    jobs_total: int
    jobs_succeeded: int
    jobs_failed: int
    jobs_not_executed: int
    retries: int
    wall_seconds: float
    latency_ms: dict[str, float | None]
    per_worker: list[WorkerRow]
    chains: dict[str, int]
    failed_queue: int
    errors: dict[str, int]
    interrupted: bool = False
    settings: dict[str, Any] = field(factory=dict)
    chain_latency_ms: dict[str, float | None] | None = None
    ideal_seconds: float | None = None
    example_chains: list[ChainRecord] = field(factory=list)
    processes: int = 1
    #: pool threads that died (a bug in the worker) and were replaced
    threads_died: int = 0
    #: outcomes the backend refused (not an outage): settled as failures, or left for lease expiry
    refused: int = 0

    @property
    def jobs_finished(self) -> int:
        return self.jobs_succeeded + self.jobs_failed

    @property
    def jobs_left(self) -> int:
        """Jobs that never reached a final state (the run was interrupted)."""
        return max(0, self.jobs_total - self.jobs_finished - self.jobs_not_executed)

    @property
    def throughput(self) -> float:
        return self.jobs_finished / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def busy_seconds(self) -> float:
        return sum(w.busy_seconds for w in self.per_worker)

    @property
    def utilization(self) -> float:
        capacity = self.workers * self.wall_seconds
        return self.busy_seconds / capacity if capacity > 0 else 0.0

    @property
    def efficiency(self) -> float | None:
        if self.ideal_seconds is None or self.wall_seconds <= 0 or self.interrupted:
            return None
        return self.ideal_seconds / self.wall_seconds

    def to_json(self) -> dict[str, Any]:
        efficiency = self.efficiency
        return {
            "backend": self.backend,
            "workers": self.workers,
            "processes": self.processes,
            "iterations": self.iterations,
            "workload": self.workload,
            "target": self.target,
            **self.settings,
            "interrupted": self.interrupted,
            "jobs_total": self.jobs_total,
            "jobs_succeeded": self.jobs_succeeded,
            "jobs_failed": self.jobs_failed,
            "jobs_not_executed": self.jobs_not_executed,
            "jobs_left": self.jobs_left,
            "retries": self.retries,
            "threads_died": self.threads_died,
            "refused": self.refused,
            "runs": sum(w.jobs for w in self.per_worker),
            "wall_seconds": round(self.wall_seconds, 6),
            "throughput_per_s": round(self.throughput, 3),
            "ideal_seconds": None if self.ideal_seconds is None else round(self.ideal_seconds, 6),
            "efficiency": None if efficiency is None else round(efficiency, 5),
            "utilization": round(self.utilization, 5),
            "latency_ms": self.latency_ms,
            "chain_latency_ms": self.chain_latency_ms,
            "per_worker": [w.to_json() for w in self.per_worker],
            "chains": self.chains,
            "failed_queue": self.failed_queue,
            "errors": self.errors,
            "example_chains": [
                {"id": c.id, "name": c.name, "state": c.state.value, "rendered": c.render()}
                for c in self.example_chains
            ],
        }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of sorted values, interpolating between ranks."""
    if not sorted_values:
        return None
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _latency(seconds: list[float]) -> dict[str, float | None]:
    values = sorted(s * 1000.0 for s in seconds)

    def pick(q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value, 3)

    return {
        "p50": pick(50),
        "p95": pick(95),
        "p99": pick(99),
        "mean": round(sum(values) / len(values), 3) if values else None,
        "max": round(values[-1], 3) if values else None,
        "count": len(values),
    }


def _examples(records: list[ChainRecord], count: int) -> list[ChainRecord]:
    failed = [r for r in records if r.state is ChainState.FAILED]
    succeeded = [r for r in records if r.state is ChainState.SUCCEEDED]
    unfinished = [r for r in records if not r.finished]
    picked = failed[: (count + 1) // 2]
    picked += succeeded[: count - len(picked)]
    chosen = {r.id for r in picked}
    picked += [r for r in failed + unfinished if r.id not in chosen][: count - len(picked)]
    return picked


def build_report(
    *,
    app: App,
    worker: RunStats,
    handles: Sequence[JobHandle | ChainHandle],
    wall: float,
    iterations: int,
    jobs_total: int,
    workload: str,
    target: str | None,
    interrupted: bool,
    examples: int = 5,
    ideal_seconds: float | None = None,
    settings: dict[str, Any] | None = None,
    processes: int = 1,
) -> RunReport:
    backend = app.backend
    latencies: list[float] = []
    chain_latencies: list[float] = []
    records: list[ChainRecord] = []
    errors: Counter[str] = Counter()

    def account(record: JobRecord | None) -> None:
        if record is None:
            return
        if record.state is JobState.SUCCEEDED and record.finished_at is not None:
            latencies.append(record.finished_at - record.job.enqueued_at)
        elif record.state is JobState.FAILED and record.error is not None:
            errors[record.error.type] += 1

    for handle in handles:
        if isinstance(handle, JobHandle):
            account(backend.get_job(handle.id))
            continue
        chain = backend.get_chain(handle.id)
        if chain is None:
            continue
        records.append(chain)
        if chain.finished and chain.finished_at is not None:
            chain_latencies.append(chain.finished_at - chain.created_at)
        for step in chain.steps:
            for member in step.members:
                if member.state in (StepState.SUCCEEDED, StepState.FAILED):
                    account(backend.get_job(member.job_id))

    chains: dict[str, int] = {}
    if records:
        counts = Counter(r.state.value for r in records)
        chains = {state.value: counts.get(state.value, 0) for state in ChainState}
    counters = worker.counters
    return RunReport(
        backend=app.backend_url,
        workers=worker.concurrency,
        iterations=iterations,
        workload=workload,
        target=target,
        jobs_total=jobs_total,
        jobs_succeeded=counters.done,
        jobs_failed=counters.failed,
        jobs_not_executed=counters.skipped,
        retries=counters.retried,
        wall_seconds=wall,
        latency_ms=_latency(latencies),
        chain_latency_ms=_latency(chain_latencies) if records else None,
        per_worker=[
            WorkerRow(s.name, s.jobs, s.succeeded, s.retries, s.failures, s.busy_seconds)
            for s in (*worker.slots, *_loop_row(worker))
        ],
        chains=chains,
        failed_queue=len(app.failed),
        errors=dict(errors.most_common()),
        interrupted=interrupted,
        settings=dict(settings or {}),
        ideal_seconds=ideal_seconds,
        example_chains=_examples(records, examples),
        processes=processes,
        threads_died=counters.threads_died,
        refused=counters.refused,
    )


def worker_incidents(threads_died: int, refused: int) -> str:
    """``2 threads died, 1 outcome refused by the backend``: what went wrong in the workers, "" if nothing."""
    parts = []
    if threads_died:
        parts.append(f"{plural(threads_died, 'thread')} died")
    if refused:
        parts.append(f"{plural(refused, 'outcome')} refused by the backend")
    return ", ".join(parts)


# --- rendering -----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else fmt_seconds(value / 1000.0)


def _rendered_chain(record: ChainRecord, rich: bool, named: bool) -> str:
    label = f"{record.name}: " if record.name and named else ""
    if not rich:
        return label + record.render()
    parts = []
    for step in record.steps:
        state = step.state.label
        style = state_style(state) or "default"
        parts.append(f"{escape(step.label)} [{style}]({state})[/]")
    return escape(label) + " -> ".join(parts)


def summary_line(report: RunReport) -> str:
    lat = report.latency_ms
    incidents = worker_incidents(report.threads_died, report.refused)
    return (
        f"{plural(report.jobs_total, 'job')}: {report.jobs_succeeded} succeeded, "
        f"{report.jobs_failed} failed, "
        f"{report.jobs_not_executed} not executed, "
        + (f"{report.jobs_left} left unrun, " if report.jobs_left else "")
        + f"{plural(report.retries, 'retry')} in "
        f"{report.wall_seconds:.2f}s ({report.throughput:,.1f} jobs/s); latency p50 {_ms(lat['p50'])} "
        f"p95 {_ms(lat['p95'])} p99 {_ms(lat['p99'])}; failed queue {report.failed_queue}"
        + (f"; {incidents}" if incidents else "")
    )


def render_report(report: RunReport, *, quiet: bool = False) -> None:
    """Print the report for people on stdout."""
    if quiet:
        click.echo(summary_line(report))
        return
    rich = is_tty()
    workers = plural(report.workers, "worker")
    if report.processes > 1:
        workers += f" in {plural(report.processes, 'process')}"
    title = f"jobchain run: {report.workload} · {workers} · {report.backend}"
    if report.interrupted:
        title += " · INTERRUPTED"
    rows = []
    for w in report.per_worker:
        share = w.busy_seconds / report.wall_seconds if report.wall_seconds > 0 else 0.0
        rows.append(
            [w.worker, w.jobs, w.succeeded, w.retries, w.failures, f"{w.busy_seconds:.3f}", f"{share:.1%}"]
        )
    total = [
        "total",
        sum(w.jobs for w in report.per_worker),
        report.jobs_succeeded,
        report.retries,
        report.jobs_failed,
        f"{report.busy_seconds:.3f}",
        f"{report.utilization:.1%}",
    ]
    if not rich:
        click.echo(title)
        click.echo()
    else:
        console().print(f"[bold]{escape(title)}[/]")
    print_table(
        [
            Column("worker"),
            Column("jobs", "right"),
            Column("succeeded", "right"),
            Column("retries", "right"),
            Column("failures", "right"),
            Column("busy s", "right"),
            Column("busy %", "right"),
        ],
        rows,
        footer=total,
    )
    lines = _summary_lines(report)
    # label examples with their chain's name only when the names tell them apart
    named = len({r.name for r in report.example_chains}) > 1
    if rich:
        out = console()
        for label, text in lines:
            out.print(f"[bold]{label:<15}[/]{text}")
        if report.example_chains:
            out.print("[bold]example chains[/]")
            for record in report.example_chains:
                out.print("  " + _rendered_chain(record, True, named))
        return
    click.echo()
    for label, text in lines:
        click.echo(f"{label:<15}{_plain(text)}")
    if report.example_chains:
        click.echo("example chains")
        for record in report.example_chains:
            click.echo("  " + _rendered_chain(record, False, named))


def _plain(text: str) -> str:
    from rich.text import Text

    return Text.from_markup(text).plain


def _summary_lines(report: RunReport) -> list[tuple[str, str]]:
    lat = report.latency_ms
    wall = f"{fmt_seconds(report.wall_seconds)}"
    efficiency = report.efficiency
    if efficiency is not None and report.ideal_seconds is not None:
        wall += f" (ideal {fmt_seconds(report.ideal_seconds)}, efficiency {efficiency:.1%})"
    lines = [
        ("wall time", wall),
        ("throughput", f"{report.throughput:,.1f} jobs/s"),
        (
            "latency",
            f"p50 {_ms(lat['p50'])} · p95 {_ms(lat['p95'])} · p99 {_ms(lat['p99'])} "
            f"(enqueue → completion, {plural(int(lat['count'] or 0), 'job')})",
        ),
        (
            "jobs",
            f"{report.jobs_total} total: [green]{report.jobs_succeeded} succeeded[/], "
            f"[red]{report.jobs_failed} failed[/], {report.jobs_not_executed} not executed"
            + (f", [yellow]{report.jobs_left} left unrun[/]" if report.jobs_left else "")
            + f"; {plural(report.retries, 'retry')}",
        ),
    ]
    if report.chains:
        chains = report.chains.items()
        parts = [f"{count} {state}" for state, count in chains if count or state not in _QUIET_CHAIN_STATES]
        lines.append(("chains", ", ".join(parts)))
    incidents = worker_incidents(report.threads_died, report.refused)
    if incidents:
        lines.append(("incidents", f"[red]{incidents}[/]"))
    failed = f"{report.failed_queue}"
    if report.errors:
        failed += " (" + ", ".join(f"{n} {t}" for t, n in report.errors.items()) + ")"
    if report.failed_queue:
        failed += " · see: jobchain failed list" if not report.backend.startswith("memory") else ""
    lines.append(("failed queue", failed))
    return lines
