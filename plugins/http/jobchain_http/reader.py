"""The ``http://`` backend's stream reader: one ``/v1/stream`` response, read on a thread.

It buffers what the gateway sends (never more than the stream's credit) and
hands it to :meth:`HttpBackend.reserve`. A delivery is handed out only while
at least half its lease is left; the rest, and everything buffered when the
reader stops, is released at once. The reader reconnects with backoff when
the stream fails or the gateway says goodbye.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx
import structlog

from jobchain.errors import BackendUnavailableError
from jobchain.model import Delivery, Released
from jobchain_http import schema
from jobchain_http.wire import check, value

if TYPE_CHECKING:
    from jobchain_http.client import HttpBackend

__all__ = ["StreamReader"]

logger = structlog.get_logger("jobchain_http.client")


class StreamReader:
    """Holds one ``/v1/stream`` response open on a thread and buffers its deliveries."""

    def __init__(
        self, backend: HttpBackend, queues: tuple[str, ...], lease: float, worker: str, prefetch: int
    ) -> None:
        self.backend = backend
        self.queues = queues
        self.lease = lease
        self.worker = worker
        self.prefetch = prefetch
        self.cond = threading.Condition()
        #: deliveries and the monotonic time after which handing them out is no longer worth it
        self.buffer: deque[tuple[Delivery, float]] = deque()
        self.error: Exception | None = None
        self.connected = False
        self.ready = threading.Event()
        self.unsupported = False
        self._stopping = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._main, name=f"jobchain-http-stream-{worker}", daemon=True)
        self.log = logger.bind(worker=worker, url=backend.url)

    def start(self) -> None:
        self._thread.start()
        self.ready.wait(self.backend.timeout)

    def take(self, limit: int, wait: float) -> list[Delivery]:
        deadline = time.monotonic() + wait
        out: list[Delivery] = []
        late: list[Delivery] = []
        with self.cond:
            while True:
                now = time.monotonic()
                while self.buffer and len(out) < limit:
                    delivery, fresh_until = self.buffer.popleft()
                    (out if now < fresh_until else late).append(delivery)
                if out or (self.error is not None and not self.connected):
                    break
                remaining = deadline - now
                if remaining <= 0 or self._stopping.is_set():
                    break
                self.cond.wait(remaining)
            failure = self.error if not out and not self.connected else None
        if late:
            # most of their lease went by in the buffer: hand them back rather than run them late
            self._release(late)
        if failure is not None:
            raise failure
        return out

    def _release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        try:
            self.backend.settle([Released(delivery=d) for d in deliveries])
        except Exception as exc:  # their leases end and the gateway hands them out again
            self.log.warning("stream_release_failed", error=str(exc), jobs=len(deliveries))

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            # wake the reader thread and end the stream now: closing the socket from this thread would
            # not interrupt its recv(), and the gateway would keep sending to a reader that is gone
            with contextlib.suppress(Exception):
                sock = response.extensions["network_stream"].get_extra_info("socket")
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                response.close()
        with self.cond:
            left = [d for d, _ in self.buffer]
            self.buffer.clear()
            self.cond.notify_all()
        self._release(left)

    def _main(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                self._follow()
                backoff = 0.05
            except Exception as exc:
                if self._stopping.is_set():
                    break
                if isinstance(exc, httpx.TransportError):
                    exc = BackendUnavailableError(self.backend.url, f"{type(exc).__name__}: {exc}")
                with self.cond:
                    self.error = exc
                    self.connected = False
                    self.cond.notify_all()
                self.log.warning("stream_failed", error=str(exc), retry_in=round(backoff, 3))
            finally:
                self.ready.set()
                self._response = None
            if self.unsupported:
                return
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _follow(self) -> None:
        backend = self.backend
        params: list[tuple[str, str | int | float | bool | None]] = [("queue", q) for q in self.queues]
        params += [
            ("prefetch", str(self.prefetch)),
            ("lease", repr(float(self.lease))),
            ("worker", self.worker),
        ]
        headers = {**backend._headers, "accept": "application/x-ndjson"}
        # the gateway pings at least every few seconds: silence much longer than that is a dead link
        timeout = httpx.Timeout(backend.timeout, connect=10.0, read=max(30.0, backend.timeout))
        with backend._client.stream(
            "GET", backend._path("/v1/stream"), params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code in (404, 405, 501):
                self.unsupported = True
                return
            if response.status_code != 200:
                response.read()
                raise backend._error(response)
            self._response = response
            for line in response.iter_lines():
                if not line:
                    continue
                message = json.loads(line)
                kind = message.get("type")
                if kind == "delivery":
                    raw = check(message["delivery"], schema.Delivery, "$.delivery")
                    delivery = value(Delivery.from_wire, raw, "$.delivery")
                    if self._stopping.is_set():
                        self._release([delivery])
                        continue
                    with self.cond:
                        # hand it out only while at least half its lease is left
                        self.buffer.append((delivery, time.monotonic() + self.lease / 2))
                        self.cond.notify_all()
                elif kind == "hello":
                    with self.cond:
                        self.connected = True
                        self.error = None
                        self.cond.notify_all()
                    self.ready.set()
                elif kind == "bye":
                    break
                if self._stopping.is_set():
                    break
        with self.cond:
            self.connected = False
