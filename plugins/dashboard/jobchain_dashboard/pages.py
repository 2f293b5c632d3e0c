"""The dashboard's pages and the changes they offer.

Pages (GET) read through :mod:`jobchain_dashboard.data`; changes (POST) act
through the App and redirect back with a notice. Names and ids travel as
query parameters or form fields, never as path segments, so a queue or job
id of any text reaches its page intact. Every change that touches many jobs
(a purge, a bulk re-drive) is shown with its count first and is refused if
the count moved since.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobchain.browsing import MAX_LIMIT, parse_state
from jobchain.errors import NotInFailedQueueError
from jobchain.model import JobState
from jobchain_dashboard import data
from jobchain_dashboard.security import BadParameterError, bounded_int, text_param

if TYPE_CHECKING:
    from jobchain_dashboard.web import Dashboard, Visit

__all__ = ["routes"]

#: the largest page of jobs the dashboard shows at once
MAX_PAGE = 200
#: the most jobs one bulk change touches
MAX_BULK = 10_000


def _required(params: object, name: str, *, max_len: int = 200) -> str:
    value = text_param(params, name, max_len=max_len)  # type: ignore[arg-type]
    if value is None:
        raise BadParameterError(f"{name} is required")
    return value


def routes(board: Dashboard) -> list[Route]:
    app = board.app

    async def overview(request: Request, visit: Visit) -> Response:
        view = await run_in_threadpool(data.overview, app, window=board.config.window)
        return board.render(visit, "overview.html", {"view": view})

    async def queue(request: Request, visit: Visit) -> Response:
        params = request.query_params
        name = _required(params, "name")
        state_text = text_param(params, "state", max_len=20) or "ready"
        try:
            state = parse_state(state_text)
        except ValueError as exc:
            raise BadParameterError(str(exc)) from None
        limit = bounded_int(params, "limit", 50, 1, min(MAX_PAGE, MAX_LIMIT))
        task = text_param(params, "task")
        cursor = text_param(params, "cursor", max_len=500)
        try:
            view = await run_in_threadpool(
                lambda: data.queue_page(app, name, state, task=task, cursor=cursor, limit=limit)
            )
        except ValueError as exc:  # a cursor of another listing
            raise BadParameterError(str(exc)) from None
        return board.render(visit, "queue.html", {"view": view, "name": name, "state": state, "task": task})

    async def job(request: Request, visit: Visit) -> Response:
        job_id = _required(request.query_params, "id")
        view = await run_in_threadpool(data.job_detail, app, job_id)
        if view is None:
            if await run_in_threadpool(app.chain(job_id).record) is not None:  # a schedule's chain, say
                return board.back(visit, "/chain?" + urlencode({"id": job_id}))
            return board._refuse(visit, 404, "No job has that id (it may have expired).")
        return board.render(visit, "job.html", {"view": view})

    async def chain(request: Request, visit: Visit) -> Response:
        chain_id = _required(request.query_params, "id")
        view = await run_in_threadpool(data.chain_detail, app, chain_id)
        if view is None:
            return board._refuse(visit, 404, "No chain or group has that id (it may have expired).")
        return board.render(visit, "chain.html", {"view": view})

    async def failed(request: Request, visit: Visit) -> Response:
        params = request.query_params
        task = text_param(params, "task")
        error_type = text_param(params, "error_type")
        limit = bounded_int(params, "limit", 50, 1, MAX_PAGE)
        offset = bounded_int(params, "offset", 0, 0, 1_000_000)
        view = await run_in_threadpool(
            lambda: data.failed_page(app, task=task, error_type=error_type, limit=limit, offset=offset)
        )
        return board.render(visit, "failed.html", {"view": view, "task": task, "error_type": error_type})

    def _bulk_action(params: object) -> str:
        action = _required(params, "action", max_len=10)
        if action not in ("redrive", "purge"):
            raise BadParameterError("action must be redrive or purge")
        return action

    async def failed_confirm(request: Request, visit: Visit) -> Response:
        params = request.query_params
        action = _bulk_action(params)
        task = text_param(params, "task")
        error_type = text_param(params, "error_type")
        ids = await run_in_threadpool(
            lambda: data.failed_matching(app, task=task, error_type=error_type, cap=MAX_BULK)
        )
        return board.render(
            visit,
            "confirm_failed.html",
            {"action": action, "task": task, "error_type": error_type, "count": len(ids), "moved": None},
        )

    async def workers(request: Request, visit: Visit) -> Response:
        view = await run_in_threadpool(data.workers, app)
        return board.render(visit, "workers.html", {"view": view})

    async def purge_confirm(request: Request, visit: Visit) -> Response:
        name = _required(request.query_params, "name")
        counts = await run_in_threadpool(app.jobs.counts, name)
        count = counts.get(JobState.QUEUED, 0) + counts.get(JobState.DELAYED, 0)
        return board.render(visit, "confirm_purge.html", {"name": name, "count": count})

    # --- changes ------------------------------------------------------------------

    def _queue_link(name: str) -> str:
        return "/queue?" + urlencode({"name": name})

    async def pause(request: Request, visit: Visit) -> Response:
        name = _required(request.state.form, "queue")
        await run_in_threadpool(app.pause, name)
        return board.back(visit, _queue_link(name), f"Paused {name}: no worker takes its jobs until resumed.")

    async def resume(request: Request, visit: Visit) -> Response:
        name = _required(request.state.form, "queue")
        await run_in_threadpool(app.resume, name)
        return board.back(visit, _queue_link(name), f"Resumed {name}.")

    async def purge(request: Request, visit: Visit) -> Response:
        name = _required(request.state.form, "queue")
        bounded_int(request.state.form, "expected", 0, 0, 10**9)
        removed = await run_in_threadpool(app.purge, name)
        return board.back(visit, _queue_link(name), f"Cancelled {removed} ready and delayed jobs of {name}.")

    async def cancel(request: Request, visit: Visit) -> Response:
        job_id = _required(request.state.form, "id")
        report = await run_in_threadpool(app.cancel, [job_id])
        if report.cancelled:
            text = "Cancelled: the job will not run."
        elif report.requested:
            text = "Asked the running job to stop; its worker acts within a second."
        elif report.finished:
            text = "The job had already finished; nothing to cancel."
        else:
            text = "No job has that id."
        return board.back(visit, "/job?" + urlencode({"id": job_id}), text)

    async def redrive(request: Request, visit: Visit) -> Response:
        job_id = _required(request.state.form, "id")
        try:
            await run_in_threadpool(app.failed.redrive, [job_id])
        except NotInFailedQueueError:
            return board.back(
                visit, "/job?" + urlencode({"id": job_id}), "That job is not in the failed queue."
            )
        return board.back(visit, "/job?" + urlencode({"id": job_id}), "Re-driven: the job is queued again.")

    async def redrive_chain(request: Request, visit: Visit) -> Response:
        chain_id = _required(request.state.form, "id")
        view = await run_in_threadpool(data.chain_detail, app, chain_id)
        ids = list(view.redrive_ids) if view is not None else []
        link = "/chain?" + urlencode({"id": chain_id})
        if not ids:
            return board.back(visit, link, "No step of this chain is in the failed queue.")
        try:
            moved = await run_in_threadpool(app.failed.redrive, ids)
        except NotInFailedQueueError:
            return board.back(visit, link, "The failed step left the failed queue meanwhile; nothing moved.")
        return board.back(
            visit, link, f"Re-driven from the failed step ({len(moved)} job(s)): the chain resumes."
        )

    async def failed_bulk(request: Request, visit: Visit) -> Response:
        form = request.state.form
        action = _bulk_action(form)
        task = text_param(form, "task")
        error_type = text_param(form, "error_type")
        expected = bounded_int(form, "expected", -1, 0, MAX_BULK)
        ids = await run_in_threadpool(
            lambda: data.failed_matching(app, task=task, error_type=error_type, cap=MAX_BULK)
        )
        if len(ids) != expected:  # the failed queue moved since the count was shown: show the new one
            return board.render(
                visit,
                "confirm_failed.html",
                {
                    "action": action,
                    "task": task,
                    "error_type": error_type,
                    "count": len(ids),
                    "moved": expected,
                },
                status=409,
            )
        if action == "redrive":
            moved = await run_in_threadpool(_redrive_present, app, ids)
            text = f"Re-driven {len(moved)} failed job(s)."
        else:
            purged = await run_in_threadpool(app.failed.purge, ids)
            text = f"Purged {purged} failed job(s)."
        return board.back(visit, "/failed", text)

    async def stop_worker(request: Request, visit: Visit) -> Response:
        name = _required(request.state.form, "name")
        asked = await run_in_threadpool(app.stop_worker, name)
        text = (
            f"Asked {name} to stop: it finishes what it runs, then exits."
            if asked
            else f"No live worker {name}."
        )
        return board.back(visit, "/workers", text)

    get = board.page
    post = board.action
    return [
        Route("/", get(overview)),
        Route("/queue", get(queue)),
        Route("/queue/purge", get(purge_confirm), methods=["GET"]),
        Route("/job", get(job)),
        Route("/chain", get(chain)),
        Route("/failed", get(failed)),
        Route("/failed/confirm", get(failed_confirm)),
        Route("/workers", get(workers)),
        Route("/queue/pause", post(pause), methods=["POST"]),
        Route("/queue/resume", post(resume), methods=["POST"]),
        Route("/queue/purge", post(purge), methods=["POST"]),
        Route("/job/cancel", post(cancel), methods=["POST"]),
        Route("/job/redrive", post(redrive), methods=["POST"]),
        Route("/chain/redrive", post(redrive_chain), methods=["POST"]),
        Route("/failed/bulk", post(failed_bulk), methods=["POST"]),
        Route("/workers/stop", post(stop_worker), methods=["POST"]),
    ]


def _redrive_present(app: object, ids: list[str]) -> list[str]:
    """Re-drive ``ids``; those re-driven or purged by someone else meanwhile are skipped."""
    from jobchain import App

    assert isinstance(app, App)
    try:
        return app.failed.redrive(ids)
    except NotInFailedQueueError as exc:
        gone = set(exc.job_ids)
        rest = [i for i in ids if i not in gone]
        return app.failed.redrive(rest) if rest else []
