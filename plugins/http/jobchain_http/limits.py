"""Rate and concurrency limits over HTTP: the gateway's routes and the client's side.

``POST /v1/limits/take`` ``{"key", "windows": [[tokens, seconds]], "count", "max_wait"}``
answers ``{"wait": s}`` (:meth:`~jobchain.capabilities.RateLimits.take_tokens`);
``POST /v1/limits/slots/acquire`` ``{"key", "limit", "holder", "ttl"}`` answers
``{"acquired": bool}``; ``POST /v1/limits/slots/extend`` ``{"slots": [[key, holder]], "ttl"}``
answers ``{"kept": [bool]}``; ``POST /v1/limits/slots/release`` ``{"key", "holder"}``
answers ``{"released": true}``; ``GET /v1/limits/slots?key=K`` answers ``{"held": n}``.
Each is one call of the gateway's backend, so the limits are its backend's:
shared with every worker of it. A backend without the capability answers 501.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobchain.capabilities import ConcurrencyLimits, RateLimits, require
from jobchain.limits import Window
from jobchain_http import schema
from jobchain_http.guard import HttpError

if TYPE_CHECKING:
    from jobchain_http.gateway import Gateway

__all__ = ["HttpLimits", "limit_routes"]


def limit_routes(gw: Gateway) -> list[Route]:
    from jobchain_http.gateway import JSONBody, read_json

    hub = gw.hub

    async def take(request: Request) -> Response:
        body = await read_json(request, schema.TakeTokensRequest)
        windows = [(int(t), float(s)) for t, s in body["windows"]]
        rates = require(gw.backend, RateLimits)
        try:
            wait = await hub.call(
                rates.take_tokens,
                body["key"],
                windows,
                body.get("count", 1),
                max_wait=body.get("max_wait", 0.0),
            )
        except ValueError as exc:  # more tokens than a window holds
            raise HttpError(422, "invalid_body", str(exc), path="$.count") from None
        return JSONBody({"wait": wait})

    async def acquire(request: Request) -> Response:
        body = await read_json(request, schema.AcquireSlotRequest)
        slots = require(gw.backend, ConcurrencyLimits)
        ok = await hub.call(slots.acquire_slot, body["key"], body["limit"], body["holder"], body["ttl"])
        return JSONBody({"acquired": ok})

    async def extend(request: Request) -> Response:
        body = await read_json(request, schema.ExtendSlotsRequest)
        pairs = [(str(k), str(h)) for k, h in body["slots"]]
        kept = await hub.call(require(gw.backend, ConcurrencyLimits).extend_slots, pairs, body["ttl"])
        return JSONBody({"kept": kept})

    async def release(request: Request) -> Response:
        body = await read_json(request, schema.SlotRequest)
        await hub.call(require(gw.backend, ConcurrencyLimits).release_slot, body["key"], body["holder"])
        return JSONBody({"released": True})

    async def held(request: Request) -> Response:
        key = request.query_params.get("key", "")
        return JSONBody({"held": await hub.call(require(gw.backend, ConcurrencyLimits).slots_held, key)})

    return [
        Route("/v1/limits/take", take, methods=["POST"]),
        Route("/v1/limits/slots/acquire", acquire, methods=["POST"]),
        Route("/v1/limits/slots/extend", extend, methods=["POST"]),
        Route("/v1/limits/slots/release", release, methods=["POST"]),
        Route("/v1/limits/slots", held, methods=["GET"]),
    ]


class HttpLimits(RateLimits, ConcurrencyLimits):
    """The limits of :class:`~jobchain_http.HttpBackend`: each call one request to the gateway."""

    if TYPE_CHECKING:  # HttpBackend.request

        def request(
            self, method: str, path: str, *, body: Any = None, params: Any = None, answer: Any = None
        ) -> Any: ...

    def take_tokens(
        self, key: str, windows: Sequence[Window], count: int = 1, *, max_wait: float = 0.0
    ) -> float:
        if count < 1 or any(count > tokens for tokens, _ in windows):
            raise ValueError(f"{count} tokens can never be taken from windows {list(windows)}")
        body = {"key": key, "windows": [list(w) for w in windows], "count": count, "max_wait": max_wait}
        return float(self.request("POST", "/v1/limits/take", body=body, answer=schema.TokenWait)["wait"])

    def acquire_slot(self, key: str, limit: int, holder: str, ttl: float) -> bool:
        body = {"key": key, "limit": limit, "holder": holder, "ttl": ttl}
        answer = self.request("POST", "/v1/limits/slots/acquire", body=body, answer=schema.SlotAcquired)
        return bool(answer["acquired"])

    def extend_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> list[bool]:
        if not slots:
            return []
        body = {"slots": [list(pair) for pair in slots], "ttl": ttl}
        answer = self.request("POST", "/v1/limits/slots/extend", body=body, answer=schema.SlotsKept)
        return [bool(k) for k in answer["kept"]]

    def release_slot(self, key: str, holder: str) -> None:
        self.request("POST", "/v1/limits/slots/release", body={"key": key, "holder": holder})

    def slots_held(self, key: str) -> int:
        answer = self.request("GET", "/v1/limits/slots", params={"key": key}, answer=schema.SlotsHeld)
        return int(answer["held"])
