"""``jobchain http pull``: a line queue into a file, in order, each byte once, resumable.

Pull writes messages in order and acknowledges a message only after its lines
are written, flushed and fsynced and the progress file (``FILE.jobchain-pull``)
says so. Killed at any point and started again, it cuts the file back to the
last recorded size, skips what it already wrote and goes on. Messages keyed
``PUSH.START.END`` are placed by their byte range: the progress file keeps,
per push, the offset written up to, so a message seen again (a push run
twice) is skipped, and one that overlaps what was written (a re-run that cut
the text differently) adds only its new bytes. Messages without such a key are
written as they come (the last ids written are remembered, to skip a
redelivery after a crash).

Because a delivery that a dead puller held comes back only when its lease
ends, a starting puller first waits until no message of the queue is in
flight, so nothing newer overtakes it. One puller per queue keeps the order;
without ``follow`` it stops when the queue is drained: nothing ready, delayed
or in flight.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import structlog
from attrs import define, field

from jobchain_http._lineio import QueueNotFoundError, TargetExistsError, TransferError, parse_key, retrying
from jobchain_http.client import HttpBackend

__all__ = ["Existing", "PullReport", "pull"]

logger = structlog.get_logger("jobchain_http.transfer")

#: what to do with a target file that exists (and no progress file says a pull of it was cut short)
Existing = Literal["refuse", "append", "replace"]


@define
class PullReport:
    lines: int = 0
    messages: int = 0
    duplicates: int = 0
    resumed_at: int | None = None


@define
class _Progress:
    """What the progress file records: the file's good size, the offset written per push, recent ids."""

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


def _data(message: dict[str, Any]) -> bytes:
    data = "\n".join(message["lines"])
    if message["lines"] and not message["partial_last"]:
        data += "\n"
    return data.encode()


def _start(
    backend: HttpBackend, queue: str, target: Path, state_path: Path, existing: Existing, follow: bool
) -> tuple[_Progress, PullReport]:
    """The progress to go on from: a cut-short pull's, or a new one (the queue and the file checked)."""
    progress = _Progress.load(state_path)
    report = PullReport()
    if progress is not None:
        report.resumed_at = progress.size
        return progress, report
    info = retrying("pull", backend, "GET", f"/v1/lines/{queue}")
    if not info.get("exists", True):
        if not follow:
            raise QueueNotFoundError(
                f"line queue {queue!r} does not exist on {backend.url} (nothing was ever pushed to it)"
            )
        logger.warning("pull_queue_not_yet", queue=queue, note="nothing pushed yet; waiting for lines")
    if target.exists() and existing == "refuse":
        raise TargetExistsError(f"{target} exists: pass --append to add to it or --force to replace it")
    progress = _Progress()
    if existing == "append" and target.exists():
        progress.size = target.stat().st_size
    else:
        target.write_bytes(b"")
    progress.save(state_path)
    return progress, report


def pull(
    backend: HttpBackend,
    queue: str,
    target: Path,
    *,
    follow: bool = False,
    existing: Existing = "refuse",
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
    progress, report = _start(backend, queue, target, state_path, existing, follow)
    info_path = f"/v1/lines/{queue}"
    _wait_for_leases(backend, info_path, should_stop)
    held: dict[tuple[str, int, int], dict[str, Any]] = {}
    recent = set(progress.recent)
    last_extend = time.monotonic()
    with open(target, "r+b") as out:
        out.truncate(progress.size)
        out.seek(progress.size)
        while not should_stop():
            params = {"limit": batch, "lease": repr(lease), "wait": repr(wait), "worker": worker}
            answer = retrying(
                "pull", backend, "POST", f"{info_path}/reserve", params=params, timeout=wait + backend.timeout
            )
            writable: list[tuple[dict[str, Any], bytes]] = []
            skip: list[dict[str, Any]] = []
            for message in answer["messages"]:
                key = parse_key(message["id"])
                data = _data(message)
                if key is None or key[2] - key[1] != len(data):
                    if message["id"] in recent:
                        skip.append(message)
                    else:
                        writable.append((message, data))
                elif key[2] <= progress.next.get(key[0], 0):
                    skip.append(message)
                else:
                    held[key] = message
            # whatever comes next in its push, from what was just delivered and what was held back
            moved = True
            while moved:
                moved = False
                for key in sorted(held):
                    push_id, start, end = key
                    written = progress.next.get(push_id, 0)
                    if end <= written:
                        skip.append(held.pop(key))
                    elif start <= written:
                        message = held.pop(key)
                        writable.append((message, _data(message)[written - start :]))
                        progress.next[push_id] = end
                        moved = True
            report.duplicates += len(skip)
            if writable:
                for message, data in writable:
                    out.write(data)
                    report.lines += data.count(b"\n") + (1 if message["partial_last"] and data else 0)
                    report.messages += 1
                out.flush()
                os.fsync(out.fileno())
                progress.size = out.tell()
                progress.recent = [m["id"] for m, _ in writable]
                recent = set(progress.recent)
                progress.save(state_path)
            done = [m for m, _ in writable] + skip
            if done:
                body = {"messages": [{"id": m["id"], "token": m["token"]} for m in done]}
                retrying("ack", backend, "POST", f"{info_path}/ack", body=body)
                if on_progress is not None:
                    on_progress(report)
            if held and time.monotonic() - last_extend > lease / 3:
                last_extend = time.monotonic()
                refs = [{"job_id": m["id"], "token": m["token"]} for m in held.values()]
                retrying("extend", backend, "POST", "/v1/extend", body={"deliveries": refs, "lease": lease})
            if answer["messages"] or follow:
                continue
            stats = retrying("pull", backend, "GET", info_path)
            if stats["ready"] == 0 and stats["delayed"] == 0 and stats["in_flight"] <= len(held):
                if held:
                    first = min(held)[0]
                    raise TransferError(
                        f"queue {queue!r} is drained but push {first} stops at byte "
                        f"{progress.next.get(first, 0)}: the rest never came "
                        f"(push it again with --id {first})"
                    )
                break
    if held:  # stopped early: give the held-back messages back at once
        give_back = [{"id": m["id"], "token": m["token"]} for m in held.values()]
        retrying(
            "release", backend, "POST", f"{info_path}/ack", body={"messages": give_back, "release": True}
        )
    if not should_stop() and not follow:
        state_path.unlink(missing_ok=True)
    return report


def _wait_for_leases(backend: HttpBackend, info_path: str, should_stop: Callable[[], bool]) -> None:
    """Wait until no message is in flight: a puller that died may hold some, until their leases end."""
    noted = False
    while not should_stop():
        stats = retrying("pull", backend, "GET", info_path)
        if stats["in_flight"] == 0:
            return
        if not noted:
            logger.warning("pull_waiting_for_leases", in_flight=stats["in_flight"])
            noted = True
        time.sleep(0.1)
