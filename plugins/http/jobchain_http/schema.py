"""Every JSON body on the gateway's wire, as msgspec Struct types: one definition for checks and docs.

The gateway checks each request body against these types (:func:`jobchain_http.wire.read_body`),
the ``http://`` backend checks each answer the same way, and the OpenAPI document
(:mod:`jobchain_http.openapi`) is generated from them. The values themselves are
converted by the core's ``to_wire``/``from_wire`` (:mod:`jobchain.model`): these
types only say which JSON is well formed, so a test keeps the two in step
(``tests/http/test_http_schema.py``).

Every type takes its fields by keyword; fields left out of a body take the
default shown, and unknown fields are ignored.
The bounds a gateway runs with (``--max-limit``, ``--max-lease``) shape the
request bodies, so those are built per set of bounds by :func:`bodies`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import msgspec
from attrs import frozen
from msgspec import Meta, Struct

__all__ = [
    "MAX_DELAY",
    "MAX_SUBMIT_ITEMS",
    "Bodies",
    "Delivery",
    "DeliveryRef",
    "Error",
    "ErrorInfo",
    "Job",
    "bodies",
]

#: the longest delay a submission may ask for, seconds
MAX_DELAY = 366 * 86400.0
#: the most items one submit request may hold
MAX_SUBMIT_ITEMS = 1000
#: the longest retry delay an outcome may ask for, seconds
MAX_RETRY_DELAY = 10 * 365 * 86400.0

NonEmpty = Annotated[str, Meta(min_length=1)]
Count = Annotated[int, Meta(ge=1)]
Natural = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(description="seconds since the epoch, on the backend's clock")]
Anything = Annotated[Any, Meta(description="any JSON value")]
JobStateName = Literal["queued", "delayed", "running", "succeeded", "failed", "cancelled"]
#: "completed" is the old word for "succeeded": still read (from an older client or gateway), never written
StepStateName = Literal["pending", "running", "succeeded", "failed", "cancelled", "not_executed", "completed"]
#: "completed" and "halted" are the old words for "succeeded" and "failed": still read, never written
ChainStateName = Literal["pending", "running", "succeeded", "failed", "cancelled", "completed", "halted"]


# --- values: the core's to_wire forms -----------------------------------------------------------


class ErrorInfo(Struct, kw_only=True):
    type: NonEmpty
    message: str = ""
    traceback: str | None = None
    attempt: Count = 1
    at: float = 0.0
    retry_in: Annotated[
        float | None,
        Meta(description="the backoff chosen after this attempt, seconds; null if it was not retried"),
    ] = None
    ran: Annotated[
        float | None,
        Meta(description="seconds the attempt ran before it failed; null if the task never started"),
    ] = None


class Job(Struct, kw_only=True):
    v: Literal[1] = 1
    id: NonEmpty
    task: NonEmpty
    args: list[Anything] = []
    kwargs: dict[str, Anything] = {}
    queue: NonEmpty = "default"
    priority: int = 0
    attempt: Count = 1
    enqueued_at: Seconds
    not_before: float | None = None
    expires_at: float | None = None
    chain: Annotated[
        tuple[NonEmpty, Natural, Natural] | None, Meta(description="[chain id, step, member]")
    ] = None
    sig: NonEmpty | None = None
    psig: NonEmpty | None = None
    unique: Annotated[
        NonEmpty | None, Meta(description="the uniqueness key the job holds until it reaches a final state")
    ] = None


class JobRecord(Struct, kw_only=True):
    job: Job
    state: JobStateName
    result: Anything = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: the worker holding a running job, where the backend knows it
    worker: str | None = None
    errors: Annotated[
        list[ErrorInfo] | None,
        Meta(
            description="the errors of the job's failed attempts, oldest first (the last 20); "
            "left out by a gateway from before histories, which shows only error"
        ),
    ] = None


class StepMember(Struct, kw_only=True):
    job_id: NonEmpty
    task: NonEmpty
    args: list[Anything] = []
    kwargs: dict[str, Anything] = {}
    queue: NonEmpty = "default"
    priority: int = 0
    immutable: bool = False
    expires: float | None = None
    sig: NonEmpty | None = None
    result_sig: NonEmpty | None = None
    state: StepStateName = "pending"
    result: Anything = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None


class Step(Struct, kw_only=True):
    kind: Literal["task", "group"] = "task"
    members: Annotated[list[StepMember], Meta(min_length=1)]


class ChainRecord(Struct, kw_only=True):
    v: Literal[1] = 1
    id: NonEmpty
    name: NonEmpty | None = None
    kind: Literal["chain", "group"] = "chain"
    state: ChainStateName = "pending"
    steps: Annotated[list[Step], Meta(min_length=1)]
    created_at: Seconds
    finished_at: float | None = None


class Delivery(Struct, kw_only=True):
    job: Job
    token: NonEmpty
    lease_until: Seconds
    worker: str
    delivery_count: Count = 1
    crashes: Natural | None = None


class DeliveryRef(Struct, kw_only=True):
    """A delivery named by its job's id and its token (the gateway has the job)."""

    job_id: NonEmpty
    token: NonEmpty
    worker: str = ""
    lease_until: float = 0.0
    delivery_count: Count = 1
    crashes: Natural | None = None


