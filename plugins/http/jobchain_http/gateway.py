"""The gateway: a Starlette application in front of any jobchain backend.

:func:`create_app` builds it from a :class:`GatewayConfig`. Endpoints (all
JSON, all under ``/v1`` but the OpenAPI document and the plain line queue's
``/push`` and ``/pull``, see :mod:`jobchain_http.plain`) are listed in
``openapi.json`` and explained in docs/http.md. Blocking backend calls run in
worker threads (see :class:`jobchain_http.streams.Hub`); the event loop only
parses, checks and answers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import structlog
from attrs import define, field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobchain.backend import Backend
from jobchain.capabilities import FailedQueue, Pause, Stats, Uniqueness, WorkerRegistry, require
from jobchain.errors import (
    BackendUnavailableError,
    InvalidJobError,
    JobchainError,
    NotInFailedQueueError,
    NotSupportedError,
    WorkerNameTakenError,
)
from jobchain.model import ChainRecord, Delivery, Job, Outcome, Released, WorkerInfo, outcome_from_wire
from jobchain_http import browse, openapi, schema
from jobchain_http.catalog import Catalog, parse_submissions
from jobchain_http.guard import Guard, HttpError, error_body
from jobchain_http.streams import DeliveryStream, Hub
from jobchain_http.wire import WireError, check, decode, dumps, value

__all__ = ["Gateway", "GatewayApp", "GatewayConfig", "create_app"]

logger = structlog.get_logger("jobchain_http.gateway")

MAX_BATCH = 1000


@define(kw_only=True)
class GatewayConfig:
    """How a gateway behaves. Bounds are what a request may ask for; beyond them it gets 400."""

    backend: Backend
    catalog: Catalog | None = None
    token: str | None = None
    #: room for a job or a result of the core's default max_payload (1 MiB) with its envelope and error
    max_body: int = 2 * 1024 * 1024
    max_wait: float = 30.0
    max_limit: int = MAX_BATCH
    max_lease: float = 86400.0
    max_prefetch: int = MAX_BATCH
    ping_interval: float = 5.0
    hub: Hub | None = field(default=None)


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


# --- request helpers ----------------------------------------------------------------------


async def read_json(request: Request, kind: type[Any] | None = None) -> Any:
    """The request's JSON body, checked against ``kind`` (a :mod:`jobchain_http.schema` type) if given.

    400 ``bad_json`` for a body that is not JSON any backend can store, 422
    ``invalid`` (a :class:`WireError`) for one of the wrong shape.
    """
    raw = await request.body()
    if not raw:
        raise HttpError(422, "invalid", "expected a JSON body", path="$")
    try:
        body = decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _bad_json(raw, exc) from None
    return body if kind is None else check(body, kind)


def _bad_json(raw: bytes, refused: Exception) -> HttpError:
    """Why msgspec refused ``raw``, in the words of Python's JSON reader, with a lone surrogate's path."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(raw, parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        return HttpError(400, "bad_json", f"the body is not valid JSON: {exc}")
    except RecursionError:
        return HttpError(400, "bad_json", "the body is nested too deeply")
    where = _lone_surrogate(body)
    if where is not None:  # "\ud800" is valid JSON but no backend can store it as UTF-8
        return HttpError(
            400,
            "bad_json",
            "the body has a string with a lone surrogate (\\ud800-\\udfff), not UTF-8",
            path=where,
        )
    return HttpError(400, "bad_json", f"the body is not valid JSON: {refused}")  # a number out of range


def _lone_surrogate(value: Any) -> str | None:
    """The JSON path of the first string (or key) holding a lone surrogate, or None."""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _utf8(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if not key.isascii() and not _utf8(key):
                    return path
                stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def q_number(
    request: Request, name: str, default: float, low: float, high: float, *, open_low: bool = False
) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, "bad_query", f"query parameter {name!r} must be a number", path=name) from None
    if not (low < value if open_low else low <= value) or value > high or value != value:
        bound = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        raise HttpError(
            400, "bad_query", f"query parameter {name!r} must be in {bound}, got {raw}", path=name
        )
    return value


def q_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "bad_query", f"query parameter {name!r} must be an integer", path=name) from None
    if not low <= value <= high:
        raise HttpError(
            400, "bad_query", f"query parameter {name!r} must be in [{low}, {high}], got {raw}", path=name
        )
    return value


