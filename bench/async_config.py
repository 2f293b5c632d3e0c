"""The config of ``bench_async.py``: one ``async def`` task, ``nap(i, ms)``, each run recorded.

``nap`` (from :mod:`fifo_record`, shared with the peers' adapters) writes a
``y`` record to the benchmark's FIFO when it starts, awaits
``asyncio.sleep(ms / 1000)`` and writes a ``z`` record: the benchmark counts
every job outside the system under test and times the drain from the first
start to the last end. The worker runs it on its event loop
(``jobchain worker --async-concurrency N``).
"""

from __future__ import annotations

from fifo_record import nap

from jobchain import App

__all__ = ["app", "nap_task"]

app = App()  # the backend comes from `jobchain worker --backend`
nap_task = app.task(name="nap")(nap)
