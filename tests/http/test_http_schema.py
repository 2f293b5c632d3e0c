"""The gateway's schema types and the core's wire forms describe the same JSON."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from jobchain_http import schema
from jobchain_http.wire import WireError, check

from jobchain.model import (
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    ErrorInfo,
    Failed,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    QueueStats,
    Released,
    Retried,
    SettleResult,
    Step,
    StepMember,
    StepState,
    WorkerInfo,
)


def a_job(**more: Any) -> Job:
    return Job(id="j1", task="t", args=(1, "a"), kwargs={"k": [1]}, enqueued_at=1.0, **more)


def a_chain() -> ChainRecord:
    error = ErrorInfo(type="E", message="m", traceback="tb", attempt=2, at=3.0)
    members = [
        StepMember(job_id="j1", task="t", sig="s", result_sig="r", state=StepState.COMPLETED, result=1),
        StepMember(job_id="j2", task="u", state=StepState.FAILED, error=error, expires=5.0),
    ]
    return ChainRecord(
        id="c", name="n", state=ChainState.HALTED, steps=[Step(kind="group", members=members)], created_at=1.0
    )


def a_delivery() -> Delivery:
    job = a_job(not_before=2.0, expires_at=9.0, sig="s", psig="t:p")
    job = Job.from_wire({**job.to_wire(), "chain": ["c", 0, 1]})
    return Delivery(job=job, token="tok", lease_until=4.0, worker="w", delivery_count=2)


ERROR = ErrorInfo(type="E", message="m")

PAIRS: list[tuple[Any, type[Any]]] = [
    (ERROR, schema.ErrorInfo),
    (a_job(), schema.Job),
    (a_delivery().job, schema.Job),
    (a_chain(), schema.ChainRecord),
    (a_delivery(), schema.Delivery),
    (JobRecord(job=a_job(), state=JobState.FAILED, error=ERROR, started_at=1.0), schema.JobRecord),
    (
        JobRecord(
            job=a_job(),
            state=JobState.FAILED,
            error=ERROR,
            errors=[ErrorInfo(type="E", message="m", traceback="tb", attempt=1, at=1.0, retry_in=2.5), ERROR],
            started_at=1.0,
        ),
        schema.JobRecord,
    ),
    (FailedEntry(job=a_job(), error=ERROR, failed_at=2.0, raw="garbage"), schema.FailedEntry),
    (QueueStats(queue="q", ready=1), schema.QueueStats),
    (
        WorkerInfo(name="w", host="h", pid=1, queues=["q"], started_at=1.0, heartbeat_at=1.0),
        schema.WorkerInfo,
    ),
    (SettleResult(accepted=True, chain=a_chain()), schema.SettleResult),
    (
        Completed(delivery=a_delivery(), result=[1], started_at=1.0, finished_at=2.0, result_sig="r"),
        schema.Outcome,
    ),
    (Retried(delivery=a_delivery(), error=ERROR, delay=1.0), schema.Outcome),
    (Failed(delivery=a_delivery(), error=ERROR), schema.Outcome),
    (Released(delivery=a_delivery()), schema.Outcome),
]


def _fields(kind: Any) -> set[str]:
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        info = msgspec.structs.fields(kind)
        tag = kind.__struct_config__.tag_field
        return {f.encode_name for f in info} | ({tag} if tag else set())
    return set().union(*(_fields(k) for k in kind.__args__))


@pytest.mark.parametrize(("value", "kind"), PAIRS, ids=lambda v: type(v).__name__)
def test_every_wire_form_fits_its_schema_type_and_names_no_field_the_schema_lacks(
    value: Any, kind: Any
) -> None:
    """What the core writes is what the gateway checks and documents: no field missing from either."""
    wire = value.to_wire()
    msgspec.convert(wire, kind)
    assert set(wire) <= _fields(kind)


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        (
            {"jobs": [{"id": 1, "task": "t", "enqueued_at": 1}]},
            "$.jobs[0].id",
            "expected a string, got an integer",
        ),
        (
            {"jobs": [{"id": "", "task": "t", "enqueued_at": 1}]},
            "$.jobs[0].id",
            "expected a non-empty string",
        ),
        ({"jobs": [{"id": "j", "task": "t"}]}, "$.jobs[0].enqueued_at", "is required"),
        ({"jobs": [{"id": "j", "task": "t", "enqueued_at": 1, "attempt": 0}]}, "$.jobs[0].attempt", ">= 1"),
        (
            {"jobs": [{"id": "j", "task": "t", "enqueued_at": 1, "v": 2}]},
            "$.jobs[0].v",
            "invalid enum value 2",
        ),
        ({"jobs": {}}, "$.jobs", "expected an array, got an object"),
        ([], "$", "expected an object, got an array"),
    ],
)
def test_a_body_of_the_wrong_shape_names_the_path_of_the_first_bad_value(
    body: Any, path: str, words: str
) -> None:
    with pytest.raises(WireError) as info:
        check(body, schema.bodies().enqueue)
    assert (info.value.path, words in info.value.message) == (path, True), info.value.message


def test_request_bodies_follow_the_gateways_bounds() -> None:
    """A gateway's --max-limit bounds its batches: the checks and the document use the same types."""
    small = schema.bodies(max_limit=2, max_lease=10.0)
    outcome = {"outcome": "released", "job_id": "j", "token": "t"}
    check({"outcomes": [outcome] * 2}, small.settle)
    with pytest.raises(WireError, match=r"\$\.outcomes: expected an array of length <= 2"):
        check({"outcomes": [outcome] * 3}, small.settle)
    with pytest.raises(WireError, match=r"\$\.lease: must be <= 10"):
        check({"deliveries": [], "lease": 11}, small.extend)
    assert schema.bodies(max_limit=2, max_lease=10.0) is small
