"""The live progress display, once, on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import sys
import time
from pathlib import Path

import forkserver
import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_live_display_and_rich_report_on_a_terminal(repo_root: Path, cli_env: dict[str, str]) -> None:
    """On a terminal: a redrawn progress line (done / failed / left, rate, ETA), then rich tables."""
    env = {**cli_env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    env.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    command = ["run", "--workers", "4", "--iterations", "60", "--chain-length", "2"]
    process = forkserver.popen(
        [sys.executable, "-m", "jobchain", *command],
        cwd=repo_root,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        process.wait(timeout=30)
    finally:
        process.kill()
        os.close(master)
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert process.returncode == 0, raw
    assert "\x1b[" in raw  # cursor movement and colour: the display is live
    text = ANSI.sub("", raw)
    frames = [line for line in re.split(r"[\r\n]+", text) if "jobs/s" in line and "left" in line]
    assert len(frames) >= 2, text  # redrawn as the run goes
    assert re.search(r"120/120 done 120 · failed 0 · left 0 · [\d,.]+ jobs/s · ETA 0s", text), text
    assert "ETA" in frames[0]
    assert "progress:" not in text  # no plain lines on a terminal
    # the report, as rich tables (box-drawing rule under the header)
    assert "worker-4" in text
    assert "─" in text
    assert "step1 (succeeded) -> step2 (succeeded)" in text
    assert "Traceback" not in text
