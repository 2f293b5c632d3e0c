"""Priority aging.

A job's effective priority at time ``t`` is
``priority + (t - enqueued_at) / aging_interval``: the longer it waits, the
more urgent it gets, so nothing starves. Because ``t`` is common to every job
compared at one moment, ranking by effective priority is ranking by the static
key ``enqueued_at / aging_interval - priority`` (smaller first). Backends that
keep jobs sorted by that key (a heap, a sorted set) get exact aging with no
promotion pass; ties are broken by submit order (FIFO).

Starvation bound: a job of priority ``p_low`` that has waited
``(p_high - p_low) * aging_interval`` seconds is served before any job of
priority ``p_high`` enqueued after that moment.
"""

from __future__ import annotations

from jobchain.model import Job

__all__ = ["DEFAULT_AGING_INTERVAL", "effective_priority", "order_key"]

DEFAULT_AGING_INTERVAL = 10.0


def effective_priority(job: Job, now: float, interval: float = DEFAULT_AGING_INTERVAL) -> float:
    """The job's priority at ``now``, raised by the time it has waited since enqueue."""
    return job.priority + (now - job.enqueued_at) / interval


def order_key(job: Job, interval: float = DEFAULT_AGING_INTERVAL) -> float:
    """Static sort key equivalent to effective priority: smaller is served first."""
    return job.enqueued_at / interval - job.priority
