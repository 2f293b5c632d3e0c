"""An ETL chain: extract -> transform -> load, with retries and a step that sometimes fails.

* ``extract`` reads a batch from a flaky source: one call in five times out and
  is retried with exponential backoff (up to 4 runs);
* ``transform`` converts amounts to EUR and rejects a batch holding a corrupt
  row (about one batch in ten). Bad data does not get better by retrying, so
  ``ValueError`` is non-retryable: the job goes straight to the failed queue
  and the chain halts, ``load`` is recorded as not executed;
* ``load`` writes the batch (on its own queue, ``db``) and returns a summary.

Run it::

    jobchain run --config examples/etl.py --target etl --workers 4 --iterations 100

The report's example chains show both endings, e.g.
``extract (completed) -> transform (failed) -> load (not executed)``.
"""

from __future__ import annotations

import random
import time
from typing import Any

from jobchain import App, Retry, chain

app = App()

RATES = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}


class SourceTimeoutError(Exception):
    """The source did not answer in time (transient: worth a retry)."""


@app.task(retry=Retry(attempts=4, base=0.02, factor=2.0, cap=0.5))
def extract(source: str = "orders") -> list[dict[str, Any]]:
    """Read one batch of rows from ``source``; fails now and then, as networks do."""
    time.sleep(random.uniform(0.005, 0.02))
    if random.random() < 0.2:
        raise SourceTimeoutError(f"{source}: no answer within 5s")
    rows: list[dict[str, Any]] = [
        {"id": i, "amount": round(random.uniform(1, 500), 2), "currency": random.choice(list(RATES))}
        for i in range(random.randint(5, 20))
    ]
    if random.random() < 0.1:
        rows[random.randrange(len(rows))]["amount"] = None  # a corrupt row
    return rows


@app.task(retry=Retry(attempts=3, base=0.02, non_retryable=(ValueError,)))
def transform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert every amount to EUR; a row without an amount fails the batch for good."""
    time.sleep(random.uniform(0.002, 0.01))
    out = []
    for row in rows:
        if row["amount"] is None:
            raise ValueError(f"row {row['id']} has no amount")
        out.append({"id": row["id"], "eur": round(row["amount"] * RATES[row["currency"]], 2)})
    return out


@app.task(queue="db")
def load(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Store the batch; return how many rows and their total."""
    time.sleep(0.002 * len(rows))
    return {"rows": len(rows), "total_eur": round(sum(r["eur"] for r in rows), 2)}


etl = chain(extract, transform, load, name="etl")
