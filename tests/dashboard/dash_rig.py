"""The dashboard's test rig: a real Redis, a real worker, the real ``jobchain dashboard`` and Chromium.

Its fixtures are declared in conftest.py.

``site`` starts, for one test module, a worker (``jobchain worker``) and the
dashboard (``jobchain dashboard``) as subprocesses on a fresh key prefix of
the session's throwaway redis-server, and an App of :mod:`dash_app` in this
process to submit jobs with. ``browser`` drives Debian's ``chromium`` through
its ``chromedriver`` with Selenium, headless. Without them the tests skip,
except with ``CI=true``, where a missing browser fails the run.

Screenshots go to ``$JOBCHAIN_SCREENSHOTS`` when it is set (the docs' images
are made that way: see docs/dashboard.md), else to the test's temporary
directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobchain.testing import wait_until as eventually

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ADMIN_TOKEN = "admin-token-" + uuid.uuid4().hex
READ_TOKEN = "read-token-" + uuid.uuid4().hex


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the browser tests need it: {reason}")
    pytest.skip(reason)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    env.update(PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", **extra)
    return env


class Site:
    """One running dashboard and worker on one key prefix."""

    def __init__(
        self, url: str, backend: str, app: Any, broken: Path, processes: list[subprocess.Popen[str]]
    ):
        self.url = url
        self.backend = backend
        self.app = app
        self.broken = broken
        self.processes = processes

    def page(self, path: str) -> str:
        return self.url.rstrip("/") + path


def start_dashboard(
    backend: str, log: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``jobchain dashboard`` on a free loopback port, its stderr in ``log``; returns the process and URL."""
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobchain",
                "dashboard",
                "--backend",
                backend,
                "--config",
                str(HERE / "dash_app.py"),
                "--bind",
                "127.0.0.1:0",
                *extra,
            ],
            cwd=ROOT,
            env=env or _env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )

    def started() -> str | None:
        found = re.search(r" on (http://127\.0\.0\.1:\d+/)", log.read_text(errors="replace"))
        if found is None and process.poll() is not None:
            raise AssertionError(
                f"the dashboard exited with {process.returncode}:\n{log.read_text()[-2000:]}"
            )
        return found.group(1) if found else None

    try:
        return process, str(eventually(started, 30, "the dashboard to start"))
    except AssertionError:
        stop(process)
        raise


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def site(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    import dash_app

    backend = redis_server_url.replace("redis://", "redis-lists://") + f"?prefix=d{uuid.uuid4().hex[:10]}"
    broken = tmp_path_factory.mktemp("dash") / "parse-is-broken"
    env = _env(DASH_BROKEN=str(broken))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobchain",
            "worker",
            "--config",
            str(HERE / "dash_app.py"),
            "--backend",
            backend,
            "--queues",
            "default",
            "--concurrency",
            "4",
            "--name",
            "dash-worker",
            "--labels",
            "zone=test",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    processes = [worker]
    try:
        dashboard, url = start_dashboard(
            backend,
            broken.parent / "dashboard.log",
            "--token",
            ADMIN_TOKEN,
            "--read-token",
            READ_TOKEN,
            "--interval",
            "0.5",
            env=env,
        )
        processes.append(dashboard)
        dash_app.app.use_backend(backend)
        eventually(lambda: any(w.name == "dash-worker" for w in dash_app.app.workers()), 30, "the worker")
        yield Site(url, backend, dash_app.app, broken, processes)
    finally:
        for process in processes:
            stop(process)
        dash_app.app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e 'plugins/dashboard[test]')")
        raise AssertionError("unreachable") from None
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if os.path.exists("/usr/lib/chromium/chromedriver") else None
    )
    if binary is None or driver_path is None:
        _unavailable(
            "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
        raise AssertionError("unreachable")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Any, str], Path]:
    """Save a screenshot of the browser's page as NAME.png (in $JOBCHAIN_SCREENSHOTS when set)."""
    where = Path(os.environ["JOBCHAIN_SCREENSHOTS"]) if os.environ.get("JOBCHAIN_SCREENSHOTS") else tmp_path

    def save(driver: Any, name: str) -> Path:
        """The whole page (up to 2,400 pixels tall), at the window's width."""
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{name}.png"
        size = driver.get_window_size()
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(size["width"], min(max(height + 140, 400), 2400))
        try:
            assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
        finally:
            driver.set_window_size(size["width"], size["height"])
        return path

    return save
