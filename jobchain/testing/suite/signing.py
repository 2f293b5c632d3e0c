"""Signed jobs: a backend stores ``Job.sig``/``psig`` and the chain members' signatures unchanged."""

from __future__ import annotations

from attrs import evolve

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.canvas import chain, group
from jobchain.clock import ManualClock
from jobchain.model import Completed
from jobchain.plugins import Plugins
from jobchain.signing import check_job, sign_result
from jobchain.testing.helpers import MakeJob, failed, reserve, reserve_one, retried
from jobchain.testing.suite._base import ConformanceBase
from jobchain.testing.suite.chains import declare_tasks

__all__ = ["SignedJobs"]

_KEYS = ["conformance-signing-key-0123456789"]


class SignedJobs(ConformanceBase):
    """What a worker verifies must reach it as the App signed it (docs/security.md)."""

    def test_signature_survives_storage_and_retry(
        self, backend: Backend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """``sig`` and ``psig`` come back unchanged from reserve, after a retry and in the failed record."""
        job = evolve(make_job(args=["x"]), sig="v1.signature", psig="t:v1.previous")
        backend.enqueue([job])
        first = reserve_one(backend)
        assert (first.job.sig, first.job.psig) == (job.sig, job.psig)
        backend.settle([retried(first, 1.0, clock=clock)])
        clock.advance(2.0)
        again = reserve_one(backend)
        assert (again.job.sig, again.job.psig) == (job.sig, job.psig)
        backend.settle([failed(again, clock=clock)])
        record = backend.get_job(job.id)
        assert record is not None
        assert (record.job.sig, record.job.psig) == (job.sig, job.psig)

    def test_signed_chain_steps_verify(self, backend: Backend, clock: ManualClock) -> None:
        """Each step the backend builds carries signatures that verify, a group's fan-in included."""
        app = App(backend=backend, clock=clock, plugins=Plugins(entry_points=False), signing_keys=_KEYS)
        signer = app.signer
        fetch, total = declare_tasks(app, "fetch", "total")
        handle = chain(group(fetch.s(1), fetch.s(2)), total.s(unit="kb")).submit("img")
        stored = backend.get_chain(handle.id)
        assert stored is not None
        assert all(m.sig for step in stored.steps for m in step.members)
        outcomes = []
        for delivery in reserve(backend, limit=2):
            assert check_job(signer, delivery.job) is None
            result = f"r{delivery.job.args[1]}"
            outcomes.append(
                Completed(
                    delivery=delivery,
                    result=result,
                    started_at=clock.now(),
                    finished_at=clock.now(),
                    result_sig=sign_result(signer, delivery.job, result),
                )
            )
        backend.settle(outcomes)
        following = reserve_one(backend).job
        assert following.args == (["r1", "r2"],)
        assert following.psig is not None
        assert check_job(signer, following) is None
        assert check_job(signer, evolve(following, args=(["r1", "evil"],))) is not None
