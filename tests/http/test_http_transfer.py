"""File transfer through line queues: ``jobchain http push`` and ``pull``, as real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import forkserver
import pytest
from gateway_helpers import ROOT, TOKEN, GatewayProcess, process_env, stop_process, wait_for
from jobchain_http.transfer import split_lines

LINES = 100_000
SAMPLES = [
    "",
    "",
    "ascii line",
    "naïve café",
    "日本語のテキスト",
    "emoji 🚀🧪✨",
    "tab\tand  spaces ",
    "crlf line\r",
]
SAMPLES += [
    "combining e\u0301",
    "RTL עברית",
    'quote " and \\ backslash',
    '{"json": [1, 2]}',
    "<b>markup</b> &amp;",
]


def make_file(path: Path, lines: int, seed: int = 7, trailing_newline: bool = True) -> bytes:
    rng = random.Random(seed)
    parts = [
        f"{i} {rng.choice(SAMPLES)}" if rng.random() < 0.9 else rng.choice(SAMPLES) for i in range(lines)
    ]
    data = "\n".join(parts).encode() + (b"\n" if trailing_newline else b"")
    path.write_bytes(data)
    return data


def jobchain(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return forkserver.run(
        [sys.executable, "-m", "jobchain", *args],
        cwd=ROOT,
        env=process_env(JOBCHAIN_HTTP_TOKEN=TOKEN),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return start_gateway()


def test_split_lines_keeps_every_byte() -> None:
    """Lines are cut at \\n only (a \\r stays), and a missing last newline is remembered."""
    assert split_lines(b"") == ([], False)
    assert split_lines(b"\n") == ([""], False)
    assert split_lines(b"a\r\n\nb") == (["a\r", "", "b"], True)
    assert split_lines("é\n".encode()) == (["é"], False)


def test_push_then_pull_is_byte_identical_and_ordered(gateway: GatewayProcess, tmp_path: Path) -> None:
    """100,000 lines of unicode and empty lines go through push and pull and come out the same bytes."""
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    data = make_file(source, LINES)
    pushed = jobchain("http", "push", gateway.url, "files", str(source))
    assert pushed.returncode == 0, pushed.stderr
    assert f"pushed {LINES} lines" in pushed.stderr
    pulled = jobchain("http", "pull", gateway.url, "files", str(target))
    assert pulled.returncode == 0, pulled.stderr
    assert target.read_bytes() == data
    assert not Path(str(target) + ".jobchain-pull").exists()


def test_file_without_final_newline_comes_out_without_one(gateway: GatewayProcess, tmp_path: Path) -> None:
    """A last line with no newline gets none in the copy either."""
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    data = make_file(source, 2500, trailing_newline=False)
    assert (
        jobchain("http", "push", gateway.url, "tail", str(source), "--lines-per-message", "300").returncode
        == 0
    )
    assert jobchain("http", "pull", gateway.url, "tail", str(target)).returncode == 0
    assert target.read_bytes() == data


def test_pull_of_an_empty_queue_stops_at_once(gateway: GatewayProcess, tmp_path: Path) -> None:
    """Without --follow, pull stops as soon as the queue is drained, with an empty file."""
    target = tmp_path / "out.txt"
    make_file(tmp_path / "in.txt", 10)  # the queue exists (something was pushed to it) and is drained
    assert jobchain("http", "push", gateway.url, "nothing", str(tmp_path / "in.txt")).returncode == 0
    assert jobchain("http", "pull", gateway.url, "nothing", str(tmp_path / "drain.txt")).returncode == 0
    done = jobchain("http", "pull", gateway.url, "nothing", str(target), timeout=30)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == b""


def test_killed_puller_resumes_byte_identical(gateway: GatewayProcess, tmp_path: Path) -> None:
    """A puller SIGKILLed mid-file and started again still produces the same bytes, in order."""
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    data = make_file(source, LINES, seed=11)
    assert (
        jobchain("http", "push", gateway.url, "resume", str(source), "--lines-per-message", "100").returncode
        == 0
    )
    argv = [sys.executable, "-m", "jobchain", "http", "pull", gateway.url, "resume", str(target)]
    argv += ["--batch", "2", "--lease", "2"]
    with open(tmp_path / "pull-1.log", "wb") as log:
        first = forkserver.popen(
            argv, cwd=ROOT, env=process_env(JOBCHAIN_HTTP_TOKEN=TOKEN), stdout=log, stderr=log
        )
    try:
        wait_for(
            lambda: target.exists() and target.stat().st_size > len(data) // 10,
            60,
            "the first puller to write a tenth of the file",
            interval=0.005,
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        stop_process(first)
    assert target.stat().st_size < len(data), "the puller finished before it could be killed"
    resumed = jobchain("http", "pull", gateway.url, "resume", str(target), "--lease", "2", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at byte" in resumed.stderr
    assert target.read_bytes() == data


def test_pull_follow_writes_lines_pushed_later_and_stops_on_sigterm(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """`pull --follow` waits for more; lines pushed while it runs are written; SIGTERM ends it cleanly."""
    target = tmp_path / "out.txt"
    argv = [sys.executable, "-m", "jobchain", "http", "pull", gateway.url, "live", str(target), "--follow"]
    with open(tmp_path / "pull.log", "wb") as log:
        puller = forkserver.popen(
            argv, cwd=ROOT, env=process_env(JOBCHAIN_HTTP_TOKEN=TOKEN), stdout=log, stderr=log
        )
    try:
        wait_for(target.exists, 60, "the puller to start")
        parts = []
        for round_ in range(3):
            source = tmp_path / f"in-{round_}.txt"
            parts.append(make_file(source, 50, seed=round_))
            assert jobchain("http", "push", gateway.url, "live", str(source)).returncode == 0
            expected = b"".join(parts)
            wait_for(
                lambda expected=expected: target.read_bytes() == expected, 60, f"round {round_} to arrive"
            )
        os.kill(puller.pid, signal.SIGTERM)
        assert puller.wait(30) == 0
    finally:
        stop_process(puller)
    assert target.read_bytes() == b"".join(parts)
