"""Plain line queues on the gateway: messages of text lines, stored as jobs of any backend.

A message is a list of lines (without their ``\\n``) stored as one job of the
reserved task ``jobchain.lines`` on the backend queue ``lines:QUEUE``, so it
gets the backend's guarantees: nothing is lost once pushed, a message leased
to a puller that dies is delivered again when its lease ends, and delivery is
FIFO (a redelivered message keeps its place). A message may carry a ``key``
(its job id): pushing the same key twice stores it once, which makes a push
safe to retry.

A line queue *exists* once a message was pushed to it: the backend lists
every queue it has seen in its stats, drained or not (``GET /v1/lines/QUEUE``
answers ``"exists"``). A memory:// gateway forgets them when it restarts, as it
forgets their messages.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobchain.capabilities import Stats, require
from jobchain.ids import new_id
from jobchain.model import Completed, Delivery, Job, Released
from jobchain_http.guard import HttpError
from jobchain_http.wire import WireError

if TYPE_CHECKING:
    from jobchain_http.gateway import Gateway

__all__ = ["LINE_TASK", "backend_queue", "line_queue", "line_routes", "message_bytes"]

LINE_TASK = "jobchain.lines"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def backend_queue(queue: str) -> str:
    """The backend queue that holds the messages of line queue ``queue``."""
    return f"lines:{queue}"


def line_queue(request: Request) -> str:
    """The line queue a request names in its path (422 for a name that cannot be one)."""
    name: str = request.path_params["queue"]
    if not _NAME.match(name):
        raise HttpError(422, "invalid", "a queue name is 1 to 100 of A-Z a-z 0-9 . _ -", path="queue")
    return name


def message_bytes(args: tuple[Any, ...] | list[Any]) -> bytes:
    """The bytes a message stands for: its lines, each with its ``\\n`` but a partial last one."""
    lines = args[0] if args and isinstance(args[0], list) else []
    data = "\n".join(str(line) for line in lines)
    if lines and not (len(args) > 1 and args[1]):
        data += "\n"
    return data.encode()


def _message(delivery: Delivery) -> dict[str, Any]:
    args = delivery.job.args
    lines = args[0] if args and isinstance(args[0], list) else []
    partial = bool(args[1]) if len(args) > 1 else False
    return {
        "id": delivery.job.id,
        "token": delivery.token,
        "lines": lines,
        "partial_last": partial,
        "lease_until": delivery.lease_until,
        "delivery_count": delivery.delivery_count,
    }


def line_routes(gw: Gateway) -> list[Route]:
    from jobchain_http.gateway import JSONBody, q_int, q_number, q_worker, read_json

    hub, config = gw.hub, gw.config

    async def push(request: Request) -> Response:
        queue = line_queue(request)
        messages = (await read_json(request, gw.bodies.lines_push))["messages"]
        gw.catalog.check_allowed(LINE_TASK, "$.messages")
        now = await hub.call(gw.backend.now)
        jobs: list[Job] = []
        for message in messages:
            key = message.get("key")
            jobs.append(
                Job(
                    id=f"line:{queue}:{key}" if key else new_id(),
                    task=LINE_TASK,
                    args=(list(message["lines"]), message.get("partial_last") is True),
                    queue=backend_queue(queue),
                    enqueued_at=now,
                )
            )
        await hub.call(gw.backend.enqueue, jobs)
        return JSONBody({"queued": len(jobs)}, status_code=201)

    async def reserve(request: Request) -> Response:
        queue = line_queue(request)
        limit = q_int(request, "limit", 100, 1, config.max_limit)
        lease = q_number(request, "lease", 30.0, 0.001, config.max_lease)
        wait = q_number(request, "wait", 0.0, 0.0, config.max_wait)
        worker = q_worker(request)
        await hub.prune()
        got: list[Delivery] = await hub.wait_call(
            gw.backend.reserve, [backend_queue(queue)], limit=limit, lease=lease, worker=worker, wait=wait
        )
        if got and await request.is_disconnected():
            await hub.call(gw.backend.settle, [Released(delivery=d) for d in got])
            got = []
        hub.track(got)
        return JSONBody({"messages": [_message(d) for d in got]})

    async def ack(request: Request) -> Response:
        queue = line_queue(request)
        body = await read_json(request, gw.bodies.lines_ack)
        release = body.get("release") is True
        deliveries = await gw.deliveries([{**r, "job_id": r["id"]} for r in body["messages"]], "$.messages")
        for i, d in enumerate(deliveries):
            if d.job.queue != backend_queue(queue):
                raise WireError(f"$.messages[{i}].id", f"message {d.job.id!r} is not in line queue {queue!r}")
        now = await hub.call(gw.backend.now)
        outcomes = [
            Released(delivery=d) if release else Completed(delivery=d, started_at=now, finished_at=now)
            for d in deliveries
        ]
        results = await hub.call(gw.backend.settle, outcomes)
        hub.forget([d.token for d in deliveries])
        return JSONBody({"acked": [r.accepted for r in results]})

    async def info(request: Request) -> Response:
        queue = line_queue(request)
        wanted = backend_queue(queue)
        found: dict[str, Any] = {"ready": 0, "delayed": 0, "in_flight": 0, "exists": False}
        for stats in await hub.call(require(gw.backend, Stats).stats):
            if stats.queue == wanted:
                found = {
                    "ready": stats.ready,
                    "delayed": stats.delayed,
                    "in_flight": stats.in_flight,
                    "exists": True,
                }
        return JSONBody({"queue": queue, **found})

    return [
        Route("/v1/lines/{queue}", push, methods=["POST"]),
        Route("/v1/lines/{queue}", info, methods=["GET"]),
        Route("/v1/lines/{queue}/reserve", reserve, methods=["POST"]),
        Route("/v1/lines/{queue}/ack", ack, methods=["POST"]),
    ]