class CompletedOutcome(DeliveryRef, tag="completed", tag_field="outcome", kw_only=True):
    """The job returned ``result``."""

    result: Anything = None
    result_sig: NonEmpty | None = None
    started_at: float
    finished_at: float


class RetriedOutcome(DeliveryRef, tag="retried", tag_field="outcome", kw_only=True):
    """The job failed and runs again after ``delay`` seconds."""

    error: ErrorInfo
    delay: Annotated[float, Meta(ge=0, le=MAX_RETRY_DELAY)]


class FailedOutcome(DeliveryRef, tag="failed", tag_field="outcome", kw_only=True):
    """The job failed for good."""

    error: ErrorInfo


class ReleasedOutcome(DeliveryRef, tag="released", tag_field="outcome", kw_only=True):
    """The job is given back unrun."""


class AbortedOutcome(DeliveryRef, tag="aborted", tag_field="outcome", kw_only=True):
    """The job stopped at a cancel request: recorded cancelled (a gateway whose backend has Cancel)."""

    started_at: float
    finished_at: float


Outcome = CompletedOutcome | RetriedOutcome | FailedOutcome | ReleasedOutcome | AbortedOutcome


class SettleResult(Struct, kw_only=True):
    accepted: bool
    chain: ChainRecord | None = None


class FailedEntry(Struct, kw_only=True):
    job: Job
    error: ErrorInfo
    failed_at: float
    raw: Annotated[str | None, Meta(description="an unreadable job's stored text, as found")] = None


class QueueStats(Struct, kw_only=True):
    queue: NonEmpty
    ready: Natural = 0
    delayed: Natural = 0
    in_flight: Natural = 0
    failed: Natural = 0


class WorkerInfo(Struct, kw_only=True):
    name: NonEmpty
    host: str = ""
    pid: int = 0
    queues: list[NonEmpty] = []
    labels: dict[str, str] = {}
    concurrency: Count = 1
    started_at: float
    heartbeat_at: float
    state: NonEmpty = "running"
    instance: Annotated[str, Meta(description="random per worker object; tells namesakes apart")] = ""
    held: Annotated[int, Meta(ge=0, description="jobs held by a rate or concurrency limit")] = 0


# --- submissions by name and line queues ---------------------------------------------------------


class Submission(Struct, kw_only=True):
    target: Annotated[str, Meta(min_length=1, description="a task name, or with --config a chain or group")]
    args: list[Anything] = []
    kwargs: dict[str, Anything] = {}
    queue: NonEmpty | None = None
    priority: Annotated[int, Meta(ge=-(10**9), le=10**9)] | None = None
    delay: Annotated[float, Meta(ge=0, le=MAX_DELAY)] | None = None
    id: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=200,
                pattern="^[^\\s/]+$",
                description="an explicit job (or chain) id; an id that exists stores nothing",
            ),
        ]
        | None
    ) = None
    unique_key: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=200,
                description="a task's uniqueness key (not a chain's): while a job of its queue holds it, "
                "nothing is stored and the answer is the holder's id",
            ),
        ]
        | None
    ) = None
    unique_for: (
        Annotated[
            float,
            Meta(
                gt=0,
                le=MAX_DELAY,
                description="hold the key this many seconds from the submit, not until the job finishes",
            ),
        ]
        | None
    ) = None


class SubmitBatch(Struct, kw_only=True):
    items: Annotated[list[Submission], Meta(min_length=1, max_length=MAX_SUBMIT_ITEMS)]


class Submitted(Struct, kw_only=True):
    id: NonEmpty
    kind: Literal["job", "chain"]
    target: NonEmpty


class SubmittedBatch(Struct, kw_only=True):
    items: list[Submitted]


LineKey = Annotated[str, Meta(pattern="^[A-Za-z0-9._:-]{1,120}$")]


class LineMessage(Struct, kw_only=True):
    lines: list[str]
    partial_last: bool = False
    key: LineKey | None = None


