"""A real uvicorn process serving the gateway over a memory backend whose clock the test moves.

Run as ``python clocked_gateway.py CLOCK_FILE TOKEN``: the clock is the double
stored in CLOCK_FILE (the test writes it through :class:`SharedClock`), the
port is printed on stdout, and ``POST /__test__/reset`` gives the gateway a
fresh, empty backend. Only for the conformance suite's end-to-end run.
"""

from __future__ import annotations

import mmap
import socket
import struct
import sys
from typing import Any

import uvicorn
from jobchain_http.gateway import GatewayConfig, create_app

from jobchain.clock import ManualClock
from jobchain.memory import MemoryBackend


class FileClock:
    """Reads the time from the first 8 bytes of a file (a little-endian double)."""

    def __init__(self, path: str) -> None:
        with open(path, "r+b") as fh:
            self._map = mmap.mmap(fh.fileno(), 8)

    def now(self) -> float:
        value: float = struct.unpack_from("<d", self._map, 0)[0]
        return value


class SharedClock(ManualClock):
    """The test's side: a ManualClock that also writes its time where a FileClock reads it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        with open(path, "r+b") as fh:
            self._map = mmap.mmap(fh.fileno(), 8)
        self._publish()

    def _publish(self) -> None:
        struct.pack_into("<d", self._map, 0, self.now())

    def advance(self, seconds: float) -> float:
        value = super().advance(seconds)
        self._publish()
        return value

    def set(self, t: float) -> None:
        super().set(t)
        self._publish()


def main() -> None:
    clock = FileClock(sys.argv[1])
    app = create_app(GatewayConfig(backend=MemoryBackend(clock=clock), token=sys.argv[2], ping_interval=0.2))

    async def harness(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__test__/reset":
            app.gateway.use_backend(MemoryBackend(clock=clock))
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await app(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn serves: none refused at start
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(harness, log_config=None, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
