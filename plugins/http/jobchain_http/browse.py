"""The gateway's browse routes: ``GET /v1/jobs`` (a page of a queue's jobs in one state), ``GET /v1/counts``.

Parameters are checked here (400 ``bad_query`` naming the parameter); the
served backend needs :class:`~jobchain.capabilities.Browse` (501 otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from jobchain.browsing import MAX_LIMIT, decode_cursor, parse_state
from jobchain.capabilities import Browse, JobPage, require
from jobchain.model import JobState
from jobchain_http.guard import HttpError
from jobchain_http.wire import dumps

if TYPE_CHECKING:
    from jobchain_http.gateway import Gateway

__all__ = ["browse", "counts", "q_queue", "q_state"]

#: the longest queue name a browse accepts
MAX_QUEUE = 1000


def _json(body: object) -> Response:
    return Response(dumps(body), media_type="application/json")


def q_queue(request: Request) -> str:
    """The one ``queue`` a browse names (default: default)."""
    queue = request.query_params.get("queue") or "default"
    if len(queue) > MAX_QUEUE:
        raise HttpError(400, "bad_query", f"query parameter 'queue' is longer than {MAX_QUEUE}", path="queue")
    return queue


def q_state(request: Request) -> JobState:
    """The ``state`` a browse names: a job state, or ``ready`` (default: queued)."""
    try:
        return parse_state(request.query_params.get("state") or "queued")
    except ValueError as exc:
        raise HttpError(400, "bad_query", str(exc), path="state") from None


async def browse(gw: Gateway, request: Request) -> Response:
    """``GET /v1/jobs?queue=&state=&task=&limit=&cursor=&order=newest|oldest``."""
    from jobchain_http.gateway import q_int

    params = request.query_params
    queue, state = q_queue(request), q_state(request)
    task = params.get("task") or None
    limit = q_int(request, "limit", 100, 1, min(gw.config.max_limit, MAX_LIMIT))
    cursor = params.get("cursor") or None
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError as exc:
            raise HttpError(400, "bad_query", str(exc), path="cursor") from None
    order = params.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise HttpError(400, "bad_query", "query parameter 'order' must be newest or oldest", path="order")
    backend = require(gw.backend, Browse)
    page: JobPage = await gw.hub.call(
        lambda: backend.browse(
            queue=queue, state=state, task=task, limit=limit, cursor=cursor, oldest_first=order == "oldest"
        )
    )
    return _json({"records": [r.to_wire() for r in page.records], "cursor": page.cursor})


async def counts(gw: Gateway, request: Request) -> Response:
    """``GET /v1/counts?queue=``: how many of the queue's jobs are in each state."""
    queue = q_queue(request)
    found = await gw.hub.call(require(gw.backend, Browse).counts, queue)
    return _json({"queue": queue, "counts": {state.value: n for state, n in found.items()}})
