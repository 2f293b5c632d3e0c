"""``jobchain submit``: enqueue a task, chain or group of a config; ``--wait`` for its result.

Without ``--wait`` it prints the id alone, for scripts (``ID=$(jobchain submit ...)``).
On ``memory://`` nothing outside this process could ever run the job, so it
runs here, on a short-lived worker, and the command waits for it.
"""

from __future__ import annotations

import contextlib
import shlex
from datetime import datetime
from typing import Any, TextIO

import click

from jobchain.app import App
from jobchain.canvas import Chain, Group, Signature
from jobchain.capabilities import WorkerRegistry, supports
from jobchain.cli.common import (
    EXIT_TIMEOUT,
    CliError,
    backend_option,
    config_option,
    is_private_backend,
    json_option,
    open_app,
    parse_args_json,
    setup_logging,
)
from jobchain.cli.config import find_target
from jobchain.cli.output import echo_json, printable
from jobchain.delays import parse_duration, parse_instant
from jobchain.errors import JobFailedError, SubmitsNotStoredError, WaitTimeoutError
from jobchain.handles import ChainHandle, JobHandle
from jobchain.model import ChainRecord, JobRecord, JobState

__all__ = ["by_name", "submit"]


def by_name(app: App, name: str, queue: str) -> Any:
    """A stand-in for task ``name`` (no --config): the job is stored under the name, on ``queue``.

    The stand-in takes any arguments; the worker that declares the task checks
    them when it runs the job.
    """

    def stand_in(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"task {name!r} runs on a worker that declares it")  # pragma: no cover

    return app.task(name=name, queue=queue)(stand_in)


@click.command()
@config_option(
    help="Python file or dotted module that defines the App (FILE_OR_MODULE[:APP]); "
    "without it TARGET is a task name, run by the worker that has the task."
)
@backend_option
@click.argument("target")
@click.argument("args_json", required=False, metavar="[ARGS_JSON]")
@click.option(
    "--args-file",
    type=click.File("r", encoding="utf-8"),
    metavar="PATH|-",
    help="Read ARGS_JSON from PATH, or from stdin with '-' (no limit on its size).",
)
@click.option(
    "--queue",
    "-q",
    metavar="QUEUE",
    help="Without --config: the queue to submit to (default: default).",
)
@click.option("--wait", "-w", is_flag=True, help="Wait for the result and print it (or the error).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Give up waiting after SECONDS (exit code 124).",
)
@click.option(
    "--store-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="While the backend cannot be reached, keep trying to store the submit this long, then fail.",
)
@click.option(
    "--id",
    "submit_id",
    metavar="ID",
    help="The job's id (the chain's, for a chain or group) instead of a fresh one; "
    "when it exists already nothing is stored and its id is printed.",
)
@click.option(
    "--unique-key",
    metavar="KEY",
    help="Submit the task only if no job of its queue holds KEY (until it finishes); "
    "otherwise nothing is stored and the holder's id is printed.",
)
@click.option(
    "--unique-for",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Hold the key SECONDS from now instead of until the job finishes.",
)
@click.option(
    "--delay",
    "countdown",
    callback=lambda _ctx, _param, value: _duration(value),
    metavar="DURATION",
    help="Run no sooner than DURATION from now: 30s, 5m, 1h30m, 250ms or plain seconds.",
)
@click.option(
    "--at",
    "eta",
    callback=lambda _ctx, _param, value: _instant(value),
    metavar="ISO8601",
    help="Run no sooner than this time, with its offset: 2026-05-01T09:00:00+02:00 or ...Z.",
)
@json_option
@click.pass_context
def submit(
    ctx: click.Context,
    config: str | None,
    backend: str | None,
    target: str,
    args_json: str | None,
    args_file: TextIO | None,
    queue: str | None,
    wait: bool,
    timeout: float | None,
    store_timeout: float,
    submit_id: str | None,
    unique_key: str | None,
    unique_for: float | None,
    countdown: float | None,
    eta: datetime | None,
    as_json: bool,
) -> None:
    """Enqueue TARGET (a task, chain or group of --config) and print its id.

    ARGS_JSON: a JSON array (positional arguments), an object (keywords) or
    one value, e.g. '["https://example.com"]' or '{"n": 3}'.

    --id ID submits under that id (printable, no spaces or '/', at most 200
    characters); submitting an id that exists stores nothing.

    --unique-key KEY submits a task only if no job of its queue holds KEY:
    otherwise nothing is stored and the id printed is the holder's (a task
    declared with unique= derives its key without it).

    --delay 5m or --at 2026-05-01T09:00:00+02:00 makes the job (a chain's
    first step) wait until then, judged on the backend's clock.
    """
    setup_logging(ctx)
    if countdown is not None and eta is not None:
        raise click.UsageError("give --delay or --at, not both")
    if args_file is not None:
        if args_json is not None:
            raise click.UsageError("give the arguments either as ARGS_JSON or with --args-file, not both")
        args_json = args_file.read()
    args, kwargs = parse_args_json(args_json)
    opened = open_app(config, backend)
    app = opened.app
    if opened.loaded is not None:
        if queue is not None:
            raise click.UsageError("--queue is for submitting by task name without --config")
        found: Any = find_target(opened.loaded, target)
    elif is_private_backend(app):
        raise CliError(
            f"no --config: nothing on {app.backend_url} could run task {target!r}",
            hint="give --config to run it here, or --backend for a shared backend a worker serves",
        )
    else:
        found = by_name(app, target, queue or "default")
    if unique_key is not None or unique_for is not None:
        found = _unique_target(found, unique_key, unique_for)
    handle: JobHandle | ChainHandle
    if countdown is not None or eta is not None:
        handle = app.submit_later(found, args, kwargs, countdown=countdown, eta=eta, submit_id=submit_id)
    elif submit_id is None:
        handle = app.submit(found, *args, **kwargs)
    else:
        handle = app.submit_as(submit_id, found, *args, **kwargs)
    kind = "chain" if isinstance(handle, ChainHandle) else "job"
    if handle.buffered:  # the backend could not be reached: the App holds the submit in its buffer
        try:
            handle.wait_stored(store_timeout)
        except (WaitTimeoutError, SubmitsNotStoredError):
            with contextlib.suppress(SubmitsNotStoredError):
                app.close(timeout=0)
            raise CliError(
                f"{kind} {handle.id} was not stored: {app.backend_url} could not be reached "
                f"for {store_timeout:g}s",
                hint="is the server running? --store-timeout waits longer",
            ) from None
    if not wait and not is_private_backend(app):
        if as_json:
            echo_json({"id": handle.id, "kind": kind, "target": target, "state": handle.status()})
        else:
            click.echo(handle.id)
        return
    if is_private_backend(app):
        click.echo(f"note: {app.backend_url} lives in this process, so the job runs here", err=True)
        with app.worker(concurrency=4, poll=0.05, name=f"submit-{handle.id[-8:]}"):
            _wait_and_show(app, handle, kind, target, timeout, as_json, config)
    else:
        _wait_and_show(app, handle, kind, target, timeout, as_json, config)


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--delay") from None


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None


