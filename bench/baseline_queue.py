"""The bare redis-py baseline of ``bench_redis.py``: the smallest reliable list queue.

* enqueue: ``LPUSH queue <message>`` (one command per job; ``enqueue_many``
  sends many messages per ``LPUSH`` in one pipeline);
* worker thread: ``BLMOVE queue processing RIGHT LEFT`` (the message is never
  out of Redis: it moves atomically into the thread's own processing list),
  run the task, then ``LREM processing 1 <message>`` (the ack);
* a chain step pushes the next step (``LPUSH``) before it acks, both in one
  non-transactional pipeline (Redis runs them in order, so a crash between the
  two leaves the step to run again, never the chain lost).

A message is the JSON ``{"id", "task", "args", "next", "chain"}``; ``next`` lists
the tasks of the chain's later steps, each called with the previous result.
There are no leases, results, retries or events: a worker that dies leaves its
messages in its processing list, and :meth:`BaselineQueue.recover` moves them
back. This is the floor a Redis job queue built on redis-py is measured against.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

__all__ = ["BaselineQueue", "BaselineWorker"]

#: the message that tells one worker thread to exit
STOP = b'{"stop":true}'


class BaselineQueue:
    """One list queue under ``name`` on ``client`` (bytes replies: ``decode_responses=False``)."""

    def __init__(self, client: redis.Redis, name: str = "bench-baseline") -> None:
        #: redis-py types replies and arguments as sync/async and str unions; used as Any
        self.client: Any = client
        self.name = name
        self.queue = f"{name}:queue"

    def processing(self, consumer: str) -> str:
        """The processing list of one consumer (one worker thread)."""
        return f"{self.name}:processing:{consumer}"

    @staticmethod
    def message(
        task: str, args: Sequence[Any], *, next_steps: Sequence[str] = (), chain: str | None = None
    ) -> bytes:
        body: dict[str, Any] = {"id": secrets.token_hex(8), "task": task, "args": list(args)}
        if next_steps:
            body["next"] = list(next_steps)
        if chain is not None:
            body["chain"] = chain
        return json.dumps(body, separators=(",", ":")).encode()

    def enqueue(
        self, task: str, *args: Any, next_steps: Sequence[str] = (), chain: str | None = None
    ) -> None:
        """One ``LPUSH`` of one message."""
        self.client.lpush(self.queue, self.message(task, args, next_steps=next_steps, chain=chain))

    def enqueue_many(self, calls: Iterable[tuple[str, Sequence[Any]]], chunk: int = 1000) -> int:
        """``LPUSH`` many messages, ``chunk`` per command, all in one pipeline; returns how many."""
        pipe = self.client.pipeline(transaction=False)
        batch: list[bytes] = []
        count = 0
        for task, args in calls:
            batch.append(self.message(task, args))
            if len(batch) >= chunk:
                pipe.lpush(self.queue, *batch)
                count += len(batch)
                batch = []
        if batch:
            pipe.lpush(self.queue, *batch)
            count += len(batch)
        pipe.execute()
        return count

    def stop_workers(self, threads: int) -> None:
        """Push one stop message per worker thread (each thread exits after taking one)."""
        if threads > 0:
            self.client.rpush(self.queue, *([STOP] * threads))

    def recover(self, consumer: str) -> int:
        """Move what a dead consumer held back to the head of the queue; returns how many."""
        moved = 0
        while self.client.lmove(self.processing(consumer), self.queue, "RIGHT", "RIGHT") is not None:
            moved += 1
        return moved

    def depth(self) -> int:
        return int(self.client.llen(self.queue))

    def clear(self) -> None:
        names = list(self.client.scan_iter(match=f"{self.name}:*", count=1000))
        if names:
            self.client.delete(*names)


class BaselineWorker:
    """``threads`` threads, each a consumer with its own processing list.

    ``on_done(message, slot)`` is called after a job is acknowledged, on the
    thread (``slot`` is the thread's index) that ran it.
    """

    def __init__(
        self,
        queue: BaselineQueue,
        tasks: Mapping[str, Callable[..., Any]],
        *,
        threads: int,
        name: str,
        on_done: Callable[[dict[str, Any], int], None] | None = None,
        block: float = 1.0,
    ) -> None:
        self.queue = queue
        self.tasks = dict(tasks)
        self.name = name
        self.on_done = on_done
        self.block = block
        self.processed = [0] * threads
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(slot,), name=f"baseline-{slot}", daemon=True)
            for slot in range(threads)
        ]
        self.errors: list[BaseException] = []

    def start(self) -> BaselineWorker:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Wait for every thread to take its stop message (see :meth:`BaselineQueue.stop_workers`)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _run(self, slot: int) -> None:
        try:
            self._loop(slot)
        except BaseException as exc:  # recorded: the benchmark fails loudly on any error
            self.errors.append(exc)

    def _loop(self, slot: int) -> None:
        q = self.queue
        client = q.client
        source = q.queue
        processing = q.processing(f"{self.name}-{slot}")
        tasks = self.tasks
        on_done = self.on_done
        while True:
            raw = client.blmove(source, processing, self.block, "RIGHT", "LEFT")
            if raw is None:
                if self._stopping.is_set():
                    return
                continue
            if raw == STOP:
                client.lrem(processing, 1, raw)
                return
            message = json.loads(raw)
            result = tasks[message["task"]](*message["args"])
            following = message.get("next")
            if following:
                pipe = client.pipeline(transaction=False)
                pipe.lpush(
                    source,
                    q.message(following[0], [result], next_steps=following[1:], chain=message.get("chain")),
                )
                pipe.lrem(processing, 1, raw)
                pipe.execute()
            else:
                client.lrem(processing, 1, raw)
            self.processed[slot] += 1
            if on_done is not None:
                on_done(message, slot)
