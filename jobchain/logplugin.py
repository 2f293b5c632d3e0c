"""A plugin that turns job and chain events into structlog lines.

The library itself logs only what a user must hear about (backend trouble,
stale deliveries, hook failures). Per-job lines come from this plugin, which
the CLI registers; an application can register it too::

    app.plugins.register(JobLogger())
"""

from __future__ import annotations

from typing import Any

import structlog

from jobchain.errortext import cap
from jobchain.hookspecs import hookimpl
from jobchain.model import ChainRecord, ErrorInfo, Job

__all__ = ["JobLogger"]

logger = structlog.get_logger("jobchain.jobs")


class JobLogger:
    """Logs job and chain events; ``verbose`` adds a line per started and succeeded job.

    An error's message is logged cut to ``max_message_bytes`` UTF-8 bytes (the
    failed queue keeps it in full, up to ``App(max_error_bytes=...)``).
    """

    def __init__(self, *, verbose: bool = False, max_message_bytes: int = 4096) -> None:
        self.verbose = verbose
        self.max_message_bytes = max_message_bytes

    @hookimpl
    def jobchain_job_started(self, job: Job, worker: str, thread: str) -> None:
        if self.verbose:
            logger.debug(
                "job_started", job_id=job.id, task=job.task, attempt=job.attempt, worker=worker, thread=thread
            )

    @hookimpl
    def jobchain_job_succeeded(
        self, job: Job, result: Any, duration: float, worker: str, thread: str
    ) -> None:
        if self.verbose:
            logger.debug(
                "job_succeeded",
                job_id=job.id,
                task=job.task,
                duration=round(duration, 6),
                worker=worker,
                thread=thread,
            )

    @hookimpl
    def jobchain_job_retrying(
        self, job: Job, error: ErrorInfo, delay: float, worker: str, thread: str
    ) -> None:
        logger.info(
            "job_retrying",
            job_id=job.id,
            task=job.task,
            attempt=job.attempt,
            error=error.type,
            message=cap(error.message, self.max_message_bytes),
            delay=round(delay, 3),
            worker=worker,
            thread=thread,
        )

    @hookimpl
    def jobchain_job_failed(self, job: Job, error: ErrorInfo, worker: str, thread: str) -> None:
        logger.warning(
            "job_failed",
            job_id=job.id,
            task=job.task,
            attempt=job.attempt,
            error=error.type,
            message=cap(error.message, self.max_message_bytes),
            worker=worker,
            thread=thread,
        )

    @hookimpl
    def jobchain_chain_completed(self, chain: ChainRecord, worker: str) -> None:
        logger.info("chain_completed", chain_id=chain.id, name=chain.name, worker=worker)

    @hookimpl
    def jobchain_chain_halted(self, chain: ChainRecord, worker: str) -> None:
        logger.warning(
            "chain_halted", chain_id=chain.id, name=chain.name, chain=chain.render(), worker=worker
        )
