"""The one JSON form of every value that crosses a process boundary (``to_wire``/``from_wire``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
    outcome_from_wire,
)

#: a chain record as the Redis backends stored it before the core owned the format (compact, keys in order)
STORED_CHAIN = (
    '{"v":1,"id":"c1","name":"ingest","kind":"chain","state":"halted","steps":[{"kind":"task","members":'
    '[{"job_id":"j1","task":"download","args":["https://x"],"kwargs":{"timeout":5},"queue":"net",'
    '"priority":2,"immutable":false,"expires":60.0,"sig":"s1","result_sig":"r1","state":"completed",'
    '"result":{"body":"ok"},"error":null,"started_at":100.5,"finished_at":101.0}]},{"kind":"group",'
    '"members":[{"job_id":"j2","task":"parse","args":[],"kwargs":{},"queue":"default","priority":0,'
    '"immutable":true,"expires":null,"state":"failed","result":null,"error":{"type":"ValueError",'
    '"message":"bad","traceback":"Traceback...","attempt":3,"at":103.0},"started_at":102.0,'
    '"finished_at":103.0},{"job_id":"j3","task":"parse","args":[],"kwargs":{},"queue":"default",'
    '"priority":0,"immutable":false,"expires":null,"state":"not_executed","result":null,"error":null,'
    '"started_at":null,"finished_at":null}]}],"created_at":100.0,"finished_at":103.5}'
)

#: the same record as the SQLite backend stored it before (attrs.asdict: no "v", every field)
SQLITE_CHAIN = json.loads(STORED_CHAIN)
del SQLITE_CHAIN["v"]
for _step in SQLITE_CHAIN["steps"]:
    for _member in _step["members"]:
        _member.setdefault("sig", None)
        _member.setdefault("result_sig", None)

#: a job as every backend stores it (Job.to_wire, compact)
STORED_JOB = (
    '{"v":1,"id":"j1","task":"download","args":["https://x"],"kwargs":{"timeout":5},"queue":"net",'
    '"priority":2,"attempt":1,"enqueued_at":100.0,"chain":["c1",0,0],"sig":"s1"}'
)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def the_chain() -> ChainRecord:
    error = ErrorInfo(type="ValueError", message="bad", traceback="Traceback...", attempt=3, at=103.0)
    return ChainRecord(
        id="c1",
        name="ingest",
        state=ChainState.HALTED,
        created_at=100.0,
        finished_at=103.5,
        steps=[
            Step(
                kind="task",
                members=[
                    StepMember(
                        job_id="j1",
                        task="download",
                        args=("https://x",),
                        kwargs={"timeout": 5},
                        queue="net",
                        priority=2,
                        expires=60.0,
                        sig="s1",
                        result_sig="r1",
                        state=StepState.COMPLETED,
                        result={"body": "ok"},
                        started_at=100.5,
                        finished_at=101.0,
                    )
                ],
            ),
            Step(
                kind="group",
                members=[
                    StepMember(
                        job_id="j2",
                        task="parse",
                        immutable=True,
                        state=StepState.FAILED,
                        error=error,
                        started_at=102.0,
                        finished_at=103.0,
                    ),
                    StepMember(job_id="j3", task="parse", state=StepState.NOT_EXECUTED),
                ],
            ),
        ],
    )


def a_delivery() -> Delivery:
    job = Job.from_wire(json.loads(STORED_JOB))
    return Delivery(job=job, token="tok", lease_until=130.0, worker="w1", delivery_count=2, crashes=1)


def test_a_chain_record_stored_before_reads_and_writes_back_byte_for_byte() -> None:
    """Chain records already in a Redis stay readable, and are written back as they were.

    Only the state words change: "halted" and "completed" (the words stored before
    jobs, steps and chains shared one vocabulary) are written back "failed" and
    "succeeded".
    """
    record = ChainRecord.from_wire(json.loads(STORED_CHAIN))
    assert record == the_chain()
    renamed = STORED_CHAIN.replace('"state":"halted"', '"state":"failed"').replace(
        '"state":"completed"', '"state":"succeeded"'
    )
    assert compact(record.to_wire()) == renamed
    assert ChainRecord.from_wire(json.loads(renamed)) == record


def test_a_chain_record_the_sqlite_backend_stored_before_still_reads() -> None:
    """The SQLite backend's earlier form (every field, no version) is the same record."""
    assert ChainRecord.from_wire(SQLITE_CHAIN) == the_chain()