def q_queues(request: Request) -> tuple[str, ...]:
    queues = tuple(q for q in request.query_params.getlist("queue") if q)
    if not queues:
        return ("default",)
    if len(queues) > 100:
        raise HttpError(400, "bad_query", "at most 100 queues", path="queue")
    return queues


def q_worker(request: Request) -> str:
    worker = request.query_params.get("worker", "http")
    if not worker or len(worker) > 200:
        raise HttpError(
            400, "bad_query", "query parameter 'worker' must be 1 to 200 characters", path="worker"
        )
    return worker


class Gateway:
    """The endpoints, bound to one backend and its hub."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.backend = config.backend
        self.hub = config.hub or Hub(config.backend, ping_interval=config.ping_interval)
        self.catalog = config.catalog or Catalog(config.backend)
        self.bodies = schema.bodies(config.max_limit, config.max_lease)
        self.document = openapi.document(
            max_wait=config.max_wait,
            max_limit=config.max_limit,
            max_lease=config.max_lease,
            max_prefetch=config.max_prefetch,
        )

    def use_backend(self, backend: Backend) -> None:
        """Serve another backend from now on (tests reuse one server); tracked deliveries are dropped."""
        self.backend = self.hub.backend = self.catalog.backend = backend
        self.hub.tracked.clear()

    # --- meta --------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return JSONBody(self.document)

    async def health(self, request: Request) -> Response:
        return JSONBody({"ok": True, "max_body": self.config.max_body})

    async def time(self, request: Request) -> Response:
        return JSONBody({"now": await self.hub.call(self.backend.now)})

    # --- producers ---------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        body = await read_json(request)
        check(body, schema.SubmitBatch if isinstance(body, dict) and "items" in body else schema.Submission)
        items = parse_submissions(body)
        out = await self.hub.call(self.catalog.submit, items)
        if "items" in body:
            return JSONBody({"items": out}, status_code=201)
        return JSONBody(out[0], status_code=201)

    async def enqueue(self, request: Request) -> Response:
        body = await read_json(request, self.bodies.enqueue)
        jobs = [value(Job.from_wire, raw, f"$.jobs[{i}]") for i, raw in enumerate(body["jobs"])]
        chains = [
            value(ChainRecord.from_wire, raw, f"$.chains[{i}]")
            for i, raw in enumerate(body.get("chains", []))
        ]
        self.catalog.check_raw(jobs, chains)
        await self.hub.call(self.backend.enqueue, jobs, chains)
        return JSONBody({"enqueued": len(jobs), "chains": len(chains)}, status_code=201)

    async def enqueue_unique(self, request: Request) -> Response:
        body = await read_json(request, self.bodies.enqueue_unique)
        jobs = [value(Job.from_wire, raw, f"$.jobs[{i}]") for i, raw in enumerate(body["jobs"])]
        keys: list[str] = body["keys"]
        if len(keys) != len(jobs):
            raise HttpError(422, "invalid_body", f"{len(jobs)} jobs and {len(keys)} keys", path="$.keys")
        self.catalog.check_raw(jobs, [])
        unique = require(self.backend, Uniqueness)
        try:
            ids = await self.hub.call(unique.enqueue_unique, jobs, keys, hold=body.get("hold"))
        except ValueError as exc:  # a job that does not carry the key it should (check_batch)
            raise HttpError(422, "invalid_body", str(exc), path="$.jobs") from None
        return JSONBody({"ids": ids})

    async def get_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        record = await self.hub.call(self.backend.get_job, job_id)
        if record is None:
            raise HttpError(404, "not_found", f"no job {job_id!r}")
        return JSONBody(record.to_wire())

    async def get_chain(self, request: Request) -> Response:
        chain_id = request.path_params["chain_id"]
        record = await self.hub.call(self.backend.get_chain, chain_id)
        if record is None:
            raise HttpError(404, "not_found", f"no chain {chain_id!r}")
        return JSONBody(record.to_wire())

    async def stats(self, request: Request) -> Response:
        stats = await self.hub.call(require(self.backend, Stats).stats)
        return JSONBody({"queues": [s.to_wire() for s in stats]})

    # --- workers: reserve, stream, settle, extend --------------------------------------

    async def reserve(self, request: Request) -> Response:
        c = self.config
        queues = q_queues(request)
        limit = q_int(request, "limit", 1, 1, c.max_limit)
        lease = q_number(request, "lease", 30.0, 0.001, c.max_lease)
        wait = q_number(request, "wait", 0.0, 0.0, c.max_wait)
        worker = q_worker(request)
        await self.hub.prune()
        got: list[Delivery] = await self.hub.wait_call(
            self.backend.reserve, queues, limit=limit, lease=lease, worker=worker, wait=wait
        )
        if got and await request.is_disconnected():
            await self.hub.call(self.backend.settle, [Released(delivery=d) for d in got])
            got = []
        self.hub.track(got)
        return JSONBody({"deliveries": [d.to_wire() for d in got]})

    async def stream(self, request: Request) -> Response:
        c = self.config
        queues = q_queues(request)
        prefetch = q_int(request, "prefetch", 8, 1, c.max_prefetch)
        lease = q_number(request, "lease", 30.0, 0.001, c.max_lease)
        worker = q_worker(request)
        if self.hub.closing:
            raise HttpError(503, "shutting_down", "the gateway is shutting down")
        return DeliveryStream(self.hub, self.hub.open_stream(queues, prefetch, lease, worker))

    async def deliveries(self, refs: Sequence[Mapping[str, Any]], path: str) -> list[Delivery]:
        """The gateway's copies of the deliveries ``refs`` (checked references: job id + token) name."""
        found: list[Delivery | None] = []
        missing: list[tuple[int, str, Mapping[str, Any]]] = []
        for i, ref in enumerate(refs):
            job_id = ref["job_id"]
            known = self.hub.lookup(ref["token"])
            if known is not None and known.job.id == job_id:
                found.append(known)
            else:
                found.append(None)
                missing.append((i, job_id, ref))
        if missing:
            records = await self.hub.call(lambda: [self.backend.get_job(job_id) for _, job_id, _ in missing])
            for (i, job_id, ref), record in zip(missing, records, strict=True):
                # not handed out by this gateway (it restarted, or another replica did): the backend's
                # current job, with the client's token, which the backend accepts only if it is current
                job = record.job if record is not None else Job(id=job_id, task="unknown", enqueued_at=0.0)
                found[i] = value(functools.partial(Delivery.from_ref, job=job), ref, f"{path}[{i}]")
        out = [d for d in found if d is not None]
        assert len(out) == len(found)
        return out

    async def settle(self, request: Request) -> Response:
        raw = (await read_json(request, self.bodies.settle))["outcomes"]
        deliveries = await self.deliveries(raw, "$.outcomes")
        outcomes = [
            _outcome(r, d, f"$.outcomes[{i}]") for i, (r, d) in enumerate(zip(raw, deliveries, strict=True))
        ]
        results = await self.hub.call(self.backend.settle, outcomes)
        self.hub.forget([d.token for d in deliveries])
        return JSONBody({"results": [r.to_wire() for r in results]})

    async def extend(self, request: Request) -> Response:
        body = await read_json(request, self.bodies.extend)
        lease = float(body["lease"])
        deliveries = await self.deliveries(body["deliveries"], "$.deliveries")

        def extend() -> tuple[list[bool], float]:
            kept = self.backend.extend(deliveries, lease)
            return kept, self.backend.now() + lease

        kept, lease_until = await self.hub.call(extend)
        self.hub.extended([d.token for d, ok in zip(deliveries, kept, strict=True) if ok], lease_until)
        self.hub.forget([d.token for d, ok in zip(deliveries, kept, strict=True) if not ok])
        return JSONBody({"extended": kept})

    async def mark_running(self, request: Request) -> Response:
        body = await read_json(request, self.bodies.running)
        deliveries = await self.deliveries(body["deliveries"], "$.deliveries")
        held = await self.hub.call(self.backend.mark_running, deliveries)
        self.hub.forget([d.token for d, ok in zip(deliveries, held, strict=True) if not ok])
        return JSONBody({"running": held})

    # --- failed queue --------------------------------------------------------------------

    async def failed(self, request: Request) -> Response:
        limit = q_int(request, "limit", 100, 1, self.config.max_limit)
        offset = q_int(request, "offset", 0, 0, 10**9)
        queue = require(self.backend, FailedQueue)
        entries = await self.hub.call(lambda: queue.failed(limit=limit, offset=offset))
        return JSONBody({"entries": [e.to_wire() for e in entries]})

    async def failed_one(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        entry = await self.hub.call(require(self.backend, FailedQueue).get_failed, job_id)
        if entry is None:
            raise HttpError(404, "not_found", f"no failed job {job_id!r}")
        return JSONBody(entry.to_wire())

    async def redrive(self, request: Request) -> Response:
        ids: list[str] = (await read_json(request, self.bodies.redrive))["ids"]
        try:
            moved = await self.hub.call(require(self.backend, FailedQueue).redrive, ids)
        except NotInFailedQueueError as exc:  # nothing moved; the ids travel so the client can name them
            error = {
                "status": 404,
                "code": "not_in_failed_queue",
                "message": str(exc),
                "ids": list(exc.job_ids),
            }
            return Response(dumps({"error": error}), 404, media_type="application/json")
        return JSONBody({"moved": moved})

    async def purge(self, request: Request) -> Response:
        ids: list[str] | None = (await read_json(request, self.bodies.purge)).get("ids")
        count = await self.hub.call(require(self.backend, FailedQueue).purge_failed, ids)
        return JSONBody({"purged": count})

    # --- paused queues -------------------------------------------------------------------

    async def pause(self, request: Request) -> Response:
        queues: list[str] = (await read_json(request, self.bodies.queues))["queues"]
        return JSONBody({"queues": await self.hub.call(_change_paused, self.backend, queues, True)})

    async def resume(self, request: Request) -> Response:
        queues: list[str] = (await read_json(request, self.bodies.queues))["queues"]
        return JSONBody({"queues": await self.hub.call(_change_paused, self.backend, queues, False)})

    async def paused(self, request: Request) -> Response:
        return JSONBody({"queues": await self.hub.call(require(self.backend, Pause).paused)})

    # --- worker registry -----------------------------------------------------------------

    async def heartbeat(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await read_json(request, self.bodies.heartbeat)
        info = value(WorkerInfo.from_wire, body["info"], "$.info")
        if info.name != name:
            raise WireError("$.info.name", f"the worker's name is {name!r} in the path")
        ttl = float(body["ttl"])
        try:
            stop = await self.hub.call(require(self.backend, WorkerRegistry).heartbeat, info, ttl)
        except WorkerNameTakenError as exc:
            raise HttpError(
                409,
                "worker_name_taken",
                str(exc),
                holder={"name": exc.name, "host": exc.host, "pid": exc.pid},
            ) from None
        return JSONBody({"stop": stop})

    async def remove_worker(self, request: Request) -> Response:
        instance = request.query_params.get("instance")
        registry = require(self.backend, WorkerRegistry)
        await self.hub.call(registry.remove_worker, request.path_params["name"], instance)
        return JSONBody({"removed": True})

    async def workers(self, request: Request) -> Response:
        found = await self.hub.call(require(self.backend, WorkerRegistry).workers)
        return JSONBody({"workers": [w.to_wire() for w in found]})

    async def stop_worker(self, request: Request) -> Response:
        registry = require(self.backend, WorkerRegistry)
        stopped = await self.hub.call(registry.request_stop, request.path_params["name"])
        return JSONBody({"stopped": stopped})


def _change_paused(backend: Backend, queues: list[str], pause: bool) -> list[str]:
    """Pause or resume ``queues``; the queues paused afterwards."""
    paused = require(backend, Pause)
    (paused.pause if pause else paused.resume)(queues)
    return paused.paused()


def _outcome(raw: Mapping[str, Any], delivery: Delivery, path: str) -> Outcome:
    return value(lambda r: outcome_from_wire(r, delivery), raw, path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return Response(
        error_body(exc.status, exc.code, exc.message, exc.path, **exc.extra),
        exc.status,
        media_type="application/json",
    )


async def _wire_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WireError)
    return Response(error_body(422, "invalid", exc.message, exc.path), 422, media_type="application/json")


async def _invalid_job(request: Request, exc: Exception) -> Response:
    return Response(error_body(422, "invalid", str(exc)), 422, media_type="application/json")


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    message = {404: "no such endpoint", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return Response(
        error_body(exc.status_code, code, message), exc.status_code, media_type="application/json"
    )


async def _not_supported(request: Request, exc: Exception) -> Response:
    """501: the served backend lacks the capability the endpoint needs (jobchain.capabilities)."""
    assert isinstance(exc, NotSupportedError)
    body = error_body(501, "not_supported", str(exc), capability=exc.capability)
    return Response(body, 501, media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BackendUnavailableError):
        return Response(
            error_body(503, "backend_unavailable", "the backend cannot be reached"),
            503,
            media_type="application/json",
        )
    if isinstance(exc, JobchainError):
        return Response(error_body(500, "backend_error", str(exc)), 500, media_type="application/json")
    return Response(
        error_body(500, "internal", "internal error; see the gateway's log"),
        500,
        media_type="application/json",
    )


class GatewayApp(Guard):
    """The gateway as an ASGI application; ``gateway`` holds its endpoints, backend and hub."""

    def __init__(self, app: Starlette, gateway: Gateway, *, token: str | None, max_body: int) -> None:
        super().__init__(
            app,
            token=token,
            max_body=max_body,
            public_paths={"/openapi.json", "/v1/health"},
            raw_prefixes=("/push/",),
        )
        self.gateway = gateway


def create_app(config: GatewayConfig) -> GatewayApp:
    """The gateway as an ASGI application (Starlette inside :class:`Guard`)."""
    gw = Gateway(config)
    routes = [
        Route("/openapi.json", gw.openapi, methods=["GET"]),
        Route("/v1/health", gw.health, methods=["GET"]),
        Route("/v1/time", gw.time, methods=["GET"]),
        Route("/v1/submit", gw.submit, methods=["POST"]),
        Route("/v1/enqueue", gw.enqueue, methods=["POST"]),
        Route("/v1/jobs", functools.partial(browse.browse, gw), methods=["GET"]),
        Route("/v1/enqueue-unique", gw.enqueue_unique, methods=["POST"]),
        Route("/v1/jobs/{job_id}", gw.get_job, methods=["GET"]),
        Route("/v1/counts", functools.partial(browse.counts, gw), methods=["GET"]),
        Route("/v1/chains/{chain_id}", gw.get_chain, methods=["GET"]),
        Route("/v1/stats", gw.stats, methods=["GET"]),
        Route("/v1/reserve", gw.reserve, methods=["POST"]),
        Route("/v1/stream", gw.stream, methods=["GET"]),
        Route("/v1/settle", gw.settle, methods=["POST"]),
        Route("/v1/extend", gw.extend, methods=["POST"]),
        Route("/v1/running", gw.mark_running, methods=["POST"]),
        Route("/v1/failed", gw.failed, methods=["GET"]),
        Route("/v1/failed/redrive", gw.redrive, methods=["POST"]),
        Route("/v1/failed/purge", gw.purge, methods=["POST"]),
        Route("/v1/failed/{job_id}", gw.failed_one, methods=["GET"]),
        Route("/v1/queues/pause", gw.pause, methods=["POST"]),
        Route("/v1/queues/resume", gw.resume, methods=["POST"]),
        Route("/v1/queues/paused", gw.paused, methods=["GET"]),
        Route("/v1/workers", gw.workers, methods=["GET"]),
        Route("/v1/workers/{name}", gw.heartbeat, methods=["PUT"]),
        Route("/v1/workers/{name}", gw.remove_worker, methods=["DELETE"]),
        Route("/v1/workers/{name}/stop", gw.stop_worker, methods=["POST"]),
    ]
    from jobchain_http.cancels import cancel_routes
    from jobchain_http.limits import limit_routes
    from jobchain_http.lines import line_routes
    from jobchain_http.plain import plain_routes
    from jobchain_http.schedules import schedule_routes

    routes += line_routes(gw) + plain_routes(gw)
    routes += cancel_routes(gw) + schedule_routes(gw) + limit_routes(gw)
    app = Starlette(
        routes=routes,
        exception_handlers={
            HttpError: _http_error,
            WireError: _wire_error,
            InvalidJobError: _invalid_job,
            NotSupportedError: _not_supported,
            HTTPException: _starlette_error,
            Exception: _unexpected,
        },
    )
    return GatewayApp(app, gw, token=config.token, max_body=config.max_body)
