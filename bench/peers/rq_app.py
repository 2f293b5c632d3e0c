"""RQ adapter: 8 ``rq worker -w rq.worker.SimpleWorker`` processes run the jobs; run as a script it submits.

Layout: 8 worker processes of ``SimpleWorker``: an RQ worker runs one job at
a time, so 8-way concurrency takes 8 workers; the default ``Worker`` forks a
child per job, which RQ's docs offer ``SimpleWorker`` to avoid where jobs are
trusted and short. The chain is three jobs enqueued together, each step
``depends_on`` the one before (RQ runs a dependent once its parent finished;
every step is called with the chain's number, as ``depends_on`` does not pass
results); the bulk API is ``Queue.enqueue_many`` in one pipeline.
"""

from __future__ import annotations

import fifo_record as fr
from _adapter import QUEUE, REDIS_URL, serve
from redis import Redis
from rq import Queue

connection = Redis.from_url(REDIS_URL)
queue = Queue(QUEUE, connection=connection)


class Client:
    bulk_mode = "Queue.enqueue_many (one pipeline)"

    def enqueue(self, i: int) -> None:
        queue.enqueue(fr.noop, i)

    def bulk(self, start: int, count: int) -> None:
        with connection.pipeline() as pipe:
            queue.enqueue_many(
                [Queue.prepare_data(fr.noop, (i,)) for i in range(start, start + count)], pipeline=pipe
            )
            pipe.execute()

    def chain(self, i: int) -> None:
        first = queue.enqueue(fr.step1, i)
        second = queue.enqueue(fr.step2, i, depends_on=first)
        queue.enqueue(fr.step3, i, depends_on=second)

    def sleep(self, i: int, ms: int) -> None:
        queue.enqueue(fr.sleeper, i, ms)

    def close(self) -> None:
        connection.close()


if __name__ == "__main__":
    serve(Client())
