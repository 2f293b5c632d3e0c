"""Celery adapter: ``celery -A celery_app worker -P prefork -c 8`` runs the jobs; as a script it submits.

Layout: the prefork pool with 8 child processes (Celery's default pool, and
the one its docs advise for CPU-bound work; one job per child at a time), with
gossip, mingle and heartbeats off as Celery's docs suggest for a worker that
does not need them. Redis is both broker and result backend (results expire
after an hour). The chain is a Celery ``chain`` (each step gets the previous
result); Celery has no bulk enqueue, so ``bulk`` submits one by one.
"""

from __future__ import annotations

import fifo_record as fr
from _adapter import QUEUE, REDIS_URL, serve
from celery import Celery, chain

app = Celery(QUEUE, broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    result_expires=3600,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
)
noop = app.task(name="noop")(fr.noop)
step1 = app.task(name="step1")(fr.step1)
step2 = app.task(name="step2")(fr.step2)
step3 = app.task(name="step3")(fr.step3)
sleeper = app.task(name="sleep")(fr.sleeper)


class Client:
    bulk_mode = "1-by-1 (no bulk API)"

    def enqueue(self, i: int) -> None:
        noop.delay(i)

    def bulk(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            noop.delay(i)

    def chain(self, i: int) -> None:
        chain(step1.s(i), step2.s(), step3.s()).apply_async()

    def sleep(self, i: int, ms: int) -> None:
        sleeper.delay(i, ms)

    def close(self) -> None:
        app.close()


if __name__ == "__main__":
    serve(Client())
