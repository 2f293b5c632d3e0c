"""Every Redis key jobchain's Redis backends use, built in this one module.

Keys carry a Redis Cluster hash tag (the text between the first ``{`` and
``}``), so that every transaction stays in one slot. There are two layouts:

* **one tag** (``Keys("app")``, a single server or Sentinel): every key of the
  application has the tag ``{app}``; a transaction may touch a job, its chain
  and the queue of the chain's next step at once.
* **spread** (``Keys("app", spread=True)``, a Redis Cluster): each queue has
  a tag of its own, ``{app:q:<queue>}``, held by its ready structures, leases,
  processing lists, failed set, outbox and the hashes of its jobs; each chain
  record has its own tag, ``{app:chain:<id>}``; what belongs to no queue
  (the queue list, the worker registry, the paused set, the cancel requests) keeps ``{app}``.
  Queues spread over the shards, and a transaction never spans two queues or
  a queue and a chain: a chain's next step goes through the completing job's
  outbox (see :mod:`jobchain_redis.common`).

Several applications share one Redis with different prefixes. Below, ``{q}``
is the queue's tag (``{p}`` in the one-tag layout) and ``{c}`` the chain's.

=================================  ======  ==================================================
key                                type    holds
=================================  ======  ==================================================
``{p}:queues``                     set     names of every queue seen
``{q}:job:<id>``                   hash    ``job`` (wire JSON), ``state``, ``result``,
                                           ``error``, ``started_at``, ``finished_at``,
                                           ``token``, ``worker``, ``lease_until``,
                                           ``deliveries``, ``running`` (the token of the
                                           delivery marked running), ``crashes`` (leases
                                           of this attempt lost while marked running),
                                           ``queue``, ``raw`` (the stored
                                           text of a job that could not be read, filed as
                                           failed); redis-streams adds
                                           ``stream``, ``entry``, ``band`` (where its entry is)
``{q}:bands:<queue>``              zset    band number -> band number: the bands that exist
                                           (redis-lists: the non-empty ones)
``{q}:fresh:<queue>``              zset    redis-streams: the bands that may hold entries not
                                           yet delivered to the consumer group
``{q}:ready:<queue>:<band>``       list    redis-lists: ready job ids of one band, oldest at the head
``{q}:delayed:<queue>``            zset    job id -> not_before
``{q}:leases:<queue>``             zset    job id -> lease_until (jobs in flight); in
                                           redis-streams a score <= now marks a pending
                                           entry to claim again (0 after a release)
``{q}:signal:<queue>``             list    wake-ups for blocked reservers (trimmed)
``{q}:proc:<worker>``              list    job ids a worker holds (the reliable-queue list)
``{q}:stream:<queue>:<band>``      stream  redis-streams: entries ``id=<job id>`` of one band, with
                                           the consumer group ``jobchain``
``{q}:wake:<queue>``               stream  redis-streams: wake-ups for blocked reservers (MAXLEN 16)
``{q}:taken:<queue>``              set     redis-streams: handed-off jobs, leased with no stream entry
``{q}:failed:<queue>``             zset    job id -> failed_at (the failed queue, per queue)
``{q}:finished:<queue>:<state>``   zset    job id -> finished_at, for browsing: ``succeeded``
                                           (written by the settle transaction, trimmed to
                                           ``result_ttl``) and ``cancelled``
``{q}:outbox:<queue>``             hash    spread layout: job id -> a finished chain step's
                                           event, until its chain has moved on
``{c}:chain:<id>``                 string  the chain record, JSON
``{p}:workers``                    zset    worker name -> heartbeat expiry
``{p}:worker:<name>``              string  the worker's registration, JSON
``{p}:stop``                       set     names of workers asked to stop
``{p}:paused``                     set     names of the paused queues
``{q}:unique:<queue>:<key>``       string  a held uniqueness key: the holder's job id, or
                                           ``"<id> <until>"`` for a key held for a time
``{p}:cancel``                     zset    job id -> when a running job was asked to stop (Cancel)
``{p}:schedules``                  hash    schedule name -> its latest slot enqueued and that
                                           slot's job id, JSON (ScheduleSlots)
``{p}:schedules:paused``           set     names of the paused schedules
=================================  ======  ==================================================
"""

