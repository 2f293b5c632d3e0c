"""What push and pull share: cutting text into messages, the keys that make a push idempotent, retries.

A message pushed by ``jobchain http push`` (or ``POST /push/Q?id=PUSH``) has
the key ``PUSH.START.END``: the push's id and the byte range of the source its
lines cover. The same push id over the same bytes gives the same keys, so a
push run again stores nothing twice, and a puller can tell from the ranges
alone what it already wrote, even when a re-run cut the text differently.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from typing import Any

import structlog

from jobchain.errors import BackendUnavailableError
from jobchain_http.client import HttpBackend

__all__ = [
    "MESSAGE_BYTES",
    "MESSAGE_LINES",
    "PUSH_ID",
    "Cutter",
    "QueueNotFoundError",
    "TargetExistsError",
    "TransferError",
    "cut_messages",
    "message_key",
    "parse_key",
    "retrying",
    "split_lines",
]

logger = structlog.get_logger("jobchain_http.transfer")

MESSAGE_LINES = 1000
#: a message's estimated size (4 bytes a character: never over a gateway's body limit once in JSON)
MESSAGE_BYTES = 128 * 1024
PUSH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEY = re.compile(r"^line:[^:]+:(?P<push>[A-Za-z0-9_-]{1,64})\.(?P<start>\d+)\.(?P<end>\d+)$")

#: a message as cut: (byte offset of its first line, offset after its last, its lines, no final \n)
Cut = tuple[int, int, list[str], bool]


class TransferError(RuntimeError):
    """A push or pull that cannot go on; the message is one line for the user."""


class TargetExistsError(TransferError):
    pass


class QueueNotFoundError(TransferError):
    pass


def split_lines(data: bytes) -> tuple[list[str], bool]:
    """The lines of ``data`` without their ``\\n``, and whether the last one had none (``partial``)."""
    if not data:
        return [], False
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines[-1] == "":
        return lines[:-1], False
    return lines, True


class Cutter:
    """Cuts lines into messages by line count and estimated size only, so the same text cuts the same way."""

    def __init__(self, offset: int = 0, per_message: int = MESSAGE_LINES, max_bytes: int = MESSAGE_BYTES):
        self.start = offset
        self.end = offset
        self.per_message = per_message
        self.max_bytes = max_bytes
        self.lines: list[str] = []
        self.size = 0

    def add(self, line: str, raw_size: int, partial: bool = False) -> Cut | None:
        """Add a line of ``raw_size`` bytes in the source (its ``\\n`` included); a message it closed.

        ``partial``: the line is the last and has no ``\\n`` (the caller takes the rest after it).
        """
        done = None
        estimate = len(line) * 4 + 1
        if self.lines and self.size + estimate > self.max_bytes:
            done = self.take()
        self.lines.append(line)
        self.size += estimate
        self.end += raw_size
        if len(self.lines) >= self.per_message:
            if done is not None:  # never: a full message is taken as soon as it is full
                raise AssertionError("two messages closed by one line")
            done = self.take(partial)
        return done

    def take(self, partial: bool = False) -> Cut | None:
        """The message of the lines added so far (None if there are none); the next starts after it."""
        if not self.lines:
            return None
        cut = (self.start, self.end, self.lines, partial)
        self.start, self.lines, self.size = self.end, [], 0
        return cut


def cut_messages(lines: list[str], partial: bool, offset: int = 0) -> Iterator[Cut]:
    """The messages of ``lines`` (as :func:`split_lines` returns them), from byte ``offset``."""
    cutter = Cutter(offset)
    for i, line in enumerate(lines):
        last = partial and i == len(lines) - 1
        raw = len(line.encode()) + (0 if last else 1)
        done = cutter.add(line, raw, last)
        if done is not None:
            yield done
    rest = cutter.take(partial)
    if rest is not None:
        yield rest


def message_key(push_id: str, cut: Cut) -> str:
    return f"{push_id}.{cut[0]}.{cut[1]}"


def parse_key(message_id: str) -> tuple[str, int, int] | None:
    """(push, start, end) of a message id made from a key of :func:`message_key`, else None."""
    found = _KEY.match(message_id)
    return None if found is None else (found["push"], int(found["start"]), int(found["end"]))


def retrying(what: str, backend: HttpBackend, method: str, path: str, **options: Any) -> Any:
    """``backend.request(...)``, tried again with backoff while the gateway cannot be reached."""
    attempts = 8
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return backend.request(method, path, **options)
        except BackendUnavailableError as exc:
            if attempt == attempts:
                raise
            logger.warning(f"{what}_retry", error=str(exc), retry_in=round(delay, 2))
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")
