"""Every Redis key jobchain's Redis backends use, built in this one module.

All keys of one application share the hash tag ``{prefix}``, so every
transaction (which may touch a job, its chain and the queue of the chain's
next step) stays in one slot: the layout is valid for Redis Cluster as it is.
Several applications share one Redis with different prefixes.

=================================  ======  ==================================================
key                                type    holds
=================================  ======  ==================================================
``{p}:queues``                     set     names of every queue seen
``{p}:job:<id>``                   hash    ``job`` (wire JSON), ``state``, ``result``,
                                           ``error``, ``started_at``, ``finished_at``,
                                           ``token``, ``worker``, ``lease_until``,
                                           ``deliveries``, ``queue``, ``raw`` (the stored
                                           text of a job that could not be read, filed as
                                           failed); redis-streams adds
                                           ``stream``, ``entry``, ``band`` (where its entry is)
``{p}:bands:<queue>``              zset    band number -> band number: the bands that exist
                                           (redis-lists: the non-empty ones)
``{p}:fresh:<queue>``              zset    redis-streams: the bands that may hold entries not
                                           yet delivered to the consumer group
``{p}:ready:<queue>:<band>``       list    redis-lists: ready job ids of one band, oldest at the head
``{p}:delayed:<queue>``            zset    job id -> not_before
``{p}:leases:<queue>``             zset    job id -> lease_until (jobs in flight); in
                                           redis-streams a score <= now marks a pending
                                           entry to claim again (0 after a release)
``{p}:signal:<queue>``             list    wake-ups for blocked reservers (trimmed)
``{p}:proc:<worker>``              list    job ids a worker holds (the reliable-queue list)
``{p}:stream:<queue>:<band>``      stream  redis-streams: entries ``id=<job id>`` of one band, with
                                           the consumer group ``jobchain``
``{p}:wake:<queue>``               stream  redis-streams: wake-ups for blocked reservers (MAXLEN 16)
``{p}:taken:<queue>``              set     redis-streams: handed-off jobs, leased with no stream entry
``{p}:chain:<id>``                 string  the chain record, JSON
``{p}:failed``                     zset    job id -> failed_at (the failed queue)
``{p}:failed:<queue>``             zset    job id -> failed_at, per queue (for counts)
``{p}:workers``                    zset    worker name -> heartbeat expiry
``{p}:worker:<name>``              string  the worker's registration, JSON
``{p}:stop``                       set     names of workers asked to stop
=================================  ======  ==================================================
"""

from __future__ import annotations

from attrs import frozen

__all__ = ["DEFAULT_PREFIX", "Keys"]

DEFAULT_PREFIX = "jobchain"


@frozen
class Keys:
    """Key names under one prefix; ``Keys("app").job("42") == "{app}:job:42"``."""

    prefix: str = DEFAULT_PREFIX

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def queues(self) -> str:
        return f"{self.tag}:queues"

    def job(self, job_id: str) -> str:
        return f"{self.tag}:job:{job_id}"

    def bands(self, queue: str) -> str:
        return f"{self.tag}:bands:{queue}"

    def fresh(self, queue: str) -> str:
        return f"{self.tag}:fresh:{queue}"

    def ready(self, queue: str, band: int) -> str:
        return f"{self.tag}:ready:{queue}:{band}"

    def delayed(self, queue: str) -> str:
        return f"{self.tag}:delayed:{queue}"

    def leases(self, queue: str) -> str:
        return f"{self.tag}:leases:{queue}"

    def stream(self, queue: str, band: int) -> str:
        return f"{self.tag}:stream:{queue}:{band}"

    def taken(self, queue: str) -> str:
        return f"{self.tag}:taken:{queue}"

    def wake(self, queue: str) -> str:
        return f"{self.tag}:wake:{queue}"

    def signal(self, queue: str) -> str:
        return f"{self.tag}:signal:{queue}"

    def processing(self, worker: str) -> str:
        return f"{self.tag}:proc:{worker}"

    def chain(self, chain_id: str) -> str:
        return f"{self.tag}:chain:{chain_id}"

    @property
    def failed(self) -> str:
        return f"{self.tag}:failed"

    def failed_in(self, queue: str) -> str:
        return f"{self.tag}:failed:{queue}"

    @property
    def workers(self) -> str:
        return f"{self.tag}:workers"

    def worker(self, name: str) -> str:
        return f"{self.tag}:worker:{name}"

    @property
    def stop(self) -> str:
        return f"{self.tag}:stop"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this prefix."""
        return f"{self.tag}:*"
