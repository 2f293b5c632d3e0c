"""``jobchain http push`` and ``pull``: a file through a line queue, byte for byte and in order.

Push reads a UTF-8 file, cuts it into messages of whole lines and sends them
in batches. Each message has a key ``PUSH.INDEX`` (PUSH is a fresh
time-sortable id), so a batch sent twice after a lost answer is stored once.

Pull writes messages in order and acknowledges a message only after its lines
are written, flushed and fsynced and the progress file (``FILE.jobchain-pull``)
says so. Killed at any point and started again, it cuts the file back to the
last recorded size, skips what it already wrote (by key, or by id for
messages without one) and goes on. Because a delivery that a dead puller held
comes back only when its lease ends, a starting puller first waits until no
message of the queue is in flight, so nothing newer overtakes it. One puller
per queue keeps the order; without ``--follow`` it stops when the queue is
drained: nothing ready, delayed or in flight.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import structlog
from attrs import define, field

from jobchain.errors import BackendUnavailableError
from jobchain.ids import new_id
from jobchain_http.client import HttpBackend

__all__ = ["PullReport", "pull", "push", "split_lines"]

logger = structlog.get_logger("jobchain_http.transfer")

_KEYED = re.compile(r"^line:[^:]+:(?P<push>[0-9a-f]+)\.(?P<index>\d+)$")


def split_lines(data: bytes) -> tuple[list[str], bool]:
    """The lines of ``data`` without their ``\\n``, and whether the last one had none (``partial``)."""
    if not data:
        return [], False
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines[-1] == "":
        return lines[:-1], False
    return lines, True


def _messages(
    lines: list[str], partial: bool, per_message: int, max_bytes: int
) -> Iterator[tuple[list[str], bool]]:
    start = 0
    while start < len(lines):
        size = 0
        end = start
        while end < len(lines) and end - start < per_message:
            size += len(lines[end]) * 4 + 1  # worst-case UTF-8 size: never over the gateway's body limit
            if size > max_bytes and end > start:
                break
            end += 1
        yield lines[start:end], partial and end == len(lines)
        start = end


def _retrying(what: str, backend: HttpBackend, method: str, path: str, **options: Any) -> Any:
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


def push(
    backend: HttpBackend,
    queue: str,
    source: IO[bytes],
    *,
    lines_per_message: int = 1000,
    max_request_bytes: int = 512 * 1024,
    messages_per_request: int = 64,
) -> tuple[int, int]:
    """Send ``source`` to line queue ``queue``; returns (lines, messages) sent."""
    lines, partial = split_lines(source.read())
    push_id = new_id()
    batch: list[dict[str, Any]] = []
    batch_bytes = 0
    count = 0
    per_message_bytes = max(1024, max_request_bytes // 4)

    def send() -> None:
        nonlocal batch, batch_bytes
        if batch:
            body = {"messages": batch}
            _retrying("push", backend, "POST", f"/v1/lines/{queue}", body=body)
            batch, batch_bytes = [], 0

    for index, (chunk, last_partial) in enumerate(
        _messages(lines, partial, lines_per_message, per_message_bytes)
    ):
        size = sum(len(line) * 4 + 4 for line in chunk) + 64
        if batch and (len(batch) >= messages_per_request or batch_bytes + size > max_request_bytes):
            send()
        message: dict[str, Any] = {"lines": chunk, "key": f"{push_id}.{index:09d}"}
        if last_partial:
            message["partial_last"] = True
        batch.append(message)
        batch_bytes += size
        count += 1
    send()
    return len(lines), count


@define
class PullReport:
    lines: int = 0
    messages: int = 0
    duplicates: int = 0
    resumed_at: int | None = None


@define
class _Progress:
    """What the progress file records: the file's good size, the next index per push, recent ids."""

    size: int = 0
    next: dict[str, int] = field(factory=dict)
    recent: list[str] = field(factory=list)

    @classmethod
    def load(cls, path: Path) -> _Progress | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(
            size=int(raw["size"]),
            next={str(k): int(v) for k, v in raw["next"].items()},
            recent=list(raw["recent"]),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump({"size": self.size, "next": self.next, "recent": self.recent}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _key(message_id: str) -> tuple[str, int] | None:
    found = _KEYED.match(message_id)
    return None if found is None else (found["push"], int(found["index"]))


def pull(
    backend: HttpBackend,
    queue: str,
    target: Path,
    *,
    follow: bool = False,
    lease: float = 30.0,
    batch: int = 64,
    wait: float = 5.0,
    worker: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[PullReport], None] | None = None,
) -> PullReport:
    """Write the lines of line queue ``queue`` to ``target`` in order; see the module docstring."""
    worker = worker or f"pull-{os.getpid()}"
    state_path = target.with_name(target.name + ".jobchain-pull")
    progress = _Progress.load(state_path)
    report = PullReport()
    if progress is None:
        progress = _Progress()
        target.write_bytes(b"")
        progress.save(state_path)
    else:
        report.resumed_at = progress.size
    info_path = f"/v1/lines/{queue}"
    _wait_for_leases(backend, info_path, should_stop)
    held: dict[tuple[str, int], dict[str, Any]] = {}
    recent = set(progress.recent)
    last_extend = time.monotonic()
    with open(target, "r+b") as out:
        out.truncate(progress.size)
        out.seek(progress.size)
        while not should_stop():
            params = {"limit": batch, "lease": repr(lease), "wait": repr(wait), "worker": worker}
            answer = _retrying(
                "pull", backend, "POST", f"{info_path}/reserve", params=params, timeout=wait + backend.timeout
            )
            writable: list[dict[str, Any]] = []
            skip: list[dict[str, Any]] = []
            for message in answer["messages"]:
                key = _key(message["id"])
                if key is None:
                    (skip if message["id"] in recent else writable).append(message)
                    continue
                expected = progress.next.get(key[0], 0)
                if key[1] < expected:
                    skip.append(message)
                else:
                    held[key] = message
            # whatever is next in order, from what was just delivered and what was held back
            while True:
                nxt = [k for k in held if k[1] == progress.next.get(k[0], 0)]
                if not nxt:
                    break
                for k in sorted(nxt, key=lambda k: k[0]):
                    writable.append(held.pop(k))
                    progress.next[k[0]] = k[1] + 1
            report.duplicates += len(skip)
            if writable:
                for message in writable:
                    data = "\n".join(message["lines"])
                    if message["lines"] and not message["partial_last"]:
                        data += "\n"
                    out.write(data.encode())
                    report.lines += len(message["lines"])
                    report.messages += 1
                out.flush()
                os.fsync(out.fileno())
                progress.size = out.tell()
                progress.recent = [m["id"] for m in writable]
                recent = set(progress.recent)
                progress.save(state_path)
            done = writable + skip
            if done:
                body = {"messages": [{"id": m["id"], "token": m["token"]} for m in done]}
                _retrying("ack", backend, "POST", f"{info_path}/ack", body=body)
                if on_progress is not None:
                    on_progress(report)
            if held and time.monotonic() - last_extend > lease / 3:
                last_extend = time.monotonic()
                refs = [{"job_id": m["id"], "token": m["token"]} for m in held.values()]
                _retrying("extend", backend, "POST", "/v1/extend", body={"deliveries": refs, "lease": lease})
            if answer["messages"] or follow:
                continue
            stats = _retrying("pull", backend, "GET", info_path)
            if stats["ready"] == 0 and stats["delayed"] == 0 and stats["in_flight"] <= len(held):
                if held:
                    first = min(held)[0]
                    raise RuntimeError(
                        f"queue {queue!r} is drained but message {progress.next.get(first, 0)} of push "
                        f"{first} never came: that push was cut short"
                    )
                break
    if held:  # stopped early: give the held-back messages back at once
        give_back = [{"id": m["id"], "token": m["token"]} for m in held.values()]
        _retrying(
            "release", backend, "POST", f"{info_path}/ack", body={"messages": give_back, "release": True}
        )
    if not should_stop() and not follow:
        state_path.unlink(missing_ok=True)
    return report


def _wait_for_leases(backend: HttpBackend, info_path: str, should_stop: Callable[[], bool]) -> None:
    """Wait until no message is in flight: a puller that died may hold some, until their leases end."""
    noted = False
    while not should_stop():
        stats = _retrying("pull", backend, "GET", info_path)
        if stats["in_flight"] == 0:
            return
        if not noted:
            logger.warning("pull_waiting_for_leases", in_flight=stats["in_flight"])
            noted = True
        time.sleep(0.1)
