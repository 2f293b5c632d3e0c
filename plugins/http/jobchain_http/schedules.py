"""Schedules over HTTP: the gateway's routes for :class:`jobchain.capabilities.ScheduleSlots`.

``GET /v1/schedules?name=a&name=b`` answers ``{"schedules": [...]}``, each
schedule's state in the order asked (never seen: no slot, not paused);
``POST /v1/schedules/mark`` ``{"schedule", "slot", "job_id"}`` records a
slot's job (the backend keeps it only if the slot is later than the one it
holds); ``POST /v1/schedules/pause`` and ``/resume`` ``{"name": ...}`` flip
the paused flag. Each POST answers the schedule's state afterwards. A
backend without ScheduleSlots answers 501 ``not_supported``. Schedulers call
these once per tick, never on the job path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobchain.capabilities import ScheduleSlots, require
from jobchain_http import schema
from jobchain_http.guard import HttpError

if TYPE_CHECKING:
    from jobchain_http.gateway import Gateway

__all__ = ["MAX_NAMES", "schedule_routes"]

#: the most schedules one ``GET /v1/schedules`` names
MAX_NAMES = 100
#: the longest schedule name
MAX_NAME = 200


def _names(request: Request) -> list[str]:
    names = request.query_params.getlist("name")
    if len(names) > MAX_NAMES:
        raise HttpError(400, "bad_query", f"at most {MAX_NAMES} names", path="name")
    for name in names:
        if not 1 <= len(name) <= MAX_NAME:
            raise HttpError(
                400, "bad_query", f"query parameter 'name' must be 1 to {MAX_NAME} characters", path="name"
            )
    return names


def _state(slots: ScheduleSlots, name: str) -> dict[str, object]:
    [state] = slots.schedule_states([name])
    return state.to_wire()


def _mark(slots: ScheduleSlots, schedule: str, slot: float, job_id: str) -> dict[str, object]:
    slots.mark_slot(schedule, slot, job_id)
    return _state(slots, schedule)


def _flip(slots: ScheduleSlots, name: str, pause: bool) -> dict[str, object]:
    (slots.pause_schedule if pause else slots.resume_schedule)(name)
    return _state(slots, name)


def schedule_routes(gw: Gateway) -> list[Route]:
    from jobchain_http.gateway import JSONBody, read_json

    hub = gw.hub

    def slots() -> ScheduleSlots:
        return require(gw.backend, ScheduleSlots)

    async def states(request: Request) -> Response:
        names, held = _names(request), slots()
        found = await hub.call(held.schedule_states, names)
        return JSONBody({"schedules": [state.to_wire() for state in found]})

    async def mark(request: Request) -> Response:
        held = slots()
        body = await read_json(request, schema.ScheduleMark)
        return JSONBody(await hub.call(_mark, held, body["schedule"], float(body["slot"]), body["job_id"]))

    async def pause(request: Request) -> Response:
        held = slots()
        name: str = (await read_json(request, schema.ScheduleRef))["name"]
        return JSONBody(await hub.call(_flip, held, name, True))

    async def resume(request: Request) -> Response:
        held = slots()
        name: str = (await read_json(request, schema.ScheduleRef))["name"]
        return JSONBody(await hub.call(_flip, held, name, False))

    return [
        Route("/v1/schedules", states, methods=["GET"]),
        Route("/v1/schedules/mark", mark, methods=["POST"]),
        Route("/v1/schedules/pause", pause, methods=["POST"]),
        Route("/v1/schedules/resume", resume, methods=["POST"]),
    ]
