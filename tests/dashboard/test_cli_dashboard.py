"""``jobchain dashboard``'s refusals: one line each, before anything listens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dash_rig import HERE, ROOT, _env, start_dashboard, stop


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobchain", "dashboard", "--config", str(HERE / "dash_app.py"), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_non_loopback_bind_without_a_token_is_refused() -> None:
    done = _run("--bind", "0.0.0.0:0")
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "error: refusing to serve the dashboard on 0.0.0.0 without a token"
    assert "Traceback" not in done.stderr


def test_a_short_token_and_a_bad_bind_are_one_line_errors() -> None:
    short = _run("--token", "abc")
    assert short.returncode == 1
    assert short.stderr.splitlines()[0] == "error: a dashboard token must be at least 12 characters long"
    bind = _run("--bind", "nowhere")
    assert bind.returncode == 2
    assert "'nowhere' is not HOST:PORT" in bind.stderr
    assert "Traceback" not in short.stderr + bind.stderr


def test_the_start_line_hides_the_backend_password(redis_server_url: str, tmp_path: Path) -> None:
    port = redis_server_url.rsplit(":", 1)[1].split("/")[0]
    backend = f"redis-lists://someone:s3cret-word@127.0.0.1:{port}/0"
    process, url = start_dashboard(backend, tmp_path / "dashboard.log")
    try:
        assert url.startswith("http://127.0.0.1:")
        first = (tmp_path / "dashboard.log").read_text().splitlines()[0]
        assert "s3cret-word" not in first
        assert "someone:***@127.0.0.1" in first
    finally:
        stop(process)