from __future__ import annotations

from attrs import frozen

__all__ = ["DEFAULT_PREFIX", "Keys"]

DEFAULT_PREFIX = "jobchain"


@frozen
class Keys:
    """Key names under one prefix; ``Keys("app").job("42") == "{app}:job:42"``.

    With ``spread=True`` (Redis Cluster) each queue and each chain has a hash
    tag of its own; a job's key then depends on its queue, which key methods
    of a job therefore take.
    """

    prefix: str = DEFAULT_PREFIX
    spread: bool = False

    @property
    def tag(self) -> str:
        """The application's tag, of the keys that belong to no queue."""
        return "{" + self.prefix + "}"

    def queue_tag(self, queue: str) -> str:
        """The tag every key of ``queue`` starts with."""
        return "{" + self.prefix + ":q:" + queue + "}" if self.spread else self.tag

    def chain_tag(self, chain_id: str) -> str:
        return "{" + self.prefix + ":chain:" + chain_id + "}" if self.spread else self.tag

    @property
    def queues(self) -> str:
        return f"{self.tag}:queues"

    def job(self, job_id: str, queue: str | None = None) -> str:
        if self.spread:
            if queue is None:
                raise ValueError("a job's key in the spread layout needs its queue")
            return f"{self.queue_tag(queue)}:job:{job_id}"
        return f"{self.tag}:job:{job_id}"

    def bands(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:bands:{queue}"

    def fresh(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:fresh:{queue}"

    def ready(self, queue: str, band: int) -> str:
        return f"{self.queue_tag(queue)}:ready:{queue}:{band}"

    def delayed(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:delayed:{queue}"

    def leases(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:leases:{queue}"

    def stream(self, queue: str, band: int) -> str:
        return f"{self.queue_tag(queue)}:stream:{queue}:{band}"

    def taken(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:taken:{queue}"

    def wake(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:wake:{queue}"

    def signal(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:signal:{queue}"

    def processing(self, worker: str, queue: str | None = None) -> str:
        """The worker's processing list; in the spread layout one per queue (``queue`` required)."""
        if self.spread:
            if queue is None:
                raise ValueError("a processing list in the spread layout needs its queue")
            return f"{self.queue_tag(queue)}:proc:{worker}"
        return f"{self.tag}:proc:{worker}"

    def failed_in(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:failed:{queue}"

    def finished(self, queue: str, state: str) -> str:
        """The browse index of ``queue``'s jobs that ended in ``state`` (``succeeded``, ``cancelled``)."""
        return f"{self.queue_tag(queue)}:finished:{queue}:{state}"

    def outbox(self, queue: str) -> str:
        return f"{self.queue_tag(queue)}:outbox:{queue}"

    def unique(self, queue: str, key: str) -> str:
        """A uniqueness key of ``queue``: in the queue's tag, so it hashes with the jobs it guards."""
        return f"{self.queue_tag(queue)}:unique:{queue}:{key}"

    def chain(self, chain_id: str) -> str:
        return f"{self.chain_tag(chain_id)}:chain:{chain_id}"

    @property
    def workers(self) -> str:
        return f"{self.tag}:workers"

    def worker(self, name: str) -> str:
        return f"{self.tag}:worker:{name}"

    @property
    def stop(self) -> str:
        return f"{self.tag}:stop"

    @property
    def paused(self) -> str:
        return f"{self.tag}:paused"

    @property
    def cancel(self) -> str:
        return f"{self.tag}:cancel"

    @property
    def schedules(self) -> str:
        return f"{self.tag}:schedules"

    @property
    def schedules_paused(self) -> str:
        return f"{self.tag}:schedules:paused"

    @property
    def patterns(self) -> tuple[str, ...]:
        """SCAN patterns that match every key of this prefix, in either layout."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return ("{" + escaped + "}:*", "{" + escaped + ":q:*", "{" + escaped + ":chain:*")
