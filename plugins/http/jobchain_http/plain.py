"""The plain line queue, for curl: ``POST /push/QUEUE`` with a raw body, ``GET /pull/QUEUE?timeout=S``.

The same line queues as ``/v1/lines`` (see :mod:`jobchain_http.lines`), without JSON:

- ``POST /push/QUEUE`` takes the body as UTF-8 text (any content type: curl's
  ``--data-binary @file`` sends ``application/x-www-form-urlencoded``), cuts it
  at ``\\n`` into messages of at most 1,000 lines and stores them in one
  backend call: 201 ``{"queued": MESSAGES, "lines": LINES}``. With ``?id=NAME``
  the messages get ids from NAME and their byte offsets, so sending the same
  body with the same NAME again stores nothing (a retry is safe).
- ``GET /pull/QUEUE?timeout=S&limit=N`` leases up to N messages (oldest
  first), waiting up to S seconds (at most the gateway's ``--max-wait``) for
  one, and answers their lines as ``text/plain``, byte for byte as pushed; 204
  with no body when nothing came in time. The messages are acknowledged once
  the answer has been written: **at most once** — an answer lost on its way
  loses its lines. (If the gateway dies between writing and acknowledging, the
  lease ends and they are delivered again.) For every line, use
  ``/v1/lines/QUEUE/reserve`` then ``ack``, or ``jobchain http pull``.

Both need the gateway's token, as every route but ``/openapi.json`` and ``/v1/health`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobchain.ids import new_id
from jobchain.model import Completed, Delivery, Job, Released
from jobchain_http.guard import HttpError
from jobchain_http.lines import LINE_TASK, backend_queue, line_queue, message_bytes
from jobchain_http.transfer import PUSH_ID, cut_messages, message_key, split_lines

if TYPE_CHECKING:
    from jobchain_http.gateway import Gateway

__all__ = ["PLAIN_LEASE", "plain_routes"]

#: how long a pulled message is leased while its answer is written (it is acknowledged right after)
PLAIN_LEASE = 30.0


def plain_routes(gw: Gateway) -> list[Route]:
    from jobchain_http.gateway import JSONBody, q_int, q_number

    hub, config = gw.hub, gw.config

    async def push(request: Request) -> Response:
        queue = line_queue(request)
        push_id = request.query_params.get("id")
        if push_id is not None and not PUSH_ID.match(push_id):
            raise HttpError(
                400, "bad_query", "query parameter 'id' must be 1 to 64 of A-Z a-z 0-9 _ -", path="id"
            )
        raw = await request.body()
        try:
            lines, partial = split_lines(raw)
        except UnicodeDecodeError as exc:
            raise HttpError(400, "not_text", f"the body is not UTF-8 text (byte {exc.start})") from None
        gw.catalog.check_allowed(LINE_TASK, "$")
        now = await hub.call(gw.backend.now)
        jobs: list[Job] = []
        for cut in cut_messages(lines, partial):
            key = None if push_id is None else message_key(push_id, cut)
            jobs.append(
                Job(
                    id=f"line:{queue}:{key}" if key else new_id(),
                    task=LINE_TASK,
                    args=(cut[2], cut[3]),
                    queue=backend_queue(queue),
                    enqueued_at=now,
                )
            )
        if jobs:
            await hub.call(gw.backend.enqueue, jobs)
        return JSONBody({"queued": len(jobs), "lines": len(lines)}, status_code=201)

    async def pull(request: Request) -> Response:
        queue = line_queue(request)
        timeout = q_number(request, "timeout", 0.0, 0.0, config.max_wait)
        limit = q_int(request, "limit", 100, 1, config.max_limit)
        await hub.prune()
        got: list[Delivery] = await hub.wait_call(
            gw.backend.reserve,
            [backend_queue(queue)],
            limit=limit,
            lease=PLAIN_LEASE,
            worker="plain-pull",
            wait=timeout,
        )
        if got and await request.is_disconnected():
            await hub.call(gw.backend.settle, [Released(delivery=d) for d in got])
            got = []
        if not got:
            return Response(status_code=204)
        body = b"".join(message_bytes(d.job.args) for d in got)

        async def acknowledge() -> None:
            now = await hub.call(gw.backend.now)
            done = [Completed(delivery=d, started_at=now, finished_at=now) for d in got]
            await hub.call(gw.backend.settle, done)

        headers = {"x-jobchain-messages": str(len(got))}
        return Response(
            body, 200, headers=headers, media_type="text/plain", background=BackgroundTask(acknowledge)
        )

    return [
        Route("/push/{queue}", push, methods=["POST"]),
        Route("/pull/{queue}", pull, methods=["GET"]),
    ]
