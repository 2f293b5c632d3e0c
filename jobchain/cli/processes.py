"""``--processes N``: the worker processes of ``jobchain worker`` and ``jobchain run``, and their supervisor.

The parent starts N children (:mod:`jobchain.cli.worker_process`) with
multiprocessing's ``spawn`` context: a fresh interpreter each, no fork after
threads were started. Each child opens the App on the same backend and runs
one :class:`jobchain.Worker` with its own thread pool under its own name;
:class:`Pool` starts them, reads what they report over their pipes, asks
them to stop gracefully over the same pipes (:meth:`Pool.request_stop`) and
to quit at once with SIGTERM (:meth:`Pool.signal_all`).

Neither is called from a signal handler: the commands' handlers only count
signals, and their main loops act on the count.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import click
from attrs import define, field

from jobchain.cli.worker_process import ABORTED_EXIT, ChildSpec, ReferenceSpec, Totals, child_main, send
from jobchain.worker import SlotStats

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["ChildFailed", "ChildSpec", "Pool", "ReferenceSpec", "Totals", "split_threads"]


def split_threads(total: int, processes: int) -> list[int]:
    """``total`` threads over ``processes``, as evenly as possible (the first ones get the extra)."""
    base, extra = divmod(total, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


@define
class _Child:
    spec: ChildSpec
    process: BaseProcess
    conn: Connection
    ready: bool = False
    totals: Totals = field(factory=Totals)
    held: int = 0
    final: bool = False
    slots: list[SlotStats] = field(factory=list)
    clean: bool = True
    error: str | None = None
    exitcode: int | None = None
    #: it ended itself to abort cancelled jobs (ABORTED_EXIT) and another process took its place
    replaced: bool = False


class ChildFailed(click.ClickException):
    """A worker process failed (could not start, or died before it was asked to stop)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Pool:
    """The parent's view of its worker processes: starts them, reads their reports, stops them.

    A reader thread collects every child's messages and notices exits; the
    methods read what it gathered.
    """

    def __init__(self, specs: Sequence[ChildSpec], *, on_exit: Callable[[int], None] | None = None) -> None:
        self._mp = multiprocessing.get_context("spawn")
        #: called on the reader thread with a child's pid once it has exited (before a replacement starts)
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.children: list[_Child] = []
        self._specs = list(specs)
        self._reader: threading.Thread | None = None
        self.stop_requested = False

    def start(self) -> Pool:
        for spec in self._specs:
            self.children.append(self._spawn(spec))
        self._reader = threading.Thread(target=self._read, name="jobchain-pool-reader", daemon=True)
        self._reader.start()
        return self

    def _spawn(self, spec: ChildSpec) -> _Child:
        parent_end, child_end = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=child_main, args=(spec, child_end), name=f"jobchain-{spec.name}", daemon=False
        )
        process.start()
        child_end.close()
        return _Child(spec=spec, process=process, conn=parent_end)

    # --- what the reader thread gathers ---------------------------------------------

    def _read(self) -> None:
        try:
            self._read_all()
        finally:
            with self._changed:
                self._changed.notify_all()

    def _read_all(self) -> None:
        open_conns = {child.conn: child for child in self.children}
        sentinels = {child.process.sentinel: child for child in self.children}
        while sentinels:
            for item in wait([*open_conns, *sentinels], timeout=0.5):
                if isinstance(item, Connection):
                    child = open_conns.get(item)  # None: drained and closed a moment ago
                    if child is not None and not self._receive(child):
                        del open_conns[item]
                    continue
                assert isinstance(item, int)
                child = sentinels.pop(item)
                child.process.join()
                if self._on_exit is not None and child.process.pid is not None:
                    self._on_exit(child.process.pid)
                # its last words first: a "final" sent just before exiting is still in the pipe
                while child.conn in open_conns and self._poll(child.conn):
                    if not self._receive(child):
                        del open_conns[child.conn]
                with self._changed:
                    child.exitcode = child.process.exitcode
                    if child.exitcode == ABORTED_EXIT and not self.stop_requested:
                        # it aborted cancelled jobs (--abort-grace): a fresh process takes its place
                        child.replaced = True
                        fresh = self._spawn(child.spec)
                        fresh.ready = True  # (a worker child needs no "go")
                        self.children.append(fresh)
                        open_conns[fresh.conn] = fresh
                        sentinels[fresh.process.sentinel] = fresh
                    self._changed.notify_all()

    @staticmethod
    def _poll(conn: Connection) -> bool:
        try:
            return conn.poll(0)
        except (OSError, EOFError):
            return True  # recv() reports it

    def _receive(self, child: _Child) -> bool:
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            return False
        with self._changed:
            self._apply(child, message)
            self._changed.notify_all()
        return True

    @staticmethod
    def _apply(child: _Child, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            child.ready = True
        elif kind == "progress":
            child.totals = Totals.from_wire(message[1])
            child.held = int(message[2])
        elif kind == "final":
            child.totals = Totals.from_wire(message[1])
            child.slots = [SlotStats(*row) for row in message[2]]
            child.clean = bool(message[3])
            child.held = 0
            child.final = True
        elif kind == "error":
            child.error = str(message[1])

    # --- queries ------------------------------------------------------------------------

    def totals(self) -> Totals:
        out = Totals()
        with self._lock:
            for child in self.children:
                out.add(child.totals)
        return out

    def held(self) -> int:
        with self._lock:
            return sum(child.held for child in self.children)

    def slots(self) -> list[SlotStats]:
        with self._lock:
            return [slot for child in self.children for slot in child.slots]

    def clean(self) -> bool:
        with self._lock:
            return all(child.clean for child in self.children)

    def alive(self) -> bool:
        with self._lock:
            return any(child.exitcode is None for child in self.children)

    def failure(self) -> str | None:
        """Why a child failed: an error it reported, or an exit nobody asked for; else None."""
        with self._lock:
            return self._failure()

    def _failure(self) -> str | None:
        for child in self.children:
            if child.error is not None:
                return f"worker process {child.spec.name}: {child.error}"
            if child.exitcode is None or child.replaced:
                continue
            if child.exitcode < 0:
                how = f"was killed by {signal.Signals(-child.exitcode).name}"
            elif child.exitcode != 0 or not (self.stop_requested or child.final):
                how = f"exited with code {child.exitcode}"
            else:
                continue
            return f"worker process {child.spec.name} (pid {child.process.pid}) {how}"
        return None

    # --- control ------------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Block until every child is ready to work; raise :class:`ChildFailed` if one cannot be."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(child.ready for child in self.children):
                failure = self._failure()
                if failure is not None:
                    raise ChildFailed(failure)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChildFailed(f"the worker processes were not ready after {timeout:g}s")
                self._changed.wait(min(left, 0.2))

    def go(self) -> None:
        for child in self.children:
            send(child.conn, "go")

    def request_stop(self) -> None:
        """Ask every child still running to stop gracefully (a child still starting up reads it later)."""
        self.stop_requested = True
        for child in self.children:
            if child.exitcode is None:
                send(child.conn, "stop")

    def signal_all(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to every child still running: SIGTERM after a stop request quits at once."""
        self.stop_requested = True
        for child in self.children:
            pid = child.process.pid
            if child.exitcode is None and pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every child has exited and its last report is read; False on timeout.

        Only the reader thread reaps the children (two threads waiting for one
        pid race each other), so this waits for what it records.
        """
        if self._reader is None:  # start() failed before the reader ran
            for child in self.children:
                child.process.join(timeout)
                child.exitcode = child.process.exitcode
            return not self.alive()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._reader.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(0.2 if left is None else min(left, 0.2))
        return True

    def kill_all(self) -> None:
        """SIGKILL whatever is left (after a timeout): their leases expire and others take the jobs."""
        for child in self.children:
            if child.exitcode is None:
                child.process.kill()
        self.join(10)

    def close(self) -> None:
        for child in self.children:
            child.conn.close()
