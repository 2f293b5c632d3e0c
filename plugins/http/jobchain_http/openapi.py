"""The gateway's OpenAPI 3.1 document, built from the bounds a gateway runs with.

Every body's schema is generated from the msgspec types the gateway checks
bodies against (:mod:`jobchain_http.schema`), so the document and the checks
cannot drift apart; this module adds the paths, their query and path
parameters, and the answers. The gateway serves it at ``/openapi.json``; the
copy kept in the repository (``jobchain_http/openapi.json``) is the document of
a gateway with the default bounds, and a test keeps the two equal. Regenerate
the copy with ``python -m jobchain_http.openapi > plugins/http/jobchain_http/openapi.json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec

from jobchain_http import schema as s

__all__ = ["document"]

Schema = dict[str, Any]

_REF = "#/components/schemas/{name}"


def _q(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str, description: str, pattern: str | None = None) -> Schema:
    schema: Schema = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _ref(kind: Any) -> Schema:
    return {"$ref": _REF.format(name=kind.__name__)}


class _Operations:
    """Collects the operations of the document and every type they name."""

    def __init__(self) -> None:
        self.paths: dict[str, dict[str, Any]] = {}
        self.types: list[Any] = []

    def body(self, kind: Any) -> Schema:
        if isinstance(kind, tuple):  # either of several shapes
            return {"anyOf": [self.body(k) for k in kind]}
        self.types.append(kind)
        return _ref(kind)

    def add(
        self,
        method: str,
        path: str,
        op_id: str,
        summary: str,
        answer: Any,
        *,
        request: Any = None,
        status: str = "200",
        parameters: list[Schema] | None = None,
        public: bool = False,
        described: str = "OK",
        raw_request: dict[str, Any] | None = None,
        more: dict[str, Any] | None = None,
    ) -> None:
        response = (
            answer
            if isinstance(answer, dict)
            else {
                "description": described,
                "content": {"application/json": {"schema": self.body(answer)}},
            }
        )
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": op_id,
            "responses": {
                status: response,
                "default": {
                    "description": "an error",
                    "content": {"application/json": {"schema": self.body(s.Error)}},
                },
            },
        }
        if parameters:
            operation["parameters"] = parameters
        if request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.body(request)}},
            }
        if raw_request is not None:
            operation["requestBody"] = {"required": False, "content": raw_request}
        if more:
            operation["responses"].update(more)
        if public:
            operation["security"] = []
        self.paths.setdefault(path, {})[method] = operation


def document(
    *, max_wait: float = 30.0, max_limit: int = 1000, max_lease: float = 86400.0, max_prefetch: int = 1000
) -> dict[str, Any]:
    """The OpenAPI document of a gateway with these bounds."""
    bodies = s.bodies(max_limit, max_lease)
    queues = {
        "name": "queue",
        "in": "query",
        "required": False,
        "schema": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 100},
        "style": "form",
        "explode": True,
        "description": "a queue to take jobs from (repeat for several; default: default)",
    }
    lease = _q(
        "lease", {"type": "number", "minimum": 0.001, "maximum": max_lease}, "seconds each delivery is leased"
    )
    worker = _q("worker", {"type": "string", "minLength": 1, "maxLength": 200}, "the worker's name")
    wait = _q(
        "wait", {"type": "number", "minimum": 0, "maximum": max_wait}, "seconds to wait for a job (long poll)"
    )
    limit = _q("limit", {"type": "integer", "minimum": 1, "maximum": max_limit}, "most deliveries to return")
    line_queue = _p("queue", "a line queue: 1 to 100 of A-Z a-z 0-9 . _ -", "^[A-Za-z0-9._-]{1,100}$")
    job_id, chain_id, name = _p("job_id", "job id"), _p("chain_id", "chain id"), _p("name", "worker name")
    ndjson = {
        "description": "a stream of NDJSON lines",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    }

    op = _Operations()
    op.add(
        "get",
        "/openapi.json",
        "openapi",
        "This document (no token needed)",
        {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
        public=True,
    )
    op.add("get", "/v1/health", "health", "Liveness (no token needed)", s.Health, public=True)
    op.add("get", "/v1/time", "time", "The backend's clock", s.Now)
    op.add(
        "post",
        "/v1/submit",
        "submit",
        "Submit a task or chain by name, or a batch of them",
        (s.Submitted, s.SubmittedBatch),
        request=(s.Submission, s.SubmitBatch),
        status="201",
        described="Submitted",
    )
    op.add(
        "post",
        "/v1/enqueue",
        "enqueue",
        "Store jobs and chain records as built by a client (the http:// backend's enqueue)",
        s.Enqueued,
        request=bodies.enqueue,
        status="201",
        described="Stored",
    )
    one_queue = _q(
        "queue", {"type": "string", "minLength": 1, "maxLength": 1000}, "the queue (default: default)"
    )
    states = ["ready", "queued", "delayed", "running", "succeeded", "failed", "cancelled"]
    op.add(
        "get",
        "/v1/jobs",
        "browseJobs",
        "A page of a queue's jobs in one state (Browse): ready/delayed/running by enqueue or due time, "
        "finished ones by finish time; pass `cursor` back for the next page",
        s.JobPage,
        parameters=[
            one_queue,
            _q("state", {"type": "string", "enum": states}, "the state (default: queued; ready is the same)"),
            _q("task", {"type": "string", "minLength": 1}, "only this task's jobs"),
            _q(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": min(max_limit, 1000)},
                "most records (default 100)",
            ),
            _q("cursor", {"type": "string", "minLength": 1}, "the `cursor` of the page before"),
            _q("order", {"type": "string", "enum": ["newest", "oldest"]}, "newest (default) or oldest first"),
        ],
    )
    op.add(
        "post",
        "/v1/enqueue-unique",
        "enqueueUnique",
        "Store jobs unless their id exists or their uniqueness key is held in their queue "
        "(the http:// backend's enqueue_unique); answers, per job, the id stored or holding its key",
        s.UniqueIds,
        request=bodies.enqueue_unique,
    )
    op.add("get", "/v1/jobs/{job_id}", "getJob", "A job's record", s.JobRecord, parameters=[job_id])
    op.add(
        "get",
        "/v1/counts",
        "countJobs",
        "How many of a queue's jobs are in each state (Browse)",
        s.JobCounts,
        parameters=[one_queue],
    )
    op.add(
        "get", "/v1/chains/{chain_id}", "getChain", "A chain's record", s.ChainRecord, parameters=[chain_id]
    )
    op.add("get", "/v1/stats", "stats", "Queue statistics", s.Stats)
    op.add(
        "post",
        "/v1/reserve",
        "reserve",
        "Lease up to `limit` jobs, waiting up to `wait` seconds for one (long poll)",
        s.Deliveries,
        parameters=[queues, limit, lease, wait, worker],
    )
    prefetch = _q(
        "prefetch",
        {"type": "integer", "minimum": 1, "maximum": max_prefetch},
        "most deliveries out unsettled on this stream",
    )
    op.add(
        "get",
        "/v1/stream",
        "stream",
        "Streamed delivery, one NDJSON line per event; at most `prefetch` deliveries unsettled",
        ndjson,
        parameters=[queues, prefetch, lease, worker],
    )
    op.add(
        "post",
        "/v1/settle",
        "settle",
        "Complete, retry, fail or release deliveries (a batch, applied in order)",
        s.SettleResults,
        request=bodies.settle,
    )
    op.add(
        "post",
        "/v1/extend",
        "extend",
        "Extend the leases of deliveries still held",
        s.Extended,
        request=bodies.extend,
    )
    op.add(
        "post",
        "/v1/running",
        "mark_running",
        "Mark deliveries running before their jobs start (a worker does it for a redelivered job); "
        "false where the lease is no longer held. Leases lost while marked count as crashes.",
        s.Running,
        request=bodies.running,
    )
    offset = _q("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, "entries to skip")
    op.add(
        "get",
        "/v1/failed",
        "failedList",
        "The failed queue, oldest first",
        s.FailedEntries,
        parameters=[limit, offset],
    )
    op.add("get", "/v1/failed/{job_id}", "failedShow", "One failed job", s.FailedEntry, parameters=[job_id])
    op.add(
        "post",
        "/v1/failed/redrive",
        "failedRedrive",
        "Move failed jobs back to their queue (attempt 1, chains resumed); "
        "404 `not_in_failed_queue` with the missing `ids` moves none",
        s.Moved,
        request=bodies.redrive,
    )
    op.add(
        "post",
        "/v1/failed/purge",
        "failedPurge",
        "Delete failed entries (all of them when `ids` is null or absent)",
        s.Purged,
        request=bodies.purge,
    )
    op.add(
        "post",
        "/v1/queues/pause",
        "queuesPause",
        "Pause queues: submits are still accepted, no worker reserves from them; "
        "answers the queues paused now",
        s.PausedQueues,
        request=bodies.queues,
    )
    op.add(
        "post",
        "/v1/queues/resume",
        "queuesResume",
        "Serve paused queues again; answers the queues still paused",
        s.PausedQueues,
        request=bodies.queues,
    )
    op.add("get", "/v1/queues/paused", "queuesPaused", "The queues paused now", s.PausedQueues)
    op.add(
        "post",
        "/v1/limits/take",
        "limitsTake",
        "Take rate-limit tokens of a key at the earliest time every window admits; answers the wait "
        "(0: now; at most max_wait: taken for then; more: not taken)",
        s.TokenWait,
        request=s.TakeTokensRequest,
    )
    op.add(
        "post",
        "/v1/limits/slots/acquire",
        "limitsAcquire",
        "Take a concurrency slot of a key for a holder for ttl seconds if fewer than limit are held",
        s.SlotAcquired,
        request=s.AcquireSlotRequest,
    )
    op.add(
        "post",
        "/v1/limits/slots/extend",
        "limitsExtend",
        "Renew live concurrency slots for ttl seconds; answers, per slot, whether it was still held",
        s.SlotsKept,
        request=s.ExtendSlotsRequest,
    )
    op.add(
        "post",
        "/v1/limits/slots/release",
        "limitsRelease",
        "Free a holder's concurrency slot",
        s.SlotReleased,
        request=s.SlotRequest,
    )
    limit_key = _q("key", {"type": "string", "maxLength": 1000}, "the limit's key")
    op.add(
        "get",
        "/v1/limits/slots",
        "limitsHeld",
        "How many live concurrency slots of a key are held",
        s.SlotsHeld,
        parameters=[limit_key],
    )
    op.add(
        "post",
        "/v1/jobs/cancel",
        "jobsCancel",
        "Cancel jobs: ready and delayed ones are removed and recorded cancelled (their chains end), "
        "running ones are asked to stop; answers what was done with each id",
        s.CancelReport,
        request=bodies.cancel,
    )
    op.add(
        "post",
        "/v1/jobs/cancel-requested",
        "jobsCancelRequested",
        "Of these jobs (held by a worker), those asked to stop: the worker's poll",
        s.CancelRequested,
        request=bodies.cancel,
    )
    op.add(
        "post",
        "/v1/queues/purge",
        "queuesPurge",
        "Cancel every ready and delayed job of a queue; answers how many",
        s.Purged,
        request=bodies.queue_purge,
    )
    schedule_names = {
        "name": "name",
        "in": "query",
        "required": False,
        "schema": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "maxItems": 100,
        },
        "style": "form",
        "explode": True,
        "description": "a schedule's name (repeat for several, at most 100)",
    }
    op.add(
        "get",
        "/v1/schedules",
        "schedules",
        "The state of each named schedule, in the order asked: its latest slot enqueued, that slot's job, "
        "paused or not (ScheduleSlots)",
        s.ScheduleStates,
        parameters=[schedule_names],
    )
    op.add(
        "post",
        "/v1/schedules/mark",
        "schedulesMark",
        "Record that a slot's job was enqueued; kept only if the slot is later than the one held. "
        "Answers the schedule's state",
        s.ScheduleState,
        request=s.ScheduleMark,
    )
    op.add(
        "post",
        "/v1/schedules/pause",
        "schedulesPause",
        "Pause a schedule: schedulers enqueue none of its slots; answers its state",
        s.ScheduleState,
        request=s.ScheduleRef,
    )
    op.add(
        "post",
        "/v1/schedules/resume",
        "schedulesResume",
        "Resume a schedule (its missed slots follow its policy); answers its state",
        s.ScheduleState,
        request=s.ScheduleRef,
    )
    op.add("get", "/v1/workers", "workers", "Live workers", s.Workers)
    op.add(
        "put",
        "/v1/workers/{name}",
        "heartbeat",
        "Register or refresh a worker (heartbeat); `stop` says it was asked to stop. "
        "409 `worker_name_taken` (with the live `holder`'s host and pid) when another "
        "instance with a fresh heartbeat holds the name",
        s.StopAsked,
        request=bodies.heartbeat,
        parameters=[name],
    )
    op.add(
        "delete",
        "/v1/workers/{name}",
        "removeWorker",
        "Forget a worker (it stopped); with `instance`, only if that instance holds the name",
        s.Removed,
        parameters=[name, _q("instance", {"type": "string"}, "the instance that registered the name")],
    )
    op.add(
        "post",
        "/v1/workers/{name}/stop",
        "stopWorker",
        "Ask a live worker to stop gracefully",
        s.Stopped,
        parameters=[name],
    )
    op.add(
        "post",
        "/v1/lines/{queue}",
        "linesPush",
        "Push messages of lines to a line queue",
        s.Queued,
        request=bodies.lines_push,
        status="201",
        parameters=[line_queue],
        described="Queued",
    )
    op.add(
        "get",
        "/v1/lines/{queue}",
        "linesInfo",
        "How many messages a line queue holds",
        s.LineInfo,
        parameters=[line_queue],
    )
    op.add(
        "post",
        "/v1/lines/{queue}/reserve",
        "linesReserve",
        "Lease messages of a line queue, oldest first (long poll)",
        s.Messages,
        parameters=[line_queue, limit, lease, wait, worker],
    )
    op.add(
        "post",
        "/v1/lines/{queue}/ack",
        "linesAck",
        "Acknowledge (or, with `release`, give back) leased messages",
        s.Acked,
        request=bodies.lines_ack,
        parameters=[line_queue],
    )
    text = {"schema": {"type": "string"}}
    op.add(
        "post",
        "/push/{queue}",
        "plainPush",
        "Push the body's lines (UTF-8 text, any content type: `curl --data-binary @FILE`) to a line queue; "
        "with `id`, sending the same body again stores nothing",
        s.PlainQueued,
        raw_request={"text/plain": text, "application/octet-stream": text, "*/*": text},
        status="201",
        parameters=[
            line_queue,
            _q(
                "id",
                {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "a name for this push (retry-safe)",
            ),
        ],
        described="Queued",
    )
    op.add(
        "get",
        "/pull/{queue}",
        "plainPull",
        "Lease up to `limit` messages of a line queue, waiting up to `timeout` seconds, and answer their "
        "lines as text; acknowledged once written (at most once: an answer lost on its way loses its lines)",
        {"description": "the lines, as pushed", "content": {"text/plain": text}},
        parameters=[
            line_queue,
            _q("timeout", {"type": "number", "minimum": 0, "maximum": max_wait}, "seconds to wait for lines"),
            _q("limit", {"type": "integer", "minimum": 1, "maximum": max_limit}, "most messages to answer"),
        ],
        more={"204": {"description": "no lines came within the timeout"}},
    )
    _, components = msgspec.json.schema_components(op.types, ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jobchain HTTP gateway",
            "version": "1",
            "description": "Jobs over HTTP: submit, long-poll or stream deliveries, settle them; plain line "
            "queues. Every endpoint but /openapi.json and /v1/health needs `Authorization: Bearer TOKEN` "
            "when the gateway has a token. See docs/http.md.",
        },
        "servers": [{"url": "/"}],
        "paths": op.paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


def main() -> None:
    json.dump(document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
