"""jobchain's backend conformance suite, run on the dictstore:// backend found through its entry point."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from jobchain_dictstore import DictStoreBackend

from jobchain import Backend, ManualClock, Plugins
from jobchain.testing import BackendConformance, MakeJob


class TestDictStore(BackendConformance):
    @pytest.fixture
    def backend(self, clock: ManualClock) -> Iterator[Backend]:
        backend = Plugins().open_backend("dictstore://", clock=clock)
        yield backend
        backend.close()


def test_backend_is_registered_by_this_distribution() -> None:
    """jobchain finds dictstore:// through the entry point of the jobchain-dictstore distribution."""
    spec = Plugins().backends.get("dictstore")
    assert spec is not None
    assert spec.distribution == "jobchain-dictstore"


def test_jobs_are_stored_as_json_text(make_job: MakeJob) -> None:
    """Each enqueued job is kept as the JSON text of its wire form."""
    backend = Plugins().open_backend("dictstore://", clock=ManualClock())
    assert isinstance(backend, DictStoreBackend)
    job = make_job("resize", args=[{"w": 10}])
    backend.enqueue([job])
    assert json.loads(backend.documents[job.id]) == job.to_wire()
