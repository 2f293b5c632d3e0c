"""Deliveries the gateway handed out, and streamed delivery with credit-based flow control.

The :class:`Hub` remembers every delivery it handed out (by token) until it is
settled, found stale, or its lease ends. That copy is what a settlement is
applied to: a client names a delivery by job id and token, and never gets to
rewrite the job it hands back.

A stream (``GET /v1/stream``) is a long chunked response, one NDJSON line per
event. It never has more than ``prefetch`` deliveries out that are not
settled: when its credit is used up it waits until a settle (or an extend that
finds a lease lost, or a lease running out) gives some back. The stream
extends no lease: a delivery whose lease ends unsettled is the backend's to
hand out again, and no longer counts against the stream's credit.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog
from attrs import define, field
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jobchain.backend import Backend
from jobchain.model import Delivery, Released
from jobchain_http.guard import SECURITY_HEADERS
from jobchain_http.wire import dumps

__all__ = ["DeliveryStream", "Hub", "Stream"]

logger = structlog.get_logger("jobchain_http.streams")

T = TypeVar("T")


@define(eq=False)
class Stream:
    """One open stream: what it serves and the deliveries it has out (token -> lease end)."""

    id: str
    queues: tuple[str, ...]
    prefetch: int
    lease: float
    worker: str
    outstanding: dict[str, float] = field(factory=dict)
    wake: anyio.Event = field(factory=anyio.Event)
    delivered: int = 0

    def nudge(self) -> None:
        self.wake.set()

    def credit(self) -> int:
        return self.prefetch - len(self.outstanding)


@define
class Tracked:
    delivery: Delivery
    lease_until: float
    stream: Stream | None = None


class Hub:
    """Shared by every request of one gateway: tracked deliveries, open streams, the thread limiters.

    Only the event loop's thread touches its dicts; backend calls run in worker
    threads through :meth:`call` (short calls) and :meth:`wait_call` (calls that block
    waiting for jobs, on a separate limiter so that waiting never starves a settle).
    """

    def __init__(self, backend: Backend, *, ping_interval: float = 5.0, max_waiters: int = 256) -> None:
        self.backend = backend
        self.ping_interval = ping_interval
        self.tracked: dict[str, Tracked] = {}
        self.streams: dict[str, Stream] = {}
        self.closing = False
        self._quick = anyio.CapacityLimiter(32)
        self._waits = anyio.CapacityLimiter(max_waiters)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self._last_prune = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._quick)

    async def wait_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._waits)

    # --- tracking ---------------------------------------------------------------------

    def track(self, deliveries: Sequence[Delivery], stream: Stream | None = None) -> None:
        for d in deliveries:
            self.tracked[d.token] = Tracked(delivery=d, lease_until=d.lease_until, stream=stream)
            if stream is not None:
                stream.outstanding[d.token] = d.lease_until

    def forget(self, tokens: Sequence[str]) -> None:
        """These deliveries are settled, stale or gone: give their streams the credit back."""
        for token in tokens:
            entry = self.tracked.pop(token, None)
            if entry is not None and entry.stream is not None:
                entry.stream.outstanding.pop(token, None)
                entry.stream.nudge()

    def extended(self, tokens: Sequence[str], lease_until: float) -> None:
        for token in tokens:
            entry = self.tracked.get(token)
            if entry is not None:
                entry.lease_until = lease_until
                if entry.stream is not None and token in entry.stream.outstanding:
                    entry.stream.outstanding[token] = lease_until

    def lookup(self, token: str) -> Delivery | None:
        entry = self.tracked.get(token)
        return None if entry is None else entry.delivery

    def expire(self, now: float) -> None:
        """Forget deliveries whose lease has ended: the backend hands those jobs out again."""
        gone = [t for t, e in self.tracked.items() if e.lease_until <= now]
        self.forget(gone)

    async def prune(self) -> None:
        """Now and then, drop tracked deliveries whose lease ended (their clients went away)."""
        if time.monotonic() - self._last_prune < self.ping_interval:
            return
        self._last_prune = time.monotonic()
        self.expire(await self.call(self.backend.now))

    # --- streams ----------------------------------------------------------------------

    def open_stream(self, queues: tuple[str, ...], prefetch: int, lease: float, worker: str) -> Stream:
        self._loop = asyncio.get_running_loop()
        stream = Stream(
            id=f"s-{self._prefix}-{next(self._ids)}",
            queues=queues,
            prefetch=prefetch,
            lease=lease,
            worker=worker,
        )
        self.streams[stream.id] = stream
        return stream

    def close_stream(self, stream: Stream) -> None:
        """The connection ended. Its deliveries stay leased: the worker may still settle them."""
        self.streams.pop(stream.id, None)
        for token in list(stream.outstanding):
            entry = self.tracked.get(token)
            if entry is not None:
                entry.stream = None
        stream.outstanding.clear()

    def shutdown(self) -> None:
        """The server is stopping: every stream says goodbye and ends. Call it on the event loop."""
        self.closing = True
        for stream in list(self.streams.values()):
            stream.nudge()

    def request_shutdown(self) -> None:
        """:meth:`shutdown`, from any thread (a signal handler, a test)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.closing = True
            return
        try:
            loop.call_soon_threadsafe(self.shutdown)
        except RuntimeError:  # the loop closed meanwhile
            self.closing = True


