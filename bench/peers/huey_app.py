"""huey adapter: ``huey_consumer huey_app.huey -w 8 -k process -n`` runs the jobs; run as a script it submits.

Layout: 8 process workers (``-k process``): huey has one kind of worker per
consumer (threads, greenlets or processes), and its docs advise processes for
CPU-bound work; the jobs here are CPU (no-op) or sleeps, and 8 threads in one
process would share one GIL on a 2-core machine. The chain is a huey pipeline
(``step1.s(i).then(step2).then(step3)``, each step called with the previous
result); huey has no bulk enqueue, so ``bulk`` submits one by one.
"""

from __future__ import annotations

import fifo_record as fr
from _adapter import QUEUE, REDIS_URL, serve
from huey import RedisHuey

huey = RedisHuey(name=QUEUE, url=REDIS_URL)
noop = huey.task(name="noop")(fr.noop)
step1 = huey.task(name="step1")(fr.step1)
step2 = huey.task(name="step2")(fr.step2)
step3 = huey.task(name="step3")(fr.step3)
sleeper = huey.task(name="sleep")(fr.sleeper)


class Client:
    bulk_mode = "1-by-1 (no bulk API)"

    def enqueue(self, i: int) -> None:
        noop(i)

    def bulk(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            noop(i)

    def chain(self, i: int) -> None:
        huey.enqueue(step1.s(i).then(step2).then(step3))

    def sleep(self, i: int, ms: int) -> None:
        sleeper(i, ms)

    def close(self) -> None:
        pass


if __name__ == "__main__":
    serve(Client())