def test_a_job_stored_before_reads_and_writes_back_byte_for_byte() -> None:
    job = Job.from_wire(json.loads(STORED_JOB))
    assert compact(job.to_wire()) == STORED_JOB


@pytest.mark.parametrize("version", [2, 0, "1", True])
def test_a_chain_record_of_another_version_is_refused(version: Any) -> None:
    raw = {**json.loads(STORED_CHAIN), "v": version}
    with pytest.raises(ValueError, match="chain record of unknown version"):
        ChainRecord.from_wire(raw)


@pytest.mark.parametrize("raw", [[1, 2], "{}", None])
def test_a_chain_record_that_is_not_an_object_is_a_type_error(raw: Any) -> None:
    """Readers fail with an error the backends treat as unreadable data, never AttributeError."""
    with pytest.raises(TypeError, match="expected an object"):
        ChainRecord.from_wire(raw)


def round_trip(value: Any) -> Any:
    return type(value).from_wire(json.loads(json.dumps(value.to_wire())))


def test_records_entries_stats_workers_and_deliveries_survive_the_wire() -> None:
    error = ErrorInfo(type="KeyError", message="'x'", traceback=None, attempt=2, at=5.0)
    job = a_delivery().job
    values = [
        the_chain(),
        JobRecord(job=job, state=JobState.SUCCEEDED, result=[1, "a"], started_at=1.0, finished_at=2.0),
        JobRecord(job=job, state=JobState.FAILED, error=error, started_at=1.0, finished_at=2.0),
        FailedEntry(job=job, error=error, failed_at=3.0),
        FailedEntry(job=job, error=error, failed_at=3.0, raw="base64:AAE="),
        QueueStats(queue="q", ready=1, delayed=2, in_flight=3, failed=4),
        a_delivery(),
        SettleResult(accepted=True, chain=the_chain()),
        SettleResult(accepted=False),
        WorkerInfo(
            name="w", host="h", pid=1, queues=["a"], labels={"k": "v"}, started_at=1.0, heartbeat_at=2.0
        ),
    ]
    for value in values:
        assert round_trip(value) == value


def test_a_failed_entry_writes_raw_only_when_set() -> None:
    entry = FailedEntry(job=a_delivery().job, error=ErrorInfo(type="E", message="m"), failed_at=1.0)
    assert set(entry.to_wire()) == {"job", "error", "failed_at"}


def test_outcomes_travel_as_the_delivery_they_name_and_what_happened() -> None:
    delivery = a_delivery()
    error = ErrorInfo(type="E", message="m", attempt=2, at=9.0)
    outcomes = [
        Completed(delivery=delivery, result={"n": 1}, started_at=1.0, finished_at=2.0, result_sig="rs"),
        Completed(delivery=delivery, started_at=1.0, finished_at=2.0),
        Retried(delivery=delivery, error=error, delay=1.5),
        Failed(delivery=delivery, error=error),
        Released(delivery=delivery),
    ]
    for outcome in outcomes:
        raw = json.loads(json.dumps(outcome.to_wire()))
        assert raw["job_id"] == delivery.job.id
        assert raw["token"] == delivery.token
        assert "job" not in raw  # a reference: the receiver has the job
        assert outcome_from_wire(raw, delivery) == outcome
    assert "result_sig" not in outcomes[1].to_wire()


def test_a_delivery_reference_reads_back_against_its_job() -> None:
    delivery = a_delivery()
    assert Delivery.from_ref(delivery.ref_to_wire(), delivery.job) == delivery
    plain = Delivery.from_ref({"job_id": "j1", "token": "t"}, delivery.job)
    assert (plain.lease_until, plain.worker, plain.delivery_count, plain.crashes) == (0.0, "", 1, 0)


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown outcome 'won'"):
        outcome_from_wire({"outcome": "won", "job_id": "j1", "token": "t"}, a_delivery())
