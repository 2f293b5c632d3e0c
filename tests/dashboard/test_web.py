"""The dashboard's HTTP face without a browser: pages, logging in, CSRF, roles, headers, bounds, escaping.

Each test drives the ASGI app with Starlette's test client over an App on a
private memory backend with a real worker; the browser tests
(test_browser.py) do the same journeys in Chromium against Redis.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from jobchain_dashboard import Auth, DashboardConfig, create_app
from starlette.applications import Starlette
from starlette.routing import Mount

from jobchain import App, Fail, Retry, chain
from jobchain.model import JobState
from jobchain.testing import eventually

ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"
XSS = "<script>window.__xss = 1</script><img src=x onerror=alert(1)>"


@pytest.fixture
def jobs(app: App) -> Iterator[App]:

    @app.task(name="ok")
    def ok(*args: Any) -> Any:
        return list(args)

    @app.task(name="boom", retry=Retry(attempts=2, base=0.01, cap=0.01))
    def boom(n: int) -> int:
        raise ValueError(f"boom {n}")

    @app.task(name="halt")
    def halt(n: int) -> int:
        raise Fail("halted here")

    app.jobs_defined = (ok, boom, halt)  # type: ignore[attr-defined]
    return app


class Served:
    """An ASGI app served by uvicorn on a thread: a real socket on a free loopback port."""

    def __init__(self, asgi: Any) -> None:
        self.clients: list[httpx.Client] = []
        config = uvicorn.Config(
            asgi, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-dashboard", daemon=True)
        self.thread.start()
        eventually(lambda: self.server.started, timeout=30)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def client(self, **options: Any) -> httpx.Client:
        self.clients.append(httpx.Client(base_url=self.url, follow_redirects=False, timeout=30, **options))
        return self.clients[-1]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Served] = []

    def start(asgi: Any) -> Served:
        started.append(Served(asgi))
        return started[-1]

    yield start
    for served in started:
        served.stop()


@pytest.fixture
def client_of(serve: Any) -> Any:
    def make(app: App, auth: Auth | None = None, **config: Any) -> httpx.Client:
        return serve(create_app(DashboardConfig(app=app, auth=auth or Auth(), **config))).client()

    return make


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def _login(client: httpx.Client, token: str) -> None:
    page = client.get("/login")
    answer = client.post("/login", data={"csrf": _csrf(page.text), "token": token, "next": "/"})
    assert answer.status_code == 303, answer.text


def test_every_page_renders_on_an_open_loopback_dashboard(client_of: Any, jobs: App) -> None:
    ok, boom, halt = jobs.jobs_defined  # type: ignore[attr-defined]
    with jobs.worker(concurrency=2):
        done = ok.submit(1, "two")
        done.wait(timeout=10)
        failed = boom.submit(7)
        eventually(lambda: jobs.jobs.get(failed.id).state is JobState.FAILED, timeout=10)
        run = chain(ok, halt, ok).submit(3)
        eventually(lambda: run.status() == "failed", timeout=10)
    client = client_of(jobs)
    pages = {
        "/": "Overview",
        "/queue?name=default": "Queue",
        "/queue?name=default&state=failed": "boom",
        f"/job?id={done.id}": "succeeded",
        f"/job?id={failed.id}": "Attempts that failed",
        f"/chain?id={run.id}": "Re-drive from the failed step",
        "/failed": "2 job(s) match",
        "/failed?error_type=ValueError": "1 job(s) match",
        "/failed/confirm?action=redrive": "2",
        "/queue/purge?name=default": "ready and delayed",
        "/workers": "Schedules",
    }
    for path, text in pages.items():
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert text in answer.text, path
    chain_page = client.get(f"/chain?id={run.id}").text
    assert re.search(
        r"ok</a>\s*\(succeeded\).*halt</a>\s*\(failed\).*ok</a>\s*\(not executed\)", chain_page, re.S
    )


def test_security_headers_and_a_fresh_nonce_on_every_page(client_of: Any, jobs: App) -> None:
    client = client_of(jobs)
    first, second = client.get("/"), client.get("/")
    policy = first.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert first.headers["x-frame-options"] == "DENY"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert nonce.group(1) != re.search(r"'nonce-([^']+)'", second.headers["content-security-policy"]).group(1)  # type: ignore[union-attr]
    scripts = re.findall(r"<script[^>]*>", first.text)
    assert scripts
    assert all(f'nonce="{nonce.group(1)}"' in s and "src=" in s for s in scripts)
    assert "<script>" not in first.text
    assert "onclick" not in first.text
    assert "style=" not in first.text
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie


def test_job_arguments_and_queue_names_are_escaped(client_of: Any, jobs: App) -> None:
    ok = jobs.jobs_defined[0]  # type: ignore[attr-defined]
    handle = ok.submit(XSS)
    jobs.submit(ok.s(XSS).set(queue="<b>q</b>"))
    client = client_of(jobs)
    for path in (f"/job?id={handle.id}", "/queue?name=default", "/", "/queue?name=%3Cb%3Eq%3C/b%3E"):
        html = client.get(path).text
        for raw in ("<script>window", "<img src=x", "<b>q</b>"):
            assert raw not in html, (path, raw)
    assert "&lt;script&gt;window.__xss" in client.get(f"/job?id={handle.id}").text
    assert "&lt;b&gt;q&lt;/b&gt;" in client.get("/").text


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(client_of: Any, jobs: App) -> None:
    client = client_of(jobs)
    page = client.get("/queue?name=default")
    assert client.post("/queue/pause", data={"queue": "default"}).status_code == 403
    assert client.post("/queue/pause", data={"queue": "default", "csrf": "forged"}).status_code == 403
    assert jobs.paused() == []
    token = _csrf(page.text)
    foreign = client.post(
        "/queue/pause", data={"queue": "default", "csrf": token}, headers={"origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert jobs.paused() == []
    assert client.post("/queue/pause", data={"queue": "default", "csrf": token}).status_code == 303
    assert jobs.paused() == ["default"]
    assert "Paused default" in client.get("/queue?name=default").text


def test_a_form_that_is_not_urlencoded_or_too_big_is_refused(client_of: Any, jobs: App) -> None:
    client = client_of(jobs)
    token = _csrf(client.get("/queue?name=default").text)
    assert client.post("/queue/pause", json={"queue": "default", "csrf": token}).status_code == 400
    big = {"queue": "default", "csrf": token, "pad": "x" * 70_000}
    assert client.post("/queue/pause", data=big).status_code == 400
    assert jobs.paused() == []


@pytest.mark.parametrize(
    "path",
    [
        "/queue?name=default&limit=100000",
        "/queue?name=default&limit=0",
        "/queue?name=default&limit=abc",
        "/queue?name=default&state=exploded",
        "/queue?name=default&cursor=not-a-cursor",
        "/queue",
        "/failed?offset=-1",
        "/failed?limit=9999999999999",
        "/failed/confirm?action=delete-everything",
        "/live?interval=0.001",
        "/live?interval=nan",
        "/job?id=" + "x" * 300,
    ],
)
def test_out_of_range_parameters_get_a_one_line_400(client_of: Any, jobs: App, path: str) -> None:
    answer = client_of(jobs).get(path)
    assert answer.status_code == 400, answer.text
    message = re.search(r'<p class="error" role="alert">([^<]*)</p>', answer.text)
    assert message is not None
    assert message.group(1).strip()
    assert "Traceback" not in answer.text


def test_login_is_required_when_a_token_is_set_and_logout_ends_the_session(client_of: Any, jobs: App) -> None:
    client = client_of(jobs, Auth(admin_tokens=(ADMIN,)))
    answer = client.get("/failed?task=x")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")
    assert client.get("/live.json").status_code == 303
    page = client.get("/login")
    wrong = client.post("/login", data={"csrf": _csrf(page.text), "token": "not-the-token-at-all"})
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    old_cookie = client.cookies.get("jobchain_dashboard")
    _login(client, ADMIN)
    assert client.cookies.get("jobchain_dashboard") != old_cookie  # a new session id on login
    home = client.get("/")
    assert home.status_code == 200
    assert "Log out" in home.text
    cookie = client.cookies.get("jobchain_dashboard")
    assert client.post("/logout", data={"csrf": _csrf(home.text)}).status_code == 303
    with httpx.Client(base_url=str(client.base_url), cookies={"jobchain_dashboard": cookie or ""}) as replay:
        assert replay.get("/").status_code == 303  # the old cookie is worth nothing now


def test_the_read_only_role_sees_everything_and_changes_nothing(client_of: Any, jobs: App) -> None:
    ok = jobs.jobs_defined[0]  # type: ignore[attr-defined]
    waiting = ok.submit(1)
    client = client_of(jobs, Auth(admin_tokens=(ADMIN,), read_tokens=(READER,)))
    _login(client, READER)
    page = client.get(f"/job?id={waiting.id}")
    assert page.status_code == 200
    assert "read-only" in page.text
    assert 'id="cancel"' not in page.text
    token = _csrf(page.text)
    refused = client.post("/job/cancel", data={"csrf": token, "id": waiting.id})
    assert refused.status_code == 403
    assert client.post("/queue/pause", data={"csrf": token, "queue": "default"}).status_code == 403
    assert jobs.jobs.get(waiting.id).state is JobState.QUEUED  # type: ignore[union-attr]
    assert jobs.paused() == []


def test_a_bulk_change_acts_on_the_count_it_showed_or_asks_again(client_of: Any, jobs: App) -> None:
    boom = jobs.jobs_defined[1]  # type: ignore[attr-defined]
    with jobs.worker(concurrency=2):
        first = [boom.submit(i) for i in range(3)]
        eventually(lambda: len(jobs.failed) == 3, timeout=10)
        client = client_of(jobs)
        confirm = client.get("/failed/confirm?action=purge&task=boom")
        assert "<strong>3</strong>" in confirm.text
        boom.submit(99)
        eventually(lambda: len(jobs.failed) == 4, timeout=10)
    stale = client.post(
        "/failed/bulk",
        data={
            "csrf": _csrf(confirm.text),
            "action": "purge",
            "task": "boom",
            "error_type": "",
            "expected": "3",
        },
    )
    assert stale.status_code == 409
    assert "4 match now" in stale.text
    assert len(jobs.failed) == 4
    done = client.post(
        "/failed/bulk",
        data={
            "csrf": _csrf(stale.text),
            "action": "purge",
            "task": "boom",
            "error_type": "",
            "expected": "4",
        },
    )
    assert done.status_code == 303
    assert len(jobs.failed) == 0
    assert all(jobs.failed.show(h.id) is None for h in first)


def test_live_counts_are_served_and_read_once_per_interval(client_of: Any, jobs: App) -> None:
    ok = jobs.jobs_defined[0]  # type: ignore[attr-defined]
    client = client_of(jobs, min_interval=30.0)
    before = client.get("/live.json").json()
    ok.submit(1)
    cached = client.get("/live.json").json()
    assert cached == before  # read again only after the interval, however often it is asked
    fresh = client_of(jobs).get("/live.json").json()
    assert fresh["queues"]["default"]["ready"] == 1
    assert fresh["totals"]["ready"] == 1


def test_mounted_under_a_prefix_its_links_and_cookie_follow(serve: Any, jobs: App) -> None:
    outer = Starlette(routes=[Mount("/ops/jobs", app=create_app(DashboardConfig(app=jobs)))])
    client = serve(outer).client()
    page = client.get("/ops/jobs/")
    assert page.status_code == 200
    assert 'href="/ops/jobs/static/dashboard.css"' in page.text
    assert "path=/ops/jobs/" in page.headers["set-cookie"].lower()
    assert client.get("/ops/jobs/static/dashboard.js").status_code == 200
    token = _csrf(client.get("/ops/jobs/queue?name=default").text)
    moved = client.post("/ops/jobs/queue/pause", data={"csrf": token, "queue": "default"})
    assert moved.status_code == 303
    assert moved.headers["location"] == "/ops/jobs/queue?name=default"


def test_a_token_shorter_than_twelve_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 12"):
        Auth(admin_tokens=("short",))


def test_purge_shows_the_count_then_cancels_the_waiting_jobs(client_of: Any, jobs: App) -> None:
    ok = jobs.jobs_defined[0]  # type: ignore[attr-defined]
    waiting = [ok.submit(i) for i in range(3)]
    client = client_of(jobs)
    confirm = client.get("/queue/purge?name=default")
    assert "<strong>3</strong>" in confirm.text
    form = {"csrf": _csrf(confirm.text), "queue": "default", "expected": "3"}
    done = client.post("/queue/purge", data=form)
    assert done.status_code == 303
    assert "Cancelled 3 ready and delayed jobs of default" in client.get("/queue?name=default").text
    states = {jobs.jobs.get(h.id).state for h in waiting}  # type: ignore[union-attr]
    assert states == {JobState.CANCELLED}


def test_a_worker_asked_to_stop_from_the_workers_page_stops(client_of: Any, jobs: App) -> None:
    worker = jobs.worker(concurrency=1, name="stoppable", poll=0.1)
    worker.start()
    try:
        eventually(lambda: [w.name for w in jobs.workers()] == ["stoppable"], timeout=10)
        client = client_of(jobs)
        page = client.get("/workers")
        assert 'data-worker="stoppable"' in page.text
        asked = client.post("/workers/stop", data={"csrf": _csrf(page.text), "name": "stoppable"})
        assert asked.status_code == 303
        eventually(lambda: jobs.workers() == [], timeout=10)
    finally:
        worker.stop()


def test_metrics_need_a_login_or_the_bearer_token(client_of: Any, jobs: App) -> None:
    pytest.importorskip("prometheus_client")
    ok = jobs.jobs_defined[0]  # type: ignore[attr-defined]
    ok.submit(1)
    client = client_of(jobs, Auth(admin_tokens=(ADMIN,), read_tokens=(READER,)))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer wrong-token-0000"}).status_code == 401
    scraped = client.get("/metrics", headers={"authorization": f"Bearer {READER}"})
    assert scraped.status_code == 200
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    assert samples[("jobchain_queue_jobs", (("queue", "default"), ("state", "ready")))] == 1.0
    assert samples[("jobchain_backend_up", ())] == 1.0


def test_visitors_without_a_login_cannot_push_out_a_logged_in_session() -> None:
    """Requests without a cookie each make a visitor's session; a flood of them ends no login."""
    from jobchain_dashboard.security import ADMIN, Sessions

    sessions = Sessions(capacity=3)
    logged_in = sessions.new(ADMIN)
    first_visitor = sessions.new(None)
    for _ in range(50):
        sessions.new(None)
    assert sessions.get(logged_in.id) is logged_in
    assert sessions.get(first_visitor.id) is None  # visitors go first among themselves
    assert len(sessions) == 4
    sessions.drop(logged_in.id)
    assert sessions.get(logged_in.id) is None