class LineRef(Struct, kw_only=True):
    id: NonEmpty
    token: NonEmpty


class Message(Struct, kw_only=True):
    """A message of a line queue, leased."""

    id: NonEmpty
    token: NonEmpty
    lines: list[str]
    partial_last: bool
    lease_until: float
    delivery_count: Count


# --- answers -------------------------------------------------------------------------------------


class ErrorDetail(Struct, kw_only=True):
    status: int
    code: NonEmpty
    message: str
    path: str | None = None
    ids: list[str] | None = None
    holder: dict[str, Any] | None = None
    limit: Annotated[int | None, Meta(description="413: the gateway's body limit, bytes")] = None


class Error(Struct, kw_only=True):
    error: ErrorDetail


class Health(Struct, kw_only=True):
    ok: bool
    max_body: Annotated[int, Meta(description="the largest request body, bytes")]


class Now(Struct, kw_only=True):
    now: float


class Enqueued(Struct, kw_only=True):
    enqueued: int
    chains: int


class Stats(Struct, kw_only=True):
    queues: list[QueueStats]


class Deliveries(Struct, kw_only=True):
    deliveries: list[Delivery]


class SettleResults(Struct, kw_only=True):
    results: list[SettleResult]


class Extended(Struct, kw_only=True):
    extended: list[bool]


class Running(Struct, kw_only=True):
    running: list[bool]


class FailedEntries(Struct, kw_only=True):
    entries: list[FailedEntry]


class Moved(Struct, kw_only=True):
    moved: list[str]


class Purged(Struct, kw_only=True):
    purged: int


class CancelReport(Struct, kw_only=True):
    """What a cancel did with each id: cancelled before running, asked to stop, finished, unknown."""

    cancelled: list[str]
    requested: list[str]
    finished: list[str]
    unknown: list[str]


class CancelRequested(Struct, kw_only=True):
    """The ids, of those asked about, whose jobs were asked to stop."""

    ids: list[str]


class Workers(Struct, kw_only=True):
    workers: list[WorkerInfo]


class StopAsked(Struct, kw_only=True):
    stop: bool


class Removed(Struct, kw_only=True):
    removed: bool


class Stopped(Struct, kw_only=True):
    stopped: bool


class PausedQueues(Struct, kw_only=True):
    queues: list[str]


ScheduleName = Annotated[str, Meta(min_length=1, max_length=200, description="a schedule's name")]
#: a slot time: seconds since the epoch (finite)
Slot = Annotated[float, Meta(ge=-1e12, le=1e12, description="a slot's time, in seconds since the epoch")]


class ScheduleState(Struct, kw_only=True):
    """What the backend keeps of a schedule: its latest slot enqueued (or null), that slot's job, paused."""

    name: ScheduleName
    last_slot: Slot | None = None
    last_job: str | None = None
    paused: bool = False


class ScheduleStates(Struct, kw_only=True):
    """The state of each schedule asked about, in the order asked."""

    schedules: list[ScheduleState]


class ScheduleMark(Struct, kw_only=True):
    """Record that ``slot``'s job ``job_id`` of ``schedule`` was enqueued (kept only if the latest)."""

    schedule: ScheduleName
    slot: Slot
    job_id: NonEmpty


class ScheduleRef(Struct, kw_only=True):
    """The schedule to pause or resume."""

    name: ScheduleName


class JobPage(Struct, kw_only=True):
    """A page of ``GET /v1/jobs``: the records, and the cursor of the next page (null: the last)."""

    records: list[JobRecord]
    cursor: str | None = None


class JobCounts(Struct, kw_only=True):
    """How many of a queue's jobs are in each state."""

    queue: str
    counts: dict[JobStateName, Natural]


class UniqueIds(Struct, kw_only=True):
    ids: Annotated[list[NonEmpty], Meta(description="per job, the id of the job stored or holding its key")]


class TakeTokensRequest(Struct, kw_only=True):
    """``POST /v1/limits/take``: take rate-limit tokens (:class:`jobchain.capabilities.RateLimits`)."""

    key: Annotated[str, Meta(max_length=1000)]
    windows: Annotated[
        list[tuple[Annotated[int, Meta(ge=1)], Annotated[float, Meta(gt=0, le=MAX_DELAY)]]],
        Meta(min_length=1, max_length=10, description="[tokens, seconds] pairs; every one must admit"),
    ]
    count: Annotated[int, Meta(ge=1)] = 1
    max_wait: Annotated[float, Meta(ge=0, le=MAX_DELAY)] = 0.0


class TokenWait(Struct, kw_only=True):
    wait: Annotated[float, Meta(description="0: taken now; <= max_wait: taken for then; else not taken")]


