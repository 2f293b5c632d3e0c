"""Dramatiq adapter: ``dramatiq dramatiq_app -p 2 -t 4`` runs the jobs; run as a script it submits.

Layout: 2 processes x 4 threads, Dramatiq's own model (worker processes, each
with a pool of worker threads; its docs default to one process per core and 8
threads each): one process per core, and 8-way concurrency in all. The chain
is a ``dramatiq.pipeline`` (each step gets the previous result as its last
argument); Dramatiq has no bulk enqueue, so ``bulk`` submits one by one.
"""

from __future__ import annotations

import dramatiq
import fifo_record as fr
from _adapter import QUEUE, REDIS_URL, serve
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=REDIS_URL, namespace=QUEUE)
dramatiq.set_broker(broker)


def actor(fn: object, name: str) -> dramatiq.Actor:  # type: ignore[type-arg]
    return dramatiq.actor(fn, actor_name=name, queue_name=QUEUE, max_retries=0)  # type: ignore[call-overload,no-any-return]


noop = actor(fr.noop, "noop")
step1 = actor(fr.step1, "step1")
step2 = actor(fr.step2, "step2")
step3 = actor(fr.step3, "step3")
sleeper = actor(fr.sleeper, "sleep")


class Client:
    bulk_mode = "1-by-1 (no bulk API)"

    def enqueue(self, i: int) -> None:
        noop.send(i)

    def bulk(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            noop.send(i)

    def chain(self, i: int) -> None:
        dramatiq.pipeline([step1.message(i), step2.message(), step3.message()]).run()

    def sleep(self, i: int, ms: int) -> None:
        sleeper.send(i, ms)

    def close(self) -> None:
        broker.close()


if __name__ == "__main__":
    serve(Client())
