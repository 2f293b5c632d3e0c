"""The ``http://`` and ``https://`` backends: a jobchain backend that talks to a gateway.

``HttpBackend.from_url("http://:TOKEN@host:8080?delivery=stream&prefetch=64")``.
The token comes from the URL (as password or user name), the ``token=``
option, or ``JOBCHAIN_HTTP_TOKEN``. One :class:`httpx.Client` keeps its
connections alive and is shared by every thread of a worker.

Blocking reservations (``wait > 0``, which is how workers reserve) use
*streamed delivery* by default: a reader thread holds one ``/v1/stream``
response open and buffers what it sends; the gateway never has more than
``prefetch`` deliveries out on it unsettled, and every settle gives credit
back. ``delivery=poll`` (or a gateway without streams) uses long polling on
``/v1/reserve`` instead. A non-blocking reservation is always one request.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import httpx
import structlog

from jobchain import capabilities
from jobchain.aging import DEFAULT_AGING_INTERVAL
from jobchain.backend import Backend
from jobchain.browsing import check_limit, check_state, decode_cursor
from jobchain.capabilities import (
    Browse,
    Cancel,
    CancelReport,
    FailedQueue,
    JobPage,
    Pause,
    ScheduleSlots,
    ScheduleState,
    Stats,
    Uniqueness,
    WorkerRegistry,
)
from jobchain.clock import Clock
from jobchain.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailableError,
    InvalidJobError,
    NotInFailedQueueError,
    NotSupportedError,
    UnknownTaskError,
    WorkerNameTakenError,
)
from jobchain.model import (
    ChainRecord,
    Delivery,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    Outcome,
    QueueStats,
    SettleResult,
    WorkerInfo,
)
from jobchain.uniqueness import check_batch
from jobchain_http import schema
from jobchain_http._async import HttpAsync
from jobchain_http._requests import chain_path, enqueue_body, job_path
from jobchain_http.limits import HttpLimits
from jobchain_http.reader import StreamReader
from jobchain_http.wire import dumps, read, value

__all__ = ["TOKEN_ENV", "HttpBackend"]

logger = structlog.get_logger("jobchain_http.client")

TOKEN_ENV = "JOBCHAIN_HTTP_TOKEN"
#: the longest wait one long-poll request asks for; longer waits are several requests
POLL_CHUNK = 20.0
BATCH = 1000
#: schedule names per ``GET /v1/schedules`` (the gateway takes 100; 50 keeps the URL short)
SCHEDULE_NAMES = 50
#: the body limit assumed of a gateway that does not say its own (the gateway's default)
DEFAULT_MAX_BODY = 2 * 1024 * 1024  # the gateway's default
_SETTLE_HEAD = b'{"outcomes":['
_SETTLE_TAIL = b"]}"


class _BodyTooLargeError(InvalidJobError):
    """The gateway answered 413; ``limit`` is the limit it said it has (None if it did not)."""

    def __init__(self, message: str, limit: int | None) -> None:
        self.limit = limit
        super().__init__(message)


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class HttpBackend(
    Backend,
    FailedQueue,
    WorkerRegistry,
    Stats,
    Cancel,
    Pause,
    Browse,
    Uniqueness,
    ScheduleSlots,
    HttpLimits,
    HttpAsync,
):
    """A backend served by a jobchain gateway (``jobchain http serve``)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        client: httpx.Client | None = None,
        token: str | None = None,
        delivery: str = "stream",
        prefetch: int | None = None,
        timeout: float = 30.0,
        max_body: int | None = None,
        clock: Clock | None = None,
        aging_interval: float = DEFAULT_AGING_INTERVAL,
    ) -> None:
        super().__init__(clock=clock, aging_interval=aging_interval)
        if delivery not in ("stream", "poll"):
            raise ValueError(f"delivery must be 'stream' or 'poll', got {delivery!r}")
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch!r}")
        if max_body is not None and max_body < 1024:
            raise ValueError(f"max_body must be >= 1024 bytes, got {max_body!r}")
        #: the largest request body the gateway takes: given, or asked of the gateway on first use
        self.max_body = max_body
        parts = urlsplit(url)
        secret = parts.password or parts.username
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.url = base
        self.token = secret or token or os.environ.get(TOKEN_ENV) or None
        self.delivery = delivery
        self.prefetch = prefetch
        self.timeout = timeout
        self._owns_client = client is None
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        if client is None:
            client = httpx.Client(
                base_url=base,
                timeout=httpx.Timeout(timeout, connect=10.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
        self._client = client
        #: where the asyncio client (jobchain_http._async) sends its requests
        self._base = base
        self._headers = headers
        self._prefix = parts.path.rstrip("/") if client is not None and not self._owns_client else ""
        self._readers: dict[tuple[tuple[str, ...], float, str], StreamReader] = {}
        self._readers_lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HttpBackend:
        """``http[s]://[:TOKEN@]host:port[/prefix][?delivery=stream|poll&prefetch=N&timeout=S&max_body=B]``."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"delivery", "prefetch", "timeout", "token", "max_body"}
        if unknown:
            raise ValueError(f"unknown option(s) in backend URL: {', '.join(sorted(unknown))}")
        if "delivery" in query:
            options.setdefault("delivery", query["delivery"])
        if "prefetch" in query:
            options.setdefault("prefetch", int(query["prefetch"]))
        if "timeout" in query:
            options.setdefault("timeout", float(query["timeout"]))
        if "token" in query:
            options.setdefault("token", query["token"])
        if "max_body" in query:
            options.setdefault("max_body", int(query["max_body"]))
        return cls(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), **options)

    # --- plumbing ------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        return self._prefix + path

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Any = None,
        timeout: float | None = None,
        missing_ok: bool = False,
        content: bytes | None = None,
        answer: type[Any] | None = None,
    ) -> Any:
        """One request to the gateway; its JSON answer, None for a 404 when ``missing_ok``.

        ``body`` is sent as JSON; ``content`` is a body already encoded as JSON.
        With ``answer`` (a :mod:`jobchain_http.schema` type) the answer is
        checked against it: :class:`~jobchain_http.wire.WireError` if it is off.
        A 4xx answer raises an error that is not an outage (retrying cannot
        help); a 5xx or no answer raises :class:`BackendUnavailableError`.
        """
        headers, content = self._prepared(body, content)
        try:
            response = self._client.request(
                method,
                self._path(path),
                content=content,
                params=params,
                headers=headers,
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.TransportError as exc:
            raise BackendUnavailableError(self.url, f"{type(exc).__name__}: {exc}") from exc
        return self._answered(response, missing_ok, answer)

    def _prepared(self, body: Any, content: bytes | None) -> tuple[dict[str, str], bytes | None]:
        """The headers and the encoded body of a request (``body`` as JSON, or ``content`` as it is)."""
        headers = dict(self._headers)
        if body is not None:
            content = dumps(body)
        if content is not None:
            headers["content-type"] = "application/json"
        return headers, content

    def _answered(self, response: httpx.Response, missing_ok: bool, answer: type[Any] | None) -> Any:
        """The answer's JSON (checked against ``answer``); None for a 404 when ``missing_ok``; or raise."""
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise self._error(response)
        if answer is not None:
            return read(response.content, answer)
        return response.json()

    def _error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        error: Any = {}
        try:
            error = response.json()["error"]
            message, code, path = str(error["message"]), str(error.get("code", "")), error.get("path")
        except Exception:
            message, code, path = response.text[:200] or response.reason_phrase, "", None
        where = f" (at {path})" if path else ""
        if code == "not_supported":  # (a 501: the served backend lacks a capability; not an outage)
            name = str(error.get("capability", "")) if isinstance(error, dict) else ""
            declared = getattr(capabilities, name, None)
            what = getattr(declared, "what", f"capability {name or '?'}")
            return NotSupportedError(self.url, name or "?", str(what))
        if status >= 500:  # the gateway or its backend is in trouble: an outage, worth retrying
            return BackendUnavailableError(self.url, f"HTTP {status}: {message}")
        if code == "not_in_failed_queue":
            return NotInFailedQueueError([str(i) for i in error.get("ids") or []])
        if status == 401:
            return BackendAuthError(self.url, f"the gateway refused the token: {message} (set {TOKEN_ENV})")
        if code == "worker_name_taken":
            holder = error.get("holder") if isinstance(error.get("holder"), dict) else {}
            pid = holder.get("pid")
            return WorkerNameTakenError(
                str(holder.get("name", "")),
                str(holder.get("host", "?")),
                pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            )
        if code in ("unknown_task", "unknown_target"):
            name = message.split("'")[1] if message.count("'") >= 2 else message
            return UnknownTaskError(name, [])
        if status == 413:
            limit = error.get("limit") if isinstance(error, dict) else None
            return _BodyTooLargeError(
                f"the gateway at {self.url} refused it: {message}",
                limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            )
        if status in (403, 404, 422):
            return InvalidJobError(f"the gateway at {self.url} refused it: {message}{where}")
        # any other 4xx: this request is wrong, and sending it again cannot help; not an outage
        return BackendError(f"the gateway at {self.url} answered {status}: {message}{where}")

    # --- jobs ----------------------------------------------------------------------------

    def now(self) -> float:
        return float(self.request("GET", "/v1/time")["now"])

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        if not jobs and not chains:
            return
        self.request("POST", "/v1/enqueue", body=enqueue_body(jobs, chains))

    def enqueue_unique(
        self, jobs: Sequence[Job], keys: Sequence[str], *, hold: float | None = None
    ) -> list[str]:
        check_batch(jobs, keys, hold)
        ids: list[str] = []
        for start in range(0, len(jobs), BATCH):
            body = {
                "jobs": [j.to_wire() for j in jobs[start : start + BATCH]],
                "keys": list(keys[start : start + BATCH]),
                "hold": hold,
            }
            answer = self.request("POST", "/v1/enqueue-unique", body=body, answer=schema.UniqueIds)
            ids += [str(i) for i in answer["ids"]]
        return ids

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if wait > 0 and self.delivery == "stream":
            reader = self._reader(tuple(queues), lease, worker, limit)
            if reader is not None:
                return reader.take(limit, wait)
        return self._poll(queues, limit=limit, lease=lease, worker=worker, wait=wait)

    def _poll(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float
    ) -> list[Delivery]:
        deadline = time.monotonic() + wait
        while True:
            chunk = max(0.0, min(POLL_CHUNK, deadline - time.monotonic()))
            params = [("queue", q) for q in queues] + [
                ("limit", str(min(limit, BATCH))),
                ("lease", repr(float(lease))),
                ("worker", worker),
                ("wait", repr(round(chunk, 3))),
            ]
            answer = self.request(
                "POST", "/v1/reserve", params=params, timeout=chunk + self.timeout, answer=schema.Deliveries
            )
            got = [value(Delivery.from_wire, raw, "$.deliveries[]") for raw in answer["deliveries"]]
            if got or time.monotonic() >= deadline:
                return got

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        out: list[bool] = []
        for part in _chunks(deliveries):
            body = {"deliveries": [d.ref_to_wire() for d in part], "lease": lease}
            answer = self.request("POST", "/v1/extend", body=body, answer=schema.Extended)
            out.extend(bool(v) for v in answer["extended"])
        return out

    def body_limit(self) -> int:
        """The largest request body the gateway takes: ``max_body`` if given, else what the gateway says."""
        if self.max_body is None:
            answer = self.request("GET", "/v1/health", missing_ok=True) or {}
            limit = answer.get("max_body") if isinstance(answer, dict) else None
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                self.max_body = limit
            else:  # a gateway that does not say: assume the default
                self.max_body = DEFAULT_MAX_BODY
        return self.max_body

    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        out: list[bool] = []
        for part in _chunks(deliveries):
            body = {"deliveries": [d.ref_to_wire() for d in part]}
            answer = self.request("POST", "/v1/running", body=body, answer=schema.Running)
            out.extend(bool(v) for v in answer["running"])
        return out

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        """Settle in as many requests as it takes for each body to fit the gateway's body limit.

        An outcome too large to fit a request alone (a huge result or error)
        refuses the whole call with :class:`InvalidJobError` before anything is
        sent, naming the job: the caller settles the others without it.
        """
        if not outcomes:
            return []
        encoded = [self._encode_outcome(o) for o in outcomes]
        room = self.body_limit() - len(_SETTLE_HEAD) - len(_SETTLE_TAIL)
        for index, one in enumerate(encoded):  # refuse before anything is sent, so nothing is settled twice
            if len(one) > room:
                self._fit(encoded, index, outcomes)  # raises, naming the job
        out: list[SettleResult] = []
        start = 0
        while start < len(outcomes):
            end = self._fit(encoded, start, outcomes)
            part = encoded[start:end]
            try:
                answer = self.request(
                    "POST",
                    "/v1/settle",
                    content=_SETTLE_HEAD + b",".join(part) + _SETTLE_TAIL,
                    answer=schema.SettleResults,
                )
            except _BodyTooLargeError as exc:
                # the gateway's limit is lower than we thought (it restarted with another --max-body)
                if exc.limit is None or exc.limit >= self.body_limit():
                    raise
                self.max_body = exc.limit
                continue
            out.extend(value(SettleResult.from_wire, r, "$.results[]") for r in answer["results"])
            start = end
        return out

    def _encode_outcome(self, outcome: Outcome) -> bytes:
        try:
            return dumps(outcome.to_wire())
        except (TypeError, ValueError) as exc:  # a lone surrogate (UnicodeEncodeError), a NaN
            raise InvalidJobError(
                f"the outcome of job {outcome.delivery.job.id} cannot be sent as JSON: {exc}"
            ) from None

    def _fit(self, encoded: Sequence[bytes], start: int, outcomes: Sequence[Outcome]) -> int:
        """The end of the longest run from ``start`` that fits one request (at most BATCH outcomes)."""
        limit = self.body_limit()
        size = len(_SETTLE_HEAD) + len(_SETTLE_TAIL)
        end = start
        while end < len(encoded) and end - start < BATCH:
            grown = size + len(encoded[end]) + (1 if end > start else 0)
            if grown > limit:
                break
            size = grown
            end += 1
        if end == start:
            raise InvalidJobError(
                f"the outcome of job {outcomes[start].delivery.job.id} is {len(encoded[start])} bytes, "
                f"over the body limit of {limit} bytes of the gateway at {self.url}; "
                "return less data from the task (or raise the gateway's --max-body)"
            )
        return end

    def get_job(self, job_id: str) -> JobRecord | None:
        raw = self.request("GET", job_path(job_id), missing_ok=True, answer=schema.JobRecord)
        return None if raw is None else value(JobRecord.from_wire, raw, "$")

    def get_chain(self, chain_id: str) -> ChainRecord | None:
        raw = self.request("GET", chain_path(chain_id), missing_ok=True, answer=schema.ChainRecord)
        return None if raw is None else value(ChainRecord.from_wire, raw, "$")

    # --- failed queue --------------------------------------------------------------------

    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        out: list[FailedEntry] = []
        while len(out) < limit:
            page = min(BATCH, limit - len(out))
            params = {"limit": page, "offset": offset + len(out)}
            raw = self.request("GET", "/v1/failed", params=params, answer=schema.FailedEntries)
            entries = [value(FailedEntry.from_wire, e, "$.entries[]") for e in raw["entries"]]
            out.extend(entries)
            if len(entries) < page:
                break
        return out

    def get_failed(self, job_id: str) -> FailedEntry | None:
        raw = self.request(
            "GET", f"/v1/failed/{quote(job_id, safe='')}", missing_ok=True, answer=schema.FailedEntry
        )
        return None if raw is None else value(FailedEntry.from_wire, raw, "$")

    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        answer = self.request("POST", "/v1/failed/redrive", body={"ids": list(job_ids)}, answer=schema.Moved)
        return [str(i) for i in answer["moved"]]

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        body = {"ids": None if job_ids is None else list(job_ids)}
        return int(self.request("POST", "/v1/failed/purge", body=body)["purged"])

    # --- workers -------------------------------------------------------------------------

    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        body = {"info": info.to_wire(), "ttl": ttl}
        return bool(self.request("PUT", f"/v1/workers/{quote(info.name, safe='')}", body=body)["stop"])

    def remove_worker(self, name: str, instance: str | None = None) -> None:
        self._stop_readers(lambda key: key[2] == name)
        params = None if instance is None else {"instance": instance}
        self.request("DELETE", f"/v1/workers/{quote(name, safe='')}", params=params)

    def workers(self) -> list[WorkerInfo]:
        answer = self.request("GET", "/v1/workers", answer=schema.Workers)
        return [value(WorkerInfo.from_wire, w, "$.workers[]") for w in answer["workers"]]

    def request_stop(self, name: str) -> bool:
        return bool(self.request("POST", f"/v1/workers/{quote(name, safe='')}/stop")["stopped"])

    # --- browsing ------------------------------------------------------------------------

    def browse(
        self,
        *,
        queue: str,
        state: JobState,
        task: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> JobPage:
        check_limit(limit)
        check_state(state)
        if cursor is not None:
            decode_cursor(cursor)  # a bad one is a ValueError here, as on every backend
        params = {"queue": queue, "state": state.value, "limit": limit}
        params["order"] = "oldest" if oldest_first else "newest"
        if task is not None:
            params["task"] = task
        if cursor is not None:
            params["cursor"] = cursor
        raw = self.request("GET", "/v1/jobs", params=params, answer=schema.JobPage)
        records = tuple(value(JobRecord.from_wire, r, "$.records[]") for r in raw["records"])
        return JobPage(records=records, cursor=raw.get("cursor"))

    def counts(self, queue: str) -> dict[JobState, int]:
        raw = self.request("GET", "/v1/counts", params={"queue": queue}, answer=schema.JobCounts)
        return {JobState(name): int(n) for name, n in raw["counts"].items()}

    # --- cancelling ----------------------------------------------------------------------

    def cancel(self, job_ids: Sequence[str]) -> CancelReport:
        report = CancelReport()
        for chunk in _chunks(list(dict.fromkeys(job_ids)), BATCH * 10):
            answer = self.request(
                "POST", "/v1/jobs/cancel", body={"ids": list(chunk)}, answer=schema.CancelReport
            )
            part = CancelReport.from_wire(answer)
            report = CancelReport(
                cancelled=report.cancelled + part.cancelled,
                requested=report.requested + part.requested,
                finished=report.finished + part.finished,
                unknown=report.unknown + part.unknown,
            )
        return report

    def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        asked: list[str] = []
        for chunk in _chunks(list(job_ids), BATCH * 10):
            body = {"ids": list(chunk)}
            asked += self.request(
                "POST", "/v1/jobs/cancel-requested", body=body, answer=schema.CancelRequested
            )["ids"]
        return asked

    def purge(self, queue: str) -> int:
        answer = self.request("POST", "/v1/queues/purge", body={"queue": queue}, answer=schema.Purged)
        return int(answer["purged"])

    # --- paused queues -------------------------------------------------------------------

    def pause(self, queues: Sequence[str]) -> None:
        self.request("POST", "/v1/queues/pause", body={"queues": list(queues)}, answer=schema.PausedQueues)

    def resume(self, queues: Sequence[str]) -> None:
        self.request("POST", "/v1/queues/resume", body={"queues": list(queues)}, answer=schema.PausedQueues)

    def paused(self) -> list[str]:
        answer = self.request("GET", "/v1/queues/paused", answer=schema.PausedQueues)
        return [str(q) for q in answer["queues"]]

    # --- schedule slots --------------------------------------------------------------------

    def mark_slot(self, schedule: str, slot: float, job_id: str) -> None:
        body = {"schedule": schedule, "slot": float(slot), "job_id": job_id}
        self.request("POST", "/v1/schedules/mark", body=body, answer=schema.ScheduleState)

    def schedule_states(self, names: Sequence[str]) -> list[ScheduleState]:
        states: list[ScheduleState] = []
        for chunk in _chunks(list(names), SCHEDULE_NAMES):
            params = [("name", name) for name in chunk]
            answer = self.request("GET", "/v1/schedules", params=params, answer=schema.ScheduleStates)
            states += [value(ScheduleState.from_wire, s, "$.schedules[]") for s in answer["schedules"]]
        return states

    def pause_schedule(self, name: str) -> None:
        self.request("POST", "/v1/schedules/pause", body={"name": name}, answer=schema.ScheduleState)

    def resume_schedule(self, name: str) -> None:
        self.request("POST", "/v1/schedules/resume", body={"name": name}, answer=schema.ScheduleState)

    def stats(self) -> list[QueueStats]:
        answer = self.request("GET", "/v1/stats", answer=schema.Stats)
        return [value(QueueStats.from_wire, s, "$.queues[]") for s in answer["queues"]]

    # --- streams -------------------------------------------------------------------------

    def _reader(self, queues: tuple[str, ...], lease: float, worker: str, limit: int) -> StreamReader | None:
        key = (queues, lease, worker)
        with self._readers_lock:
            if self._closed:
                raise BackendError(f"the backend for {self.url} is closed")
            reader = self._readers.get(key)
            if reader is None:
                # a worker reserves with one set of queues; another set replaces its stream
                stale = [k for k in self._readers if k[2] == worker]
                for k in stale:
                    self._readers.pop(k).stop()
                # twice what a worker takes at once: the next batch is on its way while one runs
                reader = StreamReader(self, queues, lease, worker, self.prefetch or 2 * limit)
                self._readers[key] = reader
                reader.start()
        if reader.unsupported:
            logger.warning("stream_unsupported", url=self.url, fallback="long polling")
            self.delivery = "poll"
            return None
        return reader

    def _stop_readers(self, which: Any) -> None:
        with self._readers_lock:
            keys = [k for k in self._readers if which(k)]
            readers = [self._readers.pop(k) for k in keys]
        for reader in readers:
            reader.stop()

    def close(self) -> None:
        self._stop_readers(lambda key: True)
        with self._readers_lock:
            self._closed = True
        if self._owns_client:
            self._client.close()
