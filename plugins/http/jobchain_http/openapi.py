"""The gateway's OpenAPI 3.1 document, built from the bounds a gateway runs with.

The gateway serves it at ``/openapi.json``; the copy kept in the repository
(``jobchain_http/openapi.json``) is the document of a gateway with the default
bounds, and a test keeps the two equal. Regenerate the copy with
``python -m jobchain_http.openapi > plugins/http/jobchain_http/openapi.json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["document"]

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_STR: Schema = {"type": "string", "minLength": 1}
_NUM: Schema = {"type": "number"}
_INT: Schema = {"type": "integer"}
_ANY: Schema = {}


def _obj(props: dict[str, Schema], required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _schemas() -> dict[str, Schema]:
    error_info = _obj(
        {
            "type": _STR,
            "message": {"type": "string"},
            "traceback": _nullable({"type": "string"}),
            "attempt": {"type": "integer", "minimum": 1},
            "at": _NUM,
        },
        ["type", "message"],
    )
    job = _obj(
        {
            "id": _STR,
            "task": _STR,
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "queue": _STR,
            "priority": _INT,
            "attempt": {"type": "integer", "minimum": 1},
            "enqueued_at": _NUM,
            "not_before": _NUM,
            "expires_at": _NUM,
            "chain": {"type": "array", "prefixItems": [_STR, _INT, _INT], "minItems": 3, "maxItems": 3},
            "sig": _STR,
            "psig": _STR,
        },
        ["id", "task", "enqueued_at"],
    )
    member = _obj(
        {
            "job_id": _STR,
            "task": _STR,
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "queue": _STR,
            "priority": _INT,
            "immutable": {"type": "boolean"},
            "expires": _nullable(_NUM),
            "sig": _STR,
            "result_sig": _STR,
            "state": {"enum": ["pending", "running", "completed", "failed", "not_executed"]},
            "result": _ANY,
            "error": _nullable(_ref("ErrorInfo")),
            "started_at": _nullable(_NUM),
            "finished_at": _nullable(_NUM),
        },
        ["job_id", "task"],
    )
    chain = _obj(
        {
            "id": _STR,
            "name": _nullable(_STR),
            "kind": {"enum": ["chain", "group"]},
            "state": {"enum": ["running", "completed", "halted"]},
            "steps": {
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    {
                        "kind": {"enum": ["task", "group"]},
                        "members": {"type": "array", "minItems": 1, "items": _ref("StepMember")},
                    },
                    ["members"],
                ),
            },
            "created_at": _NUM,
            "finished_at": _nullable(_NUM),
        },
        ["id", "steps", "created_at"],
    )
    delivery = _obj(
        {
            "job": _ref("Job"),
            "token": _STR,
            "lease_until": _NUM,
            "worker": {"type": "string"},
            "delivery_count": {"type": "integer", "minimum": 1},
            "crashes": {"type": "integer", "minimum": 0},
        },
        ["job", "token", "lease_until", "worker", "delivery_count"],
    )
    delivery_ref = _obj(
        {
            "job_id": _STR,
            "token": _STR,
            "worker": {"type": "string"},
            "lease_until": _NUM,
            "delivery_count": {"type": "integer", "minimum": 1},
            "crashes": {"type": "integer", "minimum": 0},
        },
        ["job_id", "token"],
    )
    outcome = {
        "allOf": [
            _ref("DeliveryRef"),
            _obj(
                {
                    "outcome": {"enum": ["completed", "retried", "failed", "released"]},
                    "result": _ANY,
                    "result_sig": _STR,
                    "started_at": _NUM,
                    "finished_at": _NUM,
                    "error": _ref("ErrorInfo"),
                    "delay": {"type": "number", "minimum": 0},
                },
                ["outcome"],
            ),
        ]
    }
    worker = _obj(
        {
            "name": _STR,
            "host": {"type": "string"},
            "pid": _INT,
            "queues": {"type": "array", "items": _STR},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "concurrency": {"type": "integer", "minimum": 1},
            "started_at": _NUM,
            "heartbeat_at": _NUM,
            "state": _STR,
            "instance": {"type": "string", "description": "random per worker object; tells namesakes apart"},
        },
        ["name", "started_at", "heartbeat_at"],
    )
    submission = _obj(
        {
            "target": {**_STR, "description": "a task name, or with --config a chain, group or signature"},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "queue": _STR,
            "priority": {"type": "integer", "minimum": -(10**9), "maximum": 10**9},
            "delay": {"type": "number", "minimum": 0, "maximum": 366 * 86400},
        },
        ["target"],
    )
    submitted = _obj(
        {"id": _STR, "kind": {"enum": ["job", "chain"]}, "target": _STR}, ["id", "kind", "target"]
    )
    return {
        "Error": _obj(
            {
                "error": _obj(
                    {
                        "status": _INT,
                        "code": _STR,
                        "message": {"type": "string"},
                        "path": {"type": "string"},
                        "ids": {"type": "array", "items": {"type": "string"}},
                        "holder": _obj({"name": {"type": "string"}, "host": {"type": "string"}, "pid": _INT}),
                        "limit": {"type": "integer", "description": "413: the gateway's body limit, bytes"},
                    },
                    ["status", "code", "message"],
                )
            },
            ["error"],
        ),
        "ErrorInfo": error_info,
        "Job": job,
        "JobRecord": _obj(
            {
                "job": _ref("Job"),
                "state": {"enum": ["queued", "delayed", "running", "succeeded", "failed"]},
                "result": _ANY,
                "error": _nullable(_ref("ErrorInfo")),
                "started_at": _nullable(_NUM),
                "finished_at": _nullable(_NUM),
            },
            ["job", "state"],
        ),
        "StepMember": member,
        "ChainRecord": chain,
        "Delivery": delivery,
        "DeliveryRef": delivery_ref,
        "Outcome": outcome,
        "SettleResult": _obj(
            {"accepted": {"type": "boolean"}, "chain": _nullable(_ref("ChainRecord"))}, ["accepted"]
        ),
        "FailedEntry": _obj(
            {"job": _ref("Job"), "error": _ref("ErrorInfo"), "failed_at": _NUM}, ["job", "error", "failed_at"]
        ),
        "QueueStats": _obj(
            {
                "queue": _STR,
                "ready": {"type": "integer", "minimum": 0},
                "delayed": {"type": "integer", "minimum": 0},
                "in_flight": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
            },
            ["queue", "ready", "delayed", "in_flight", "failed"],
        ),
        "WorkerInfo": worker,
        "Submission": submission,
        "Submitted": submitted,
        "Message": _obj(
            {
                "id": _STR,
                "token": _STR,
                "lines": {"type": "array", "items": {"type": "string"}},
                "partial_last": {"type": "boolean"},
                "lease_until": _NUM,
                "delivery_count": {"type": "integer", "minimum": 1},
            },
            ["id", "token", "lines", "partial_last", "lease_until", "delivery_count"],
        ),
    }


def _json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answer(status: str, schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}},
        "default": {"description": "an error", "content": {"application/json": {"schema": _ref("Error")}}},
    }


def _q(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str, description: str, pattern: str | None = None) -> Schema:
    schema: Schema = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _op(summary: str, op_id: str, answers: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"summary": summary, "operationId": op_id, "responses": answers, **more}


def document(
    *, max_wait: float = 30.0, max_limit: int = 1000, max_lease: float = 86400.0, max_prefetch: int = 1000
) -> dict[str, Any]:
    """The OpenAPI document of a gateway with these bounds."""
    queues = {
        "name": "queue",
        "in": "query",
        "required": False,
        "schema": {"type": "array", "items": _STR, "maxItems": 100},
        "style": "form",
        "explode": True,
        "description": "a queue to take jobs from (repeat for several; default: default)",
    }
    lease = _q(
        "lease",
        {"type": "number", "minimum": 0.001, "maximum": max_lease},
        "seconds each delivery is leased",
    )
    worker = _q("worker", {"type": "string", "minLength": 1, "maxLength": 200}, "the worker's name")
    wait = _q(
        "wait", {"type": "number", "minimum": 0, "maximum": max_wait}, "seconds to wait for a job (long poll)"
    )
    limit = _q("limit", {"type": "integer", "minimum": 1, "maximum": max_limit}, "most deliveries to return")
    line_queue = _p("queue", "a line queue: 1 to 100 of A-Z a-z 0-9 . _ -", "^[A-Za-z0-9._-]{1,100}$")
    ids_body = _json_body(_obj({"ids": _nullable({"type": "array", "items": _STR})}))
    paths: dict[str, Any] = {
        "/openapi.json": {
            "get": _op(
                "This document (no token needed)", "openapi", _answer("200", {"type": "object"}), security=[]
            )
        },
        "/v1/health": {
            "get": _op(
                "Liveness (no token needed)",
                "health",
                _answer(
                    "200",
                    _obj(
                        {
                            "ok": {"type": "boolean"},
                            "max_body": {"type": "integer", "description": "the largest request body, bytes"},
                        }
                    ),
                ),
                security=[],
            )
        },
        "/v1/time": {"get": _op("The backend's clock", "time", _answer("200", _obj({"now": _NUM}, ["now"])))},
        "/v1/submit": {
            "post": _op(
                "Submit a task or chain by name, or a batch of them",
                "submit",
                _answer(
                    "201",
                    {
                        "anyOf": [
                            _ref("Submitted"),
                            _obj({"items": {"type": "array", "items": _ref("Submitted")}}),
                        ]
                    },
                    "Submitted",
                ),
                requestBody=_json_body(
                    {
                        "anyOf": [
                            _ref("Submission"),
                            _obj(
                                {
                                    "items": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 1000,
                                        "items": _ref("Submission"),
                                    }
                                },
                                ["items"],
                            ),
                        ]
                    }
                ),
            )
        },
        "/v1/enqueue": {
            "post": _op(
                "Store jobs and chain records as built by a client (the http:// backend's enqueue)",
                "enqueue",
                _answer("201", _obj({"enqueued": _INT, "chains": _INT}), "Stored"),
                requestBody=_json_body(
                    _obj(
                        {
                            "jobs": {"type": "array", "items": _ref("Job")},
                            "chains": {"type": "array", "items": _ref("ChainRecord")},
                        },
                        ["jobs"],
                    )
                ),
            )
        },
        "/v1/jobs/{job_id}": {
            "get": _op(
                "A job's record",
                "getJob",
                _answer("200", _ref("JobRecord")),
                parameters=[_p("job_id", "job id")],
            )
        },
        "/v1/chains/{chain_id}": {
            "get": _op(
                "A chain's record",
                "getChain",
                _answer("200", _ref("ChainRecord")),
                parameters=[_p("chain_id", "chain id")],
            )
        },
        "/v1/stats": {
            "get": _op(
                "Queue statistics",
                "stats",
                _answer("200", _obj({"queues": {"type": "array", "items": _ref("QueueStats")}}, ["queues"])),
            )
        },
        "/v1/reserve": {
            "post": _op(
                "Lease up to `limit` jobs, waiting up to `wait` seconds for one (long poll)",
                "reserve",
                _answer(
                    "200", _obj({"deliveries": {"type": "array", "items": _ref("Delivery")}}, ["deliveries"])
                ),
                parameters=[queues, limit, lease, wait, worker],
            )
        },
        "/v1/stream": {
            "get": {
                **_op(
                    "Streamed delivery, one NDJSON line per event; at most `prefetch` deliveries unsettled",
                    "stream",
                    {
                        "200": {
                            "description": "a stream of NDJSON lines",
                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                        },
                        "default": _answer("200", {})["default"],
                    },
                    parameters=[
                        queues,
                        _q(
                            "prefetch",
                            {"type": "integer", "minimum": 1, "maximum": max_prefetch},
                            "most deliveries out unsettled on this stream",
                        ),
                        lease,
                        worker,
                    ],
                )
            }
        },
        "/v1/settle": {
            "post": _op(
                "Complete, retry, fail or release deliveries (a batch, applied in order)",
                "settle",
                _answer(
                    "200", _obj({"results": {"type": "array", "items": _ref("SettleResult")}}, ["results"])
                ),
                requestBody=_json_body(
                    _obj(
                        {"outcomes": {"type": "array", "maxItems": max_limit, "items": _ref("Outcome")}},
                        ["outcomes"],
                    )
                ),
            )
        },
        "/v1/extend": {
            "post": _op(
                "Extend the leases of deliveries still held",
                "extend",
                _answer(
                    "200", _obj({"extended": {"type": "array", "items": {"type": "boolean"}}}, ["extended"])
                ),
                requestBody=_json_body(
                    _obj(
                        {
                            "deliveries": {"type": "array", "items": _ref("DeliveryRef")},
                            "lease": {"type": "number", "minimum": 0.001, "maximum": max_lease},
                        },
                        ["deliveries", "lease"],
                    )
                ),
            )
        },
        "/v1/running": {
            "post": _op(
                "Mark deliveries running before their jobs start (a worker does it for a redelivered job); "
                "false where the lease is no longer held. Leases lost while marked count as crashes.",
                "mark_running",
                _answer(
                    "200", _obj({"running": {"type": "array", "items": {"type": "boolean"}}}, ["running"])
                ),
                requestBody=_json_body(
                    _obj(
                        {
                            "deliveries": {
                                "type": "array",
                                "maxItems": max_limit,
                                "items": _ref("DeliveryRef"),
                            }
                        },
                        ["deliveries"],
                    )
                ),
            )
        },
        "/v1/failed": {
            "get": _op(
                "The failed queue, oldest first",
                "failedList",
                _answer(
                    "200", _obj({"entries": {"type": "array", "items": _ref("FailedEntry")}}, ["entries"])
                ),
                parameters=[
                    limit,
                    _q("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, "entries to skip"),
                ],
            )
        },
        "/v1/failed/{job_id}": {
            "get": _op(
                "One failed job",
                "failedShow",
                _answer("200", _ref("FailedEntry")),
                parameters=[_p("job_id", "job id")],
            )
        },
        "/v1/failed/redrive": {
            "post": _op(
                "Move failed jobs back to their queue (attempt 1, chains resumed); "
                "404 `not_in_failed_queue` with the missing `ids` moves none",
                "failedRedrive",
                _answer("200", _obj({"moved": {"type": "array", "items": {"type": "string"}}}, ["moved"])),
                requestBody=_json_body(_obj({"ids": {"type": "array", "items": _STR}}, ["ids"])),
            )
        },
        "/v1/failed/purge": {
            "post": _op(
                "Delete failed entries (all of them when `ids` is null or absent)",
                "failedPurge",
                _answer("200", _obj({"purged": _INT}, ["purged"])),
                requestBody=ids_body,
            )
        },
        "/v1/workers": {
            "get": _op(
                "Live workers",
                "workers",
                _answer(
                    "200", _obj({"workers": {"type": "array", "items": _ref("WorkerInfo")}}, ["workers"])
                ),
            )
        },
        "/v1/workers/{name}": {
            "put": _op(
                "Register or refresh a worker (heartbeat); `stop` says it was asked to stop. "
                "409 `worker_name_taken` (with the live `holder`'s host and pid) when another "
                "instance with a fresh heartbeat holds the name",
                "heartbeat",
                _answer("200", _obj({"stop": {"type": "boolean"}}, ["stop"])),
                parameters=[_p("name", "worker name")],
                requestBody=_json_body(
                    _obj(
                        {
                            "info": _ref("WorkerInfo"),
                            "ttl": {"type": "number", "minimum": 0.001, "maximum": max_lease},
                        },
                        ["info", "ttl"],
                    )
                ),
            ),
            "delete": _op(
                "Forget a worker (it stopped); with `instance`, only if that instance holds the name",
                "removeWorker",
                _answer("200", _obj({"removed": {"type": "boolean"}})),
                parameters=[
                    _p("name", "worker name"),
                    _q("instance", {"type": "string"}, "the instance that registered the name"),
                ],
            ),
        },
        "/v1/workers/{name}/stop": {
            "post": _op(
                "Ask a live worker to stop gracefully",
                "stopWorker",
                _answer("200", _obj({"stopped": {"type": "boolean"}}, ["stopped"])),
                parameters=[_p("name", "worker name")],
            )
        },
        "/v1/lines/{queue}": {
            "post": _op(
                "Push messages of lines to a line queue",
                "linesPush",
                _answer("201", _obj({"queued": _INT}, ["queued"]), "Queued"),
                parameters=[line_queue],
                requestBody=_json_body(
                    _obj(
                        {
                            "messages": {
                                "type": "array",
                                "maxItems": max_limit,
                                "items": _obj(
                                    {
                                        "lines": {"type": "array", "items": {"type": "string"}},
                                        "partial_last": {"type": "boolean"},
                                        "key": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,120}$"},
                                    },
                                    ["lines"],
                                ),
                            }
                        },
                        ["messages"],
                    )
                ),
            ),
            "get": _op(
                "How many messages a line queue holds",
                "linesInfo",
                _answer(
                    "200",
                    _obj(
                        {"queue": _STR, "ready": _INT, "delayed": _INT, "in_flight": _INT},
                        ["queue", "ready", "delayed", "in_flight"],
                    ),
                ),
                parameters=[line_queue],
            ),
        },
        "/v1/lines/{queue}/reserve": {
            "post": _op(
                "Lease messages of a line queue, oldest first (long poll)",
                "linesReserve",
                _answer("200", _obj({"messages": {"type": "array", "items": _ref("Message")}}, ["messages"])),
                parameters=[line_queue, limit, lease, wait, worker],
            )
        },
        "/v1/lines/{queue}/ack": {
            "post": _op(
                "Acknowledge (or, with `release`, give back) leased messages",
                "linesAck",
                _answer("200", _obj({"acked": {"type": "array", "items": {"type": "boolean"}}}, ["acked"])),
                parameters=[line_queue],
                requestBody=_json_body(
                    _obj(
                        {
                            "messages": {
                                "type": "array",
                                "maxItems": max_limit,
                                "items": _obj({"id": _STR, "token": _STR}, ["id", "token"]),
                            },
                            "release": {"type": "boolean"},
                        },
                        ["messages"],
                    )
                ),
            )
        },
    }
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
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


def main() -> None:
    json.dump(document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
