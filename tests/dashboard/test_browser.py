"""The dashboard in headless Chromium, against a real Redis, a real worker process and ``jobchain dashboard``.

The tests of this module share one dashboard, one worker and one browser
(see conftest.py) and run in the order written: log in, load every page,
follow a failed chain to its failed step and re-drive it, cancel a job, pause
and resume a queue, watch a count change without reloading, then the
security items (markup in arguments and queue names, forged posts, an
out-of-range parameter, the read-only role) and logging out.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from dash_rig import ADMIN_TOKEN, READ_TOKEN, Site, eventually

from jobchain.model import JobState

pytestmark = pytest.mark.slow

XSS = "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>"
MARKUP_QUEUE = "<b>bold</b>"


def _by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _login(driver: Any, site: Site, token: str) -> None:
    driver.get(site.page("/login"))
    _by_id(driver, "token").send_keys(token)
    _by_id(driver, "login").click()
    eventually(lambda: "/login" not in driver.current_url, 10, "the login to go through")


def _text(driver: Any) -> str:
    """The page's main text, once the page a click led to has loaded."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def read() -> str | None:
        try:
            if driver.execute_script("return document.readyState") != "complete":
                return None
            return str(driver.find_element("tag name", "main").text)
        except (StaleElementReferenceException, NoSuchElementException):
            return None

    return str(eventually(read, 10, "the page to load"))


@pytest.fixture
def admin(browser: Any, site: Site) -> Any:
    """The browser, logged in as admin: a test may run alone, or after one that logged out or in as reader."""
    browser.get(site.page("/"))
    if "/login" in browser.current_url or "read-only" in browser.find_element("tag name", "header").text:
        browser.delete_all_cookies()
        _login(browser, site, ADMIN_TOKEN)
    return browser


def test_a_visitor_is_sent_to_log_in_and_a_wrong_token_is_refused(browser: Any, site: Site) -> None:
    browser.delete_all_cookies()
    browser.get(site.page("/failed"))
    assert "/login" in browser.current_url
    _by_id(browser, "token").send_keys("not-the-right-token")
    _by_id(browser, "login").click()
    assert "That token is not valid." in _text(browser)
    _by_id(browser, "token").send_keys(ADMIN_TOKEN)
    _by_id(browser, "login").click()
    eventually(lambda: browser.current_url.endswith("/failed"), 10, "the page asked for before logging in")
    assert "Failed queue" in _text(browser)


def test_every_page_loads_with_real_jobs(admin: Any, browser: Any, site: Site, shots: Any) -> None:
    import dash_app

    site.broken.touch()
    try:
        halted = dash_app.pipeline.submit(20)
        eventually(lambda: halted.status() == "failed", 30, "the chain to halt")
    finally:
        site.broken.unlink()
    done = [dash_app.echo.submit(i, label=f"order-{i}") for i in range(12)]
    for handle in done:
        handle.wait(timeout=30)
    for i in range(3):
        dash_app.wait_here.submit(i)
    nap = dash_app.nap.submit(30)
    eventually(lambda: site.app.jobs.get(nap.id).state is JobState.RUNNING, 20, "the nap to start")

    browser.get(site.page("/"))
    assert browser.find_element("tag name", "h1").text == "Overview"
    rows = [r.get_attribute("data-queue") for r in _css(browser, "#queues tbody tr[data-queue]")]
    assert rows[:2] == ["default", "idle"]  # worst first: default has the failed job
    shots(browser, "overview")

    browser.get(site.page("/queue?" + urlencode({"name": "default", "state": "succeeded"})))
    assert "Queue default" in browser.find_element("tag name", "h1").text
    assert len(_css(browser, "#jobs tbody tr")) >= 12
    shots(browser, "queue")

    failed_id = halted.job_ids()[1][0]
    browser.get(site.page("/job?" + urlencode({"id": failed_id})))
    attempts = _css(browser, "#attempts .attempt")
    assert len(attempts) >= 1
    assert "the parse service is down" in attempts[-1].text
    assert _by_id(browser, "job-state").text == "failed"
    shots(browser, "job")

    browser.get(site.page("/workers"))
    row = _css(browser, "tr[data-worker='dash-worker']")
    assert row
    assert "zone=test" in row[0].text
    assert nap.id in row[0].text
    shots(browser, "workers")
    site.app.cancel([nap.id])

    browser.get(site.page("/failed"))
    assert failed_id in _text(browser)
    shots(browser, "failed")


