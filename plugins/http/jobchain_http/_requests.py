"""The paths and bodies of the requests both the synchronous and the asyncio clients send."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from jobchain.model import ChainRecord, Job

__all__ = ["chain_path", "enqueue_body", "job_path"]


def enqueue_body(jobs: Sequence[Job], chains: Sequence[ChainRecord]) -> dict[str, Any]:
    """The body of ``POST /v1/enqueue``."""
    return {"jobs": [j.to_wire() for j in jobs], "chains": [c.to_wire() for c in chains]}


def job_path(job_id: str) -> str:
    """``GET`` it for a job's record."""
    return f"/v1/jobs/{quote(job_id, safe='')}"


def chain_path(chain_id: str) -> str:
    """``GET`` it for a chain's record."""
    return f"/v1/chains/{quote(chain_id, safe='')}"
