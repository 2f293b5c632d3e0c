"""Cancelling over HTTP: the gateway's routes for :class:`jobchain.capabilities.Cancel`.

``POST /v1/jobs/cancel`` ``{"ids": [...]}`` answers the report (cancelled,
requested, finished, unknown); ``POST /v1/jobs/cancel-requested``
``{"ids": [...]}`` answers which of the jobs a worker holds were asked to stop
(its monitor's poll); ``POST /v1/queues/purge`` ``{"queue": "q"}`` answers
``{"purged": n}``. A backend without Cancel answers 501 ``not_supported``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobchain.capabilities import Cancel, require

if TYPE_CHECKING:
    from jobchain_http.gateway import Gateway

__all__ = ["cancel_routes"]


def cancel_routes(gw: Gateway) -> list[Route]:
    from jobchain_http.gateway import JSONBody, read_json

    hub = gw.hub

    async def cancel(request: Request) -> Response:
        ids: list[str] = (await read_json(request, gw.bodies.cancel))["ids"]
        report = await hub.call(require(gw.backend, Cancel).cancel, ids)
        return JSONBody(report.to_wire())

    async def requested(request: Request) -> Response:
        ids: list[str] = (await read_json(request, gw.bodies.cancel))["ids"]
        return JSONBody({"ids": await hub.call(require(gw.backend, Cancel).cancel_requested, ids)})

    async def purge(request: Request) -> Response:
        queue: str = (await read_json(request, gw.bodies.queue_purge))["queue"]
        return JSONBody({"purged": await hub.call(require(gw.backend, Cancel).purge, queue)})

    return [
        Route("/v1/jobs/cancel", cancel, methods=["POST"]),
        Route("/v1/jobs/cancel-requested", requested, methods=["POST"]),
        Route("/v1/queues/purge", purge, methods=["POST"]),
    ]