def test_follow_a_failed_chain_to_its_failed_step_and_redrive_it(
    admin: Any, browser: Any, site: Site, shots: Any
) -> None:
    import dash_app

    site.broken.touch()
    run = dash_app.pipeline.submit(1)
    eventually(lambda: run.status() == "failed", 30, "the chain to halt")
    failed_id = run.job_ids()[1][0]

    browser.get(site.page("/failed?task=parse"))
    browser.find_element("link text", failed_id).click()
    _by_id(browser, "chain-link").click()
    steps = _by_id(browser, "steps").text.replace("\n", " ")
    assert "fetch (succeeded) → parse (failed) → publish (not executed)" in " ".join(steps.split())
    shots(browser, "chain")

    site.broken.unlink()  # the cause is fixed
    _by_id(browser, "redrive-chain").click()
    assert "Re-driven from the failed step" in _text(browser)
    assert run.wait(timeout=30) == "published 4"
    browser.refresh()
    assert _by_id(browser, "chain-state").text == "succeeded"
    assert "publish (succeeded)" in " ".join(_by_id(browser, "steps").text.split())


def test_cancel_a_waiting_job(admin: Any, browser: Any, site: Site) -> None:
    import dash_app

    waiting = dash_app.wait_here.submit(7)
    browser.get(site.page("/job?" + urlencode({"id": waiting.id})))
    assert _by_id(browser, "job-state").text == "queued"
    _by_id(browser, "cancel").click()
    assert "Cancelled: the job will not run." in _text(browser)
    assert _by_id(browser, "job-state").text == "cancelled"
    assert site.app.jobs.get(waiting.id).state is JobState.CANCELLED  # type: ignore[union-attr]


def test_pause_a_queue_then_resume_it(admin: Any, browser: Any, site: Site) -> None:
    import dash_app

    browser.get(site.page("/queue?name=default"))
    _by_id(browser, "pause").click()
    assert "Paused default" in _text(browser)
    assert site.app.paused() == ["default"]
    time.sleep(1.0)  # workers honour a pause within 0.5 s (they read the paused set at most that often)
    held = dash_app.echo.submit("held")
    time.sleep(1.5)  # the job must still wait
    assert held.status() == "queued"
    _by_id(browser, "resume").click()
    assert "Resumed default" in _text(browser)
    assert held.wait(timeout=30) == [["held"], {}]


def test_a_count_changes_live_without_reloading(admin: Any, browser: Any, site: Site) -> None:
    import dash_app

    browser.get(site.page("/"))
    browser.execute_script("window.__same_page = true;")
    cell = _css(browser, "td[data-live='queue:ready:idle']")[0]
    before = int(cell.text)
    for i in range(3):
        dash_app.wait_here.submit(100 + i)
    eventually(lambda: cell.text == str(before + 3), 20, "the ready count to change on the page")
    assert browser.execute_script("return window.__same_page === true;")  # no reload happened
    assert "on" in _by_id(browser, "live-status").get_attribute("class")  # server-sent events, not polling


def test_counts_change_by_polling_when_the_stream_is_blocked(admin: Any, browser: Any, site: Site) -> None:
    import dash_app

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/live?*"]})  # no server-sent events
    try:
        browser.get(site.page("/"))
        status = _by_id(browser, "live-status")
        eventually(lambda: "polling" in status.get_attribute("class"), 20, "the page to fall back to polling")
        cell = _css(browser, "td[data-live='queue:ready:idle']")[0]
        before = int(cell.text)
        dash_app.wait_here.submit(200)
        eventually(lambda: cell.text == str(before + 1), 20, "the ready count to change by polling")
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        browser.execute_cdp_cmd("Network.disable", {})


