"""``jobchain http push``: a file or a pipe into a line queue, streamed, and safe to run again.

Lines are sent as they are read: a message closes at ``lines_per_message``
lines (or about 128 KiB), and, when ``max_delay`` is set (a pipe), whatever was
read is sent once it has waited that long, so ``tail -f log | jobchain http
push URL q -`` delivers lines within a fraction of a second. A regular file is
cut by count and size only, so the same file cuts the same way every time.

Every message is keyed ``PUSH.START.END`` (see :mod:`jobchain_http._lineio`):
run again with the same push id (``--id``) over the same input, a push stores
nothing twice, and ``pull`` writes each byte once even where the second run
cut the text differently.
"""

from __future__ import annotations

import queue as queues
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from attrs import define

from jobchain.ids import new_id
from jobchain_http._lineio import Cut, Cutter, TransferError, message_key, retrying
from jobchain_http.client import HttpBackend

__all__ = ["NotTextError", "PushReport", "push"]

_CHUNK = 64 * 1024


class NotTextError(TransferError):
    def __init__(self, offset: int) -> None:
        super().__init__(f"byte {offset} is not UTF-8: line queues carry text")
        self.offset = offset


@define
class PushReport:
    """What a push did so far: its id, lines and messages stored, and the bytes of input they cover."""

    push_id: str
    lines: int = 0
    messages: int = 0
    stored_bytes: int = 0


class _Feed:
    """Chunks of the source: read on a thread when a wait must be bounded, else in the caller's."""

    def __init__(self, source: IO[bytes], threaded: bool) -> None:
        read1 = getattr(source, "read1", None)
        self._read: Callable[[int], bytes] = read1 if read1 is not None else source.read
        self._chunks: queues.Queue[bytes | BaseException] | None = None
        if threaded:
            self._chunks = queues.Queue(maxsize=16)
            threading.Thread(target=self._pump, name="push-reader", daemon=True).start()

    def _pump(self) -> None:
        assert self._chunks is not None
        try:
            while True:
                data = self._read(_CHUNK)
                self._chunks.put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self._chunks.put(exc)

    def get(self, timeout: float | None) -> bytes | None:
        """The next chunk (``b""`` at the end), or None when ``timeout`` passed first."""
        if self._chunks is None:
            return self._read(_CHUNK)
        try:
            got = self._chunks.get(timeout=timeout)
        except queues.Empty:
            return None
        if isinstance(got, BaseException):
            raise got
        return got


def push(
    backend: HttpBackend,
    queue: str,
    source: IO[bytes],
    *,
    push_id: str | None = None,
    lines_per_message: int = 1000,
    max_request_bytes: int = 512 * 1024,
    messages_per_request: int = 64,
    max_delay: float | None = None,
    report: PushReport | None = None,
) -> PushReport:
    """Send ``source`` to line queue ``queue``; ``report`` (if given) is kept up to date as it goes."""
    report = report if report is not None else PushReport(push_id=push_id or new_id())
    cutter = Cutter(0, lines_per_message, max(1024, max_request_bytes // 4))
    batch: list[Cut] = []
    batch_bytes = 0
    path = f"/v1/lines/{queue}"

    def send() -> None:
        nonlocal batch, batch_bytes
        if not batch:
            return
        body = {"messages": [_message(report.push_id, cut) for cut in batch]}
        retrying("push", backend, "POST", path, body=body)
        report.messages += len(batch)
        report.lines += sum(len(cut[2]) for cut in batch)
        report.stored_bytes = batch[-1][1]
        batch, batch_bytes = [], 0

    def add(cut: Cut | None) -> None:
        nonlocal batch_bytes
        if cut is None:
            return
        size = sum(len(line) * 4 + 4 for line in cut[2]) + 64
        if batch and (len(batch) >= messages_per_request or batch_bytes + size > max_request_bytes):
            send()
        batch.append(cut)
        batch_bytes += size

    feed = _Feed(source, threaded=max_delay is not None)
    buf = b""
    offset = 0  # of buf[0] in the source
    waiting_since: float | None = None  # when the oldest line not sent yet was read
    while True:
        timeout = None
        if max_delay is not None and waiting_since is not None:
            timeout = max(0.0, waiting_since + max_delay - time.monotonic())
        data = feed.get(timeout)
        if data is None:  # the input paused: send what waits
            add(cutter.take())
            send()
            waiting_since = None
            continue
        if not data:
            break
        buf += data
        end = buf.rfind(b"\n") + 1
        if end == 0:
            continue
        whole, buf = buf[:end], buf[end:]
        for line, size in _lines(whole, offset):
            add(cutter.add(line, size))
        offset += end
        if waiting_since is None and (cutter.lines or batch):
            waiting_since = time.monotonic()
    if buf:  # a last line without its newline
        ((line, size),) = _lines(buf, offset)
        add(cutter.add(line, size, partial=True))
        add(cutter.take(partial=True))
    add(cutter.take())
    send()
    return report


def _lines(data: bytes, offset: int) -> list[tuple[str, int]]:
    """The lines of ``data`` (whole lines, or one without its ``\\n``) with their sizes in bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotTextError(offset + exc.start) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
        if data.isascii():
            return [(line, len(line) + 1) for line in lines]
        return [(line, len(line.encode()) + 1) for line in lines]
    return [(lines[0], len(data))]


def _message(push_id: str, cut: Cut) -> dict[str, Any]:
    message: dict[str, Any] = {"lines": cut[2], "key": message_key(push_id, cut)}
    if cut[3]:
        message["partial_last"] = True
    return message