class AcquireSlotRequest(Struct, kw_only=True):
    """``POST /v1/limits/slots/acquire`` (:class:`jobchain.capabilities.ConcurrencyLimits`)."""

    key: Annotated[str, Meta(max_length=1000)]
    limit: Annotated[int, Meta(ge=1)]
    holder: NonEmpty
    ttl: Annotated[float, Meta(gt=0, le=MAX_DELAY)]


class SlotRequest(Struct, kw_only=True):
    """``POST /v1/limits/slots/release``: free one holder's slot."""

    key: Annotated[str, Meta(max_length=1000)]
    holder: NonEmpty


class ExtendSlotsRequest(Struct, kw_only=True):
    slots: Annotated[list[tuple[str, NonEmpty]], Meta(max_length=10000, description="[key, holder] pairs")]
    ttl: Annotated[float, Meta(gt=0, le=MAX_DELAY)]


class SlotAcquired(Struct, kw_only=True):
    acquired: bool


class SlotsKept(Struct, kw_only=True):
    kept: list[bool]


class SlotReleased(Struct, kw_only=True):
    released: bool


class SlotsHeld(Struct, kw_only=True):
    held: Natural


class Queued(Struct, kw_only=True):
    queued: int


class LineInfo(Struct, kw_only=True):
    queue: NonEmpty
    ready: int
    delayed: int
    in_flight: int
    #: something was pushed to the queue once (the backend has seen it)
    exists: bool


class PlainQueued(Struct, kw_only=True):
    """The answer to ``POST /push/QUEUE``: messages stored and the lines they hold."""

    queued: int
    lines: int


class Messages(Struct, kw_only=True):
    messages: list[Message]


class Acked(Struct, kw_only=True):
    acked: list[bool]


# --- request bodies, shaped by a gateway's bounds -----------------------------------------------


@frozen
class Bodies:
    """The request body types of a gateway with bounds ``max_limit`` and ``max_lease``."""

    enqueue: type[Struct]
    enqueue_unique: type[Struct]
    settle: type[Struct]
    extend: type[Struct]
    running: type[Struct]
    redrive: type[Struct]
    purge: type[Struct]
    heartbeat: type[Struct]
    queues: type[Struct]
    cancel: type[Struct]
    queue_purge: type[Struct]
    lines_push: type[Struct]
    lines_ack: type[Struct]


def _body(name: str, *fields: tuple[str, Any] | tuple[str, Any, Any]) -> type[Struct]:
    return msgspec.defstruct(name, fields, kw_only=True, module=__name__)


@functools.cache
def bodies(max_limit: int = 1000, max_lease: float = 86400.0) -> Bodies:
    """The request body types for these bounds (one set per set of bounds)."""
    batch = Meta(max_length=max_limit)
    big = Meta(max_length=max_limit * 10)
    lease = Annotated[float, Meta(ge=0.001, le=max_lease)]
    ids = Annotated[list[NonEmpty], big]
    return Bodies(
        enqueue=_body(
            "EnqueueRequest",
            ("jobs", Annotated[list[Job], big]),
            ("chains", Annotated[list[ChainRecord], big], []),
        ),
        enqueue_unique=_body(
            "EnqueueUniqueRequest",
            ("jobs", Annotated[list[Job], big]),
            ("keys", Annotated[list[Annotated[str, Meta(min_length=1, max_length=200)]], big]),
            ("hold", Annotated[float, Meta(gt=0, le=MAX_DELAY)] | None, None),
        ),
        settle=_body("SettleRequest", ("outcomes", Annotated[list[Outcome], batch])),
        extend=_body("ExtendRequest", ("deliveries", Annotated[list[DeliveryRef], big]), ("lease", lease)),
        running=_body("RunningRequest", ("deliveries", Annotated[list[DeliveryRef], batch])),
        redrive=_body("RedriveRequest", ("ids", ids)),
        purge=_body("PurgeRequest", ("ids", ids | None, None)),
        heartbeat=_body("HeartbeatRequest", ("info", WorkerInfo), ("ttl", lease)),
        queues=_body("QueuesRequest", ("queues", Annotated[list[NonEmpty], batch])),
        cancel=_body("CancelRequest", ("ids", ids)),
        queue_purge=_body("QueuePurgeRequest", ("queue", NonEmpty)),
        lines_push=_body("LinesPushRequest", ("messages", Annotated[list[LineMessage], batch])),
        lines_ack=_body(
            "LinesAckRequest", ("messages", Annotated[list[LineRef], batch]), ("release", bool, False)
        ),
    )