def test_markup_in_arguments_and_queue_names_stays_text(admin: Any, browser: Any, site: Site) -> None:
    import dash_app

    handle = dash_app.echo.submit(XSS, note=XSS)
    handle.wait(timeout=30)
    site.app.submit(dash_app.wait_here.s(1).set(queue=MARKUP_QUEUE))
    browser.get(site.page("/job?" + urlencode({"id": handle.id})))
    assert XSS in _by_id(browser, "arguments").text
    assert XSS in _by_id(browser, "result").text
    assert browser.execute_script("return typeof window.__xss;") == "undefined"
    assert not _css(browser, "#arguments img, #result img, main script")
    browser.get(site.page("/"))
    row = _css(browser, f"tr[data-queue='{MARKUP_QUEUE}']")[0]
    assert MARKUP_QUEUE in row.text
    assert not _css(browser, "#queues b")
    browser.get(site.page("/queue?" + urlencode({"name": MARKUP_QUEUE})))
    assert MARKUP_QUEUE in browser.find_element("tag name", "h1").text
    assert browser.execute_script("return typeof window.__xss;") == "undefined"


def test_forged_posts_are_refused_and_change_nothing(admin: Any, browser: Any, site: Site) -> None:
    # from the dashboard's own origin, without the token
    browser.get(site.page("/"))
    browser.execute_script(
        """
        const form = document.createElement('form');
        form.method = 'post';
        form.action = arguments[0];
        const field = document.createElement('input');
        field.name = 'queue'; field.value = 'default';
        form.appendChild(field);
        document.body.appendChild(form);
        form.submit();
        """,
        site.page("/queue/pause"),
    )
    eventually(lambda: "/queue/pause" in browser.current_url, 10, "the forged form to be answered")
    assert "expired or was not sent from this dashboard" in _text(browser)
    # from another site: the session cookie (SameSite=Lax) does not go with a cross-site post
    page = (
        "<form id=f method=post action='" + site.page("/queue/pause") + "'>"
        "<input name=queue value=default><input name=csrf value=guess></form>"
        "<script>document.getElementById('f').submit()</script>"
    )
    browser.get("data:text/html;charset=utf-8," + page)
    eventually(lambda: "/queue/pause" in browser.current_url, 10, "the cross-site form to be answered")
    assert "not sent from this dashboard" in _text(browser)
    assert site.app.paused() == []
    browser.get(site.page("/"))  # and the refusal did not replace the session: still logged in
    assert "/login" not in browser.current_url


def test_an_out_of_range_parameter_is_a_one_line_error(admin: Any, browser: Any, site: Site) -> None:
    browser.get(site.page("/queue?name=default&limit=100000"))
    assert "limit must be between 1 and 200, got 100000" in _text(browser)
    browser.get(site.page("/failed?offset=-5"))
    assert "offset must be between 0 and" in _text(browser)
    assert "Traceback" not in browser.page_source


def test_the_read_only_login_sees_but_cannot_change(admin: Any, browser: Any, site: Site) -> None:
    browser.get(site.page("/"))
    _by_id(browser, "logout").click()
    _login(browser, site, READ_TOKEN)
    browser.get(site.page("/queue?name=default"))
    assert "read-only" in browser.find_element("tag name", "header").text
    assert not _css(browser, "#pause, #purge")
    browser.get(site.page("/failed"))
    assert not _css(browser, "#bulk-redrive, #bulk-purge")


def test_the_pages_fit_a_phone(admin: Any, browser: Any, site: Site, shots: Any) -> None:
    browser.set_window_size(390, 844)
    try:
        for path in ("/", "/failed", "/workers", "/queue?name=default"):
            browser.get(site.page(path))
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
            )
            assert overflow <= 1, (path, overflow)
        browser.get(site.page("/"))
        shots(browser, "overview-phone")
    finally:
        browser.set_window_size(1280, 900)


def test_logging_out_ends_the_session(admin: Any, browser: Any, site: Site) -> None:
    browser.get(site.page("/"))
    _by_id(browser, "logout").click()
    eventually(lambda: "/login" in browser.current_url, 10, "the login page")
    browser.get(site.page("/workers"))
    assert "/login" in browser.current_url
    logs = [json.dumps(entry) for entry in browser.get_log("browser")]
    assert not [line for line in logs if "Content Security Policy" in line], logs
