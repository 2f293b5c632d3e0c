"""The dashboard as an ASGI application: :func:`create_app` builds it from a :class:`DashboardConfig`.

Every request goes through :class:`Dashboard`'s small pipeline: find (or
start) the visitor's session, send a visitor who must log in to ``/login``,
render a page (:mod:`jinja2`, autoescaped) or, for a change, check the form's
CSRF token, the role and the Origin header before acting, then redirect back
with a one-line notice. Nothing a backend raises reaches the response or the
log as a traceback: the page says what kind of failure it was.

Mount it inside another ASGI app with Starlette's ``Mount("/jobs", app=create_app(...))``;
its links follow the mount point.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

import structlog
from attrs import field, frozen
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from jobchain import App
from jobchain.errors import JobchainError, NotSupportedError
from jobchain_dashboard import live, views
from jobchain_dashboard.security import (
    ADMIN,
    COOKIE,
    Auth,
    BadParameterError,
    LoginThrottle,
    Session,
    Sessions,
    bounded_float,
    csrf_matches,
    security_headers,
)

__all__ = ["DashboardConfig", "create_app"]

log = structlog.get_logger("jobchain.dashboard")

#: the largest form a change may post
MAX_FORM_BYTES = 64 * 1024


@frozen(kw_only=True)
class DashboardConfig:
    """What a dashboard shows and who may use it."""

    app: App
    auth: Auth = field(factory=Auth)
    #: the least time between two live updates the server sends or serves a client, seconds
    min_interval: float = 1.0
    #: how long one live stream runs before the browser reconnects, seconds
    stream_lifetime: float = 600.0
    #: at most this many live streams at once
    max_streams: int = 100
    #: the figures' window on the overview, seconds
    window: float = 300.0
    #: cookies only over HTTPS (None: when the request came over HTTPS, e.g. through a TLS proxy)
    secure_cookies: bool | None = None
    #: serve /metrics (needs prometheus_client: ``pip install 'jobchain[metrics]'``)
    metrics: bool = True

    def __attrs_post_init__(self) -> None:
        if not 0.2 <= self.min_interval <= 60:
            raise ValueError("min_interval must be between 0.2 and 60 seconds")
        if not 10 <= self.window <= 86_400:
            raise ValueError("window must be between 10 seconds and a day")
        if not 1 <= self.max_streams <= 10_000:
            raise ValueError("max_streams must be between 1 and 10000")


Handler = Callable[[Request, "Visit"], Awaitable[Response]]


@frozen
class Visit:
    """One request's session, role, CSP nonce and mount point."""

    session: Session
    nonce: str
    base: str

    @property
    def role(self) -> str | None:
        return self.session.role

    @property
    def can_change(self) -> bool:
        return self.session.role == ADMIN