def _unique_target(found: Any, unique_key: str | None, unique_for: float | None) -> Signature:
    """The task of ``found`` with its uniqueness options; a chain or group cannot be unique."""
    if isinstance(found, Chain | Group):
        raise click.UsageError("--unique-key and --unique-for apply to a task; a chain or group takes --id")
    sig = found if isinstance(found, Signature) else Signature(task=found)
    return sig.set(unique_key=unique_key, unique_for=unique_for)


def _status_command(app: App, job_id: str, config: str | None) -> str:
    """The ``jobchain status`` line that finds this job again: same backend (password hidden), same config."""
    words = ["jobchain", "status", job_id, "--backend", app.backend_url]
    if config is not None:
        words += ["--config", config]
    return shlex.join(words)


def _wait_and_show(
    app: App,
    handle: JobHandle | ChainHandle,
    kind: str,
    target: str,
    timeout: float | None,
    as_json: bool,
    config: str | None,
) -> None:
    error: CliError | None = None
    result: Any = None
    try:
        result = _wait_noting_no_worker(app, handle, timeout)
    except WaitTimeoutError as exc:
        error = CliError(str(exc), exit_code=EXIT_TIMEOUT)
    except JobFailedError as exc:
        error = CliError(str(exc), hint=f"details: {_status_command(app, handle.id, config)}")
    record = handle.record()
    if as_json:
        echo_json(_as_json(handle, kind, target, record, result, error))
    else:
        click.echo(f"{kind} {handle.id} ({target}): {handle.status()}")
        if isinstance(record, ChainRecord):
            click.echo(record.render())
        if error is None:
            click.echo(f"result: {_dumps(result)}")
    if error is not None:
        raise error


#: seconds ``submit --wait`` waits before it looks for a live worker serving the job's queue
NO_WORKER_AFTER = 2.0


def _wait_noting_no_worker(app: App, handle: JobHandle | ChainHandle, timeout: float | None) -> Any:
    """``handle.wait(timeout)``; after a short wait with the job still queued, say (once, on stderr)
    when no live worker consumes its queue: it would otherwise wait in silence forever."""
    if is_private_backend(app) or not supports(app.backend, WorkerRegistry):
        return handle.wait(timeout)
    if timeout is not None and timeout <= NO_WORKER_AFTER:
        return handle.wait(timeout)
    try:
        return handle.wait(NO_WORKER_AFTER)
    except WaitTimeoutError:
        pass
    queue = _queued_on(app, handle)
    if queue is not None and not any(queue in w.queues for w in app.workers()):
        click.echo(
            f"note: no live worker consumes queue {printable(queue)} on {app.backend_url}; "
            "the job waits until one does (jobchain worker --queues ...)",
            err=True,
        )
    return handle.wait(None if timeout is None else timeout - NO_WORKER_AFTER)


def _queued_on(app: App, handle: JobHandle | ChainHandle) -> str | None:
    """The queue of the job (the chain's first unfinished job) if it is still waiting to run."""
    job_id = handle.id
    if isinstance(handle, ChainHandle):
        record = handle.record()
        waiting = [m.job_id for step in (record.steps if record else ()) for m in step.members]
        if not waiting:
            return None
        job_id = waiting[0]
        for member_id in waiting:
            found = app.backend.get_job(member_id)
            if found is not None and found.state in (JobState.QUEUED, JobState.DELAYED):
                job_id = member_id
                break
    found = app.backend.get_job(job_id)
    if found is None or found.state not in (JobState.QUEUED, JobState.DELAYED):
        return None
    return found.job.queue


def _as_json(
    handle: JobHandle | ChainHandle,
    kind: str,
    target: str,
    record: JobRecord | ChainRecord | None,
    result: Any,
    error: CliError | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": handle.id,
        "kind": kind,
        "target": target,
        "state": handle.status(),
        "result": result if error is None else None,
        "error": None if error is None else error.format_message(),
    }
    if isinstance(record, ChainRecord):
        out["rendered"] = record.render()
    return out


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)
