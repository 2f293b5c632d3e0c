"""Every hook jobchain calls, and nothing else.

Implement a hook with ``@jobchain.hookimpl`` on a function of the same name in a
module that your distribution exposes through the ``jobchain`` entry-point group.
Parameters are keywords; an implementation may accept any subset of them.
Event hooks are called one implementation at a time: one that raises is logged
with its plugin's name and the others still run; their return values are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from jobchain.model import ChainRecord, ErrorInfo, Job
    from jobchain.registry import BackendRegistry

hookspec = pluggy.HookspecMarker("jobchain")
hookimpl = pluggy.HookimplMarker("jobchain")

__all__ = ["hookimpl", "hookspec"]


@hookspec
def jobchain_register_backends(registry: BackendRegistry) -> None:
    """Called once when plugins load; add one factory per URL scheme with ``registry.add()``.

    A scheme that two plugins add is an error naming both distributions.
    """


@hookspec
def jobchain_add_commands(cli: Any) -> None:
    """Called when the ``jobchain`` command starts; ``cli`` is the root :class:`click.Group`.

    Add commands or groups with ``cli.add_command(...)``.
    """


@hookspec
def jobchain_worker_started(worker: str, queues: tuple[str, ...], concurrency: int) -> None:
    """A worker registered itself and starts taking jobs."""


@hookspec
def jobchain_worker_stopped(worker: str, processed: int) -> None:
    """A worker finished or released what it held and stopped."""


@hookspec
def jobchain_job_started(job: Job, worker: str, thread: str) -> None:
    """A worker thread is about to run ``job``; called on that thread."""


@hookspec
def jobchain_job_succeeded(job: Job, result: Any, duration: float, worker: str, thread: str) -> None:
    """``job`` returned ``result`` after ``duration`` seconds; called on the thread that ran it."""


@hookspec
def jobchain_job_retrying(
    job: Job, error: ErrorInfo, delay: float, duration: float, worker: str, thread: str
) -> None:
    """``job`` failed and will run again (attempt ``job.attempt + 1``) after ``delay`` seconds."""


@hookspec
def jobchain_job_failed(job: Job, error: ErrorInfo, duration: float, worker: str, thread: str) -> None:
    """``job`` failed for good and went to the failed queue (``duration`` is 0 if it never ran)."""


@hookspec
def jobchain_job_cancelled(job: Job, duration: float, worker: str, thread: str) -> None:
    """``job`` was cancelled while this worker held it, and is recorded ``cancelled``.

    ``duration`` is how long it ran before it stopped (0 if it never started).
    """


@hookspec
def jobchain_chain_completed(chain: ChainRecord, worker: str) -> None:
    """The last step of ``chain`` completed."""


@hookspec
def jobchain_chain_halted(chain: ChainRecord, worker: str) -> None:
    """A step of ``chain`` failed for good; the later steps will not run."""


@hookspec
def jobchain_progress(
    worker: str, total: int | None, done: int, failed: int, left: int | None, rate: float
) -> None:
    """Periodic progress of a worker: jobs finished so far and, when known, how many are left.

    ``total`` and ``left`` are None unless the worker was told how many jobs to expect.
    ``rate`` is finished jobs per second since the worker started.
    """