class Dashboard:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.app = config.app
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.snapshots = live.Snapshots(config.app, min_interval=config.min_interval)
        self.streams = 0
        self.notices: dict[str, str] = {}
        self.templates = Environment(
            loader=PackageLoader("jobchain_dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(views.FILTERS)
        self.templates.globals["qs"] = _query
        self.metrics_app = _metrics_app(config.app) if config.metrics else None

    # --- the pipeline -------------------------------------------------------------

    def _visit(self, request: Request) -> tuple[Visit, bool]:
        """The request's session (a fresh one when it has none or it ended) and whether it is new."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            session = self.sessions.new(self.config.auth.open_role())
        base = request.scope.get("root_path", "").rstrip("/")
        return Visit(session=session, nonce=secrets.token_urlsafe(18), base=base), fresh

    def _finish(self, request: Request, response: Response, visit: Visit, fresh: bool) -> Response:
        response.headers.update(security_headers(visit.nonce))
        if fresh:
            self._set_cookie(request, response, visit.session)
        return response

    def _set_cookie(self, request: Request, response: Response, session: Session) -> None:
        secure = self.config.secure_cookies
        if secure is None:
            secure = request.url.scheme == "https"
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="lax",
            secure=secure,
            path=(request.scope.get("root_path", "") or "") + "/",
        )

    def page(self, handler: Handler, *, login: bool = True) -> Callable[[Request], Awaitable[Response]]:
        """A GET endpoint: logged-in visitors only (unless ``login`` is False)."""

        async def endpoint(request: Request) -> Response:
            visit, fresh = self._visit(request)
            if login and visit.role is None:
                target = request.url.path[len(visit.base) :] or "/"
                if request.url.query:
                    target += "?" + request.url.query
                response: Response = RedirectResponse(
                    f"{visit.base}/login?{urlencode({'next': target})}", status_code=303
                )
            else:
                response = await self._guarded(request, visit, handler)
            return self._finish(request, response, visit, fresh)

        return endpoint

    def action(
        self, handler: Handler, *, role: str | None = ADMIN
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST endpoint: same origin, the session's CSRF token, and ``role`` (None: any visitor)."""

        async def endpoint(request: Request) -> Response:
            visit, fresh = self._visit(request)
            form = await _form(request)
            if form is None:
                response: Response = self._refuse(visit, 400, "This form could not be read.")
            elif not _same_origin(request):
                response = self._refuse(visit, 403, "This form was not sent from this dashboard.")
            elif fresh or not csrf_matches(visit.session, form.get("csrf")):
                response = self._refuse(
                    visit, 403, "This form has expired or was not sent from this dashboard: reload the page."
                )
            elif role is not None and visit.role != role:
                response = self._refuse(visit, 403, "Your login may look but not change anything.")
            else:
                request.state.form = form
                response = await self._guarded(request, visit, handler)
            # a post without a live session starts none: a cross-site form cannot replace the cookie
            return self._finish(request, response, visit, False)

        return endpoint

    async def _guarded(self, request: Request, visit: Visit, handler: Handler) -> Response:
        try:
            return await handler(request, visit)
        except BadParameterError as exc:
            return self._refuse(visit, 400, str(exc))
        except NotSupportedError as exc:
            return self._refuse(visit, 501, f"The backend cannot do that: {exc}")
        except (JobchainError, OSError) as exc:
            # the kind of failure and no more: a message can hold a URL with a password
            log.warning("dashboard_backend_error", error=type(exc).__name__, path=request.url.path)
            return self._refuse(visit, 503, f"The backend did not answer ({type(exc).__name__}); try again.")
        except Exception as exc:
            log.error("dashboard_error", error=type(exc).__name__, path=request.url.path)
            return self._refuse(
                visit, 500, "Something went wrong on the dashboard; the log names the error type."
            )

    def _refuse(self, visit: Visit, status: int, message: str) -> Response:
        return self.render(visit, "error.html", {"status": status, "message": message}, status=status)

    def render(self, visit: Visit, name: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
        template = self.templates.get_template(name)
        notice = self.notices.pop(visit.session.id, None)
        body = template.render(
            base=visit.base,
            nonce=visit.nonce,
            csrf=visit.session.csrf,
            role=visit.role,
            can_change=visit.can_change,
            auth_required=self.config.auth.required,
            notice=notice,
            min_interval=self.config.min_interval,
            **context,
        )
        return HTMLResponse(body, status_code=status)

    def notify(self, visit: Visit, text: str) -> None:
        """A one-line notice shown on the next page this session loads."""
        if len(self.notices) > 10_000:
            self.notices.clear()
        self.notices[visit.session.id] = text

    def back(self, visit: Visit, path: str, text: str | None = None) -> Response:
        if text:
            self.notify(visit, text)
        return RedirectResponse(visit.base + path, status_code=303)

    # --- logging in and out -------------------------------------------------------

    async def login_page(self, request: Request, visit: Visit) -> Response:
        return self.render(visit, "login.html", {"next": _safe_next(request.query_params.get("next"))})

    async def login(self, request: Request, visit: Visit) -> Response:
        form: dict[str, str] = request.state.form
        client = request.client.host if request.client else "?"
        target = _safe_next(form.get("next"))
        if not self.config.auth.required:
            return self.back(visit, target)
        if not self.throttle.allowed(client):
            return self.render(
                visit,
                "login.html",
                {"next": target, "error": "Too many attempts; wait a minute."},
                status=429,
            )
        role = self.config.auth.role_of(form.get("token", "")[:1000])
        if role is None:
            self.throttle.failed(client)
            log.info("dashboard_login_failed", client=client)
            return self.render(
                visit, "login.html", {"next": target, "error": "That token is not valid."}, status=401
            )
        # a new session id on login: an id seen before logging in is worth nothing after
        self.sessions.drop(visit.session.id)
        session = self.sessions.new(role)
        log.info("dashboard_login", role=role, client=client)
        response = RedirectResponse(visit.base + target, status_code=303)
        self._set_cookie(request, response, session)
        return response

    async def logout(self, request: Request, visit: Visit) -> Response:
        self.sessions.drop(visit.session.id)
        response = RedirectResponse(visit.base + "/login", status_code=303)
        response.delete_cookie(COOKIE, path=(request.scope.get("root_path", "") or "") + "/")
        return response

    # --- live updates -------------------------------------------------------------

    async def live_json(self, request: Request, visit: Visit) -> Response:
        snapshot = await run_in_threadpool(self.snapshots.get)
        return JSONResponse(snapshot, headers={"retry-after": f"{self.config.min_interval:g}"})

    async def live_stream(self, request: Request, visit: Visit) -> Response:
        interval = bounded_float(request.query_params, "interval", 2.0, self.config.min_interval, 60.0)
        if self.streams >= self.config.max_streams:
            return JSONResponse({"error": "too many live streams; poll /live.json"}, status_code=503)
        session_id = visit.session.id
        lifetime = self.config.stream_lifetime

        async def events() -> Any:
            self.streams += 1
            started = time.monotonic()
            try:
                yield f"retry: {int(interval * 1000)}\n\n"
                while time.monotonic() - started < lifetime:
                    if self.sessions.get(session_id) is None:  # logged out, or ended
                        return
                    snapshot = await run_in_threadpool(self.snapshots.get)
                    yield f"event: counts\ndata: {json.dumps(snapshot, separators=(',', ':'))}\n\n"
                    await asyncio.sleep(interval)
            finally:
                self.streams -= 1

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
        )

    async def metrics(self, request: Request, visit: Visit) -> Response:
        """The backend's counts for Prometheus: a logged-in session, or ``Authorization: Bearer TOKEN``."""
        if visit.role is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or self.config.auth.role_of(token.strip()[:1000]) is None:
                return PlainTextResponse(
                    "log in, or send Authorization: Bearer TOKEN\n",
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
        if self.metrics_app is None:
            return self._refuse(
                visit,
                404,
                "Metrics are not served: install prometheus_client (pip install 'jobchain[metrics]').",
            )
        text, content_type = await run_in_threadpool(self.metrics_app)
        return Response(text, media_type=content_type)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        body = resources.files("jobchain_dashboard").joinpath("static", name).read_bytes()
        headers = {"x-content-type-options": "nosniff", "cache-control": "max-age=300"}
        return Response(body, media_type=_STATIC[name], headers=headers)


_STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript", "favicon.svg": "image/svg+xml"}


def _metrics_app(app: App) -> Callable[[], tuple[bytes, str]] | None:
    """What ``/metrics`` serves: the backend's counts (:func:`jobchain.metrics.backend_registry`)."""
    try:  # prometheus_client is optional: pip install 'jobchain[metrics]'
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from jobchain.metrics import backend_registry
    except ImportError:
        return None
    registry = backend_registry(app)
    return lambda: (generate_latest(registry), CONTENT_TYPE_LATEST)


def _safe_next(value: str | None) -> str:
    """A local path to go back to after logging in; anything else (another site, a scheme) is ``/``."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another origin (Origin, else Referer).

    A client that sends neither (not a browser) still needs the session's CSRF token.
    """
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True
    if origin == "null":
        return False
    netloc = origin.split("://", 1)[-1].split("/", 1)[0]
    return netloc == request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str] | None:
    """The posted urlencoded form (first value of each field), or None when it is not one or too big."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=2000
        )
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in fields.items() if values}


def _query(**params: Any) -> str:
    """``?a=1&b=2`` of the parameters that are set (templates build links with it)."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return "?" + urlencode(kept) if kept else ""


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard as a Starlette application (serve it, or mount it in yours)."""
    board = Dashboard(config)
    from jobchain_dashboard import pages

    routes = [
        Route("/static/{name}", board.static),
        Route("/login", board.page(board.login_page, login=False), methods=["GET"]),
        Route("/login", board.action(board.login, role=None), methods=["POST"]),
        Route("/logout", board.action(board.logout, role=None), methods=["POST"]),
        Route("/live", board.page(board.live_stream)),
        Route("/live.json", board.page(board.live_json)),
        Route("/metrics", board.page(board.metrics, login=False)),
        *pages.routes(board),
    ]
    starlette = Starlette(routes=routes)
    starlette.state.dashboard = board
    return starlette