class DeliveryStream(Response):
    """The streamed response: ``hello``, then ``delivery`` lines as credit allows, ``ping`` when idle."""

    media_type = "application/x-ndjson"

    def __init__(self, hub: Hub, stream: Stream) -> None:
        self.hub = hub
        self.stream = stream
        self.status_code = 200
        self.background = None
        self.init_headers({"x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, stream = self.hub, self.stream
        headers = [*self.raw_headers, *SECURITY_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = anyio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    stream.nudge()
                    return

        log = logger.bind(stream=stream.id, worker=stream.worker)
        log.info("stream_opened", queues=list(stream.queues), prefetch=stream.prefetch, lease=stream.lease)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                try:
                    await self._pump(send, gone)
                finally:
                    group.cancel_scope.cancel()
        finally:
            hub.close_stream(stream)
            log.info("stream_closed", delivered=stream.delivered, disconnected=gone.is_set())
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _line(self, send: Send, payload: dict[str, Any]) -> None:
        await send({"type": "http.response.body", "body": dumps(payload) + b"\n", "more_body": True})

    async def _pump(self, send: Send, gone: anyio.Event) -> None:
        hub, stream, backend = self.hub, self.stream, self.hub.backend
        ping = hub.ping_interval
        hello = {
            "type": "hello",
            "stream": stream.id,
            "prefetch": stream.prefetch,
            "lease": stream.lease,
            "ping_interval": ping,
        }
        await self._line(send, hello)
        last_write = time.monotonic()
        # with a large prefetch, wait for a quarter of it before reserving again: fewer, larger batches
        least = max(1, stream.prefetch // 4) if stream.prefetch >= 16 else 1
        while not gone.is_set() and not hub.closing:
            if stream.credit() < least:
                # out of credit: leases that ended give theirs back; otherwise wait for a settle
                now = await hub.call(backend.now)
                hub.expire(now)
                if stream.credit() < least:
                    stream.wake = anyio.Event()
                    soonest = min(stream.outstanding.values(), default=math.inf) - now
                    timeout = max(0.01, min(ping - (time.monotonic() - last_write), soonest + 0.001))
                    with anyio.move_on_after(timeout):
                        await stream.wake.wait()
                    if time.monotonic() - last_write >= ping and not gone.is_set():
                        await self._line(send, {"type": "ping"})
                        last_write = time.monotonic()
                    continue
            wait = max(0.0, min(1.0, ping - (time.monotonic() - last_write)))
            got: list[Delivery] = await hub.wait_call(
                backend.reserve,
                stream.queues,
                limit=stream.credit(),
                lease=stream.lease,
                worker=stream.worker,
                wait=wait,
            )
            if got and (gone.is_set() or hub.closing):
                # never sent: give them back now rather than at the end of their lease
                await hub.call(backend.settle, [Released(delivery=d) for d in got])
                break
            if got:
                hub.track(got, stream)
                stream.delivered += len(got)
                body = b"".join(dumps({"type": "delivery", "delivery": d.to_wire()}) + b"\n" for d in got)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= ping:
                await self._line(send, {"type": "ping"})
                last_write = time.monotonic()
        if hub.closing and not gone.is_set():
            await self._line(send, {"type": "bye", "reason": "the gateway is shutting down"})
