"""The ``dictstore://`` backend: jobchain's in-memory engine, with every job stored as JSON text.

A networked backend has to serialise what it stores; this one does it too, so
running jobchain's conformance suite on it shows that the wire format
(``Job.to_wire`` / ``Job.from_wire``) carries every job, and every result,
unchanged. ``dictstore://NAME`` returns one shared store per name in a process;
plain ``dictstore://`` is a new private store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from attrs import evolve

from jobchain import ChainRecord, Job
from jobchain.memory import MemoryBackend
from jobchain.model import Completed, Outcome, SettleResult

__all__ = ["DictStoreBackend"]

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class DictStoreBackend(MemoryBackend):
    """Jobs and results cross JSON text on their way in, the way they would over a network.

    It declares what ``MemoryBackend`` declares (the capabilities ``FailedQueue``,
    ``WorkerRegistry`` and ``Stats``), by inheritance.
    """

    def __init__(self, url: str = "dictstore://", **options: Any) -> None:
        super().__init__(url, **options)
        #: the stored form of every job, by id, as a remote store would hold it
        self.documents: dict[str, str] = {}

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        stored: list[Job] = []
        for job in jobs:
            text = self.documents.setdefault(job.id, _encoder.encode(job.to_wire()))
            stored.append(Job.from_wire(json.loads(text)))
        super().enqueue(stored, chains)

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        wired: list[Outcome] = [
            evolve(o, result=json.loads(_encoder.encode(o.result))) if isinstance(o, Completed) else o
            for o in outcomes
        ]
        return super().settle(wired)
