"""The driver's side of every peer adapter: a line protocol on stdin/stdout, run inside the peer's venv.

``bench_peers.py`` starts ``<venv>/bin/python bench/peers/<peer>_app.py`` and
writes one command a line; the adapter answers one line each (``ok ...`` or
``err <message>``), so every submission happens in the peer's own venv and
through its own client:

* ``enqueue START COUNT`` - no-op jobs START.. one call each; answers ``ok SECONDS``
  (timed here, so the pipe is left out);
* ``bulk START COUNT`` - the same jobs through the peer's bulk API; ``ok SECONDS``;
* ``chain I`` - the three-step chain I; ``ok``;
* ``sleeps START MS,MS,...`` - sleeping jobs START+k of MS[k] milliseconds; ``ok``;
* ``naps START COUNT MS`` - COUNT asyncio jobs (``fifo_record.nap``) of MS milliseconds
  each, through the bulk path; ``ok SECONDS`` (only the asyncio peers have them:
  ``bench_async.py``);
* ``quit`` - close the client and exit.

The jobs themselves run in the peer's workers and write their records to the
FIFO (:mod:`fifo_record`); nothing here counts them. Settings come from the
environment: ``BENCH_REDIS_URL``, ``BENCH_QUEUE`` (a name of this run's own)
and ``JOBCHAIN_FLOOR_FIFO``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for fifo_record

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench-peers")
#: jobs one worker process runs at once, where the peer sets it in its settings (bench_peers: 4
#: per process; bench_async: the one process's whole concurrency)
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))
#: how many submissions an async adapter keeps in flight at once in its bulk mode
GATHER = 50


class Peer(Protocol):
    """A peer's client side, blocking calls."""

    #: how ``bulk`` submits, for the table's notes (e.g. "enqueue_many, one pipeline")
    bulk_mode: str

    def enqueue(self, i: int) -> None: ...
    def bulk(self, start: int, count: int) -> None: ...
    def chain(self, i: int) -> None: ...
    def sleep(self, i: int, ms: int) -> None: ...
    def close(self) -> None: ...


class AsyncPeer(Protocol):
    """A peer's client side, coroutines (run on one event loop for the adapter's life)."""

    bulk_mode: str

    async def open(self) -> None: ...
    async def enqueue(self, i: int) -> None: ...
    async def chain(self, i: int) -> None: ...
    async def sleep(self, i: int, ms: int) -> None: ...
    async def nap(self, i: int, ms: int) -> None: ...
    async def close(self) -> None: ...


def parse_ms(text: str) -> list[int]:
    return [int(m) for m in text.split(",") if m]


def handle(line: str, peer: Peer) -> str | None:
    """Run one command; return the answer line, or None on ``quit``."""
    cmd, *args = line.split()
    if cmd == "quit":
        return None
    if cmd == "enqueue":
        start, count = int(args[0]), int(args[1])
        enqueue = peer.enqueue
        t0 = time.perf_counter()
        for i in range(start, start + count):
            enqueue(i)
        return f"ok {time.perf_counter() - t0:.6f}"
    if cmd == "bulk":
        t0 = time.perf_counter()
        peer.bulk(int(args[0]), int(args[1]))
        return f"ok {time.perf_counter() - t0:.6f}"
    if cmd == "chain":
        peer.chain(int(args[0]))
        return "ok"
    if cmd == "sleeps":
        start = int(args[0])
        for k, ms in enumerate(parse_ms(args[1])):
            peer.sleep(start + k, ms)
        return "ok"
    if cmd == "naps":
        naps = getattr(peer, "naps", None)
        if naps is None:
            raise ValueError("this peer has no asyncio jobs (naps)")
        t0 = time.perf_counter()
        naps(int(args[0]), int(args[1]), int(args[2]))
        return f"ok {time.perf_counter() - t0:.6f}"
    raise ValueError(f"unknown command {cmd!r}")


def serve(peer: Peer, stdin: Sequence[str] | None = None) -> None:
    """Answer the driver's commands until ``quit`` or end of input."""
    lines = stdin if stdin is not None else sys.stdin
    print(f"ready {peer.bulk_mode}", flush=True)
    for line in lines:
        if not line.strip():
            continue
        try:
            answer = handle(line, peer)
        except Exception as exc:
            answer = f"err {type(exc).__name__}: {exc}".replace("\n", " ")
        if answer is None:
            break
        print(answer, flush=True)
    peer.close()


class SyncOverAsync:
    """Wraps an :class:`AsyncPeer` as a :class:`Peer` on a private event loop; bulk is a bounded gather."""

    def __init__(self, peer: AsyncPeer) -> None:
        self.peer = peer
        self.loop = asyncio.new_event_loop()
        self.bulk_mode = peer.bulk_mode
        self.run(peer.open())

    def run(self, coro: Awaitable[None]) -> None:
        self.loop.run_until_complete(coro)

    def enqueue(self, i: int) -> None:
        self.run(self.peer.enqueue(i))

    def bulk(self, start: int, count: int) -> None:
        self.run(gather_range(self.peer.enqueue, start, count))

    def chain(self, i: int) -> None:
        self.run(self.peer.chain(i))

    def sleep(self, i: int, ms: int) -> None:
        self.run(self.peer.sleep(i, ms))

    def naps(self, start: int, count: int, ms: int) -> None:
        """``count`` asyncio jobs of ``ms`` milliseconds, up to GATHER submissions in flight."""

        async def nap(i: int) -> None:
            await self.peer.nap(i, ms)

        self.run(gather_range(nap, start, count))

    def close(self) -> None:
        self.run(self.peer.close())
        self.loop.close()


async def gather_range(submit: Callable[[int], Awaitable[None]], start: int, count: int) -> None:
    """``submit(i)`` for every i, up to GATHER at once (concurrent commands on the client's pool)."""
    for lo in range(start, start + count, GATHER):
        await asyncio.gather(*(submit(i) for i in range(lo, min(lo + GATHER, start + count))))
