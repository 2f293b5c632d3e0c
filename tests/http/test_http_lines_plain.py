"""The line queue as its users expect it: curl push/pull, and push/pull without sharp edges.

Every test runs against a real ``jobchain http serve`` process, over real sockets.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forkserver
import httpx
import pytest
from gateway_helpers import ROOT, TOKEN, GatewayProcess, process_env, stop_process
from jobchain_http.client import HttpBackend
from jobchain_http.transfer import PushReport, pull, push
from test_http_transfer import jobchain, make_file

from jobchain.errors import BackendUnavailableError

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def sh(script: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, timeout=60)


def info(gateway: GatewayProcess, queue: str) -> dict[str, Any]:
    answer = httpx.get(f"{gateway.url}/v1/lines/{queue}", headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@needs_curl
def test_the_curl_examples_work_as_written(
    start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """docs/http.md's curl lines, run by bash against a gateway on loopback without a token."""
    gateway = start_gateway(token=None)
    port = gateway.url.rsplit(":", 1)[1]
    data = "first\nnaïve café\r\n\nlast without newline".encode()
    (tmp_path / "file").write_bytes(data)
    pushed = sh(f"curl --data-binary @file http://127.0.0.1:{port}/push/logs", tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert b'"lines":4' in pushed.stdout
    pulled = sh(f"curl http://127.0.0.1:{port}/pull/logs?timeout=5", tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == data
    # acknowledged: nothing is left, and an empty pull answers 204 once the timeout has passed
    started = time.monotonic()
    empty = sh(
        f"curl -s -o /dev/null -w '%{{http_code}}' 'http://127.0.0.1:{port}/pull/logs?timeout=1'", tmp_path
    )
    assert empty.stdout == b"204"
    assert time.monotonic() - started >= 0.9


@needs_curl
def test_a_pull_waits_for_a_push(start_gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    """A pull with a timeout is a long poll: a push made while it waits is answered at once."""
    gateway = start_gateway(token=None)
    waiting = subprocess.Popen(
        ["curl", "-s", f"{gateway.url}/pull/later?timeout=20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert httpx.post(f"{gateway.url}/push/later", content=b"hello\n").status_code == 201
        out, _ = waiting.communicate(timeout=20)
        assert out == b"hello\n"
        assert time.monotonic() - started < 5
    finally:
        stop_process(waiting)


def test_plain_routes_need_the_token_and_bounded_timeouts(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    """Same token as every other route; a timeout past --max-wait, or a bad id, is a 400."""
    gateway = start_gateway("--max-wait", "10")
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{gateway.url}/push/q", content=b"x\n").status_code == 401
    assert httpx.get(f"{gateway.url}/pull/q").status_code == 401
    assert httpx.post(f"{gateway.url}/push/q", content=b"x\n", headers=auth).status_code == 201
    for query in ("timeout=11", "timeout=-1", "timeout=nan", "timeout=soon", "limit=0"):
        answer = httpx.get(f"{gateway.url}/pull/q?{query}", headers=auth)
        assert answer.status_code == 400, query
        assert answer.json()["error"]["code"] == "bad_query"
    assert httpx.post(f"{gateway.url}/push/q?id=a/b", content=b"x\n", headers=auth).status_code == 400
    assert httpx.post(f"{gateway.url}/push/q", content=b"\xff\n", headers=auth).status_code == 400
    answer = httpx.get(f"{gateway.url}/pull/q?timeout=0", headers=auth)
    assert (answer.status_code, answer.content) == (200, b"x\n")
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"


def test_a_push_with_an_id_is_stored_once(start_gateway: Callable[..., GatewayProcess]) -> None:
    """`POST /push/Q?id=NAME` sent twice (a retry) stores its lines once."""
    gateway = start_gateway()
    auth = {"authorization": f"Bearer {TOKEN}"}
    body = "".join(f"line {i}\n" for i in range(2500)).encode()
    for _ in range(2):
        answer = httpx.post(f"{gateway.url}/push/once?id=part-1", content=body, headers=auth)
        assert answer.json() == {"queued": 3, "lines": 2500}
    assert info(gateway, "once")["ready"] == 3
    got = httpx.get(f"{gateway.url}/pull/once?limit=10", headers=auth)
    assert got.content == body


def test_pull_refuses_to_overwrite_a_file(gateway: GatewayProcess, tmp_path: Path) -> None:
    """An existing file is refused (one line, nonzero, untouched); --append adds, --force replaces."""
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    data = make_file(source, 20)
    target.write_bytes(b"precious\n")
    assert jobchain("http", "push", gateway.url, "keep", str(source)).returncode == 0
    refused = jobchain("http", "pull", gateway.url, "keep", str(target))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: {target} exists: pass --append to add to it or --force to replace it"
    ]
    assert target.read_bytes() == b"precious\n"
    assert info(gateway, "keep")["ready"] == 1, "a refused pull takes nothing"
    assert jobchain("http", "pull", gateway.url, "keep", str(target), "--append").returncode == 0
    assert target.read_bytes() == b"precious\n" + data
    assert jobchain("http", "push", gateway.url, "keep", str(source)).returncode == 0
    assert jobchain("http", "pull", gateway.url, "keep", str(target), "--force").returncode == 0
    assert target.read_bytes() == data


def test_pull_of_an_unknown_queue_says_so(gateway: GatewayProcess, tmp_path: Path) -> None:
    """A queue nothing was ever pushed to: one line, nonzero, and no file created."""
    target = tmp_path / "out.txt"
    done = jobchain("http", "pull", gateway.url, "never", str(target), timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: line queue 'never' does not exist on {gateway.url} (nothing was ever pushed to it)"
    ]
    assert not target.exists()
    assert info(gateway, "never")["exists"] is False


def test_push_streams_from_a_pipe_that_stays_open(gateway: GatewayProcess, tmp_path: Path) -> None:
    """`tail -f log | jobchain http push URL q -`: lines arrive while the pipe is still open."""
    argv = [
        sys.executable,
        "-m",
        "jobchain",
        "http",
        "push",
        gateway.url,
        "tailed",
        "-",
        "--max-delay",
        "0.1",
    ]
    with open(tmp_path / "push.log", "wb") as log:
        pusher = forkserver.popen(
            argv,
            cwd=ROOT,
            env=process_env(JOBCHAIN_HTTP_TOKEN=TOKEN),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
        )
    assert pusher.stdin is not None
    auth = {"authorization": f"Bearer {TOKEN}"}
    got = b""
    try:
        for round_ in range(3):
            lines = "".join(f"round {round_} line {i}\n" for i in range(5)).encode()
            pusher.stdin.write(lines)
            pusher.stdin.flush()
            deadline = time.monotonic() + 20
            while not got.endswith(lines):
                assert time.monotonic() < deadline, f"round {round_} did not arrive while the pipe was open"
                got += httpx.get(f"{gateway.url}/pull/tailed?timeout=2", headers=auth, timeout=30).content
            assert pusher.poll() is None
        pusher.stdin.close()
        assert pusher.wait(30) == 0
    finally:
        stop_process(pusher)
    expected = b"".join("".join(f"round {r} line {i}\n" for i in range(5)).encode() for r in range(3))
    assert got == expected
    assert "pushed 15 lines" in (tmp_path / "push.log").read_text()


class FailingBackend(HttpBackend):
    """Fails with an outage after its ``fail_after``-th push request, whose answer is lost (it was stored)."""

    fail_after = 0
    sent = 0

    def request(self, method: str, path: str, **options: Any) -> Any:
        answer = super().request(method, path, **options)
        if method == "POST" and path.startswith("/v1/lines/"):
            type(self).sent += 1
            if type(self).sent >= type(self).fail_after:
                raise BackendUnavailableError(self.url, "the answer was lost (injected)")
        return answer


def test_a_push_run_again_after_failing_midway_duplicates_nothing(
    gateway: GatewayProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push whose 3rd request was stored but not answered, run again with its id: each line once."""
    monkeypatch.setattr("jobchain_http._lineio.time.sleep", lambda seconds: None)
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    data = make_file(source, 5000)
    FailingBackend.fail_after = 3
    failing = FailingBackend.from_url(gateway.url, token=TOKEN, delivery="poll")
    report = PushReport(push_id="nightly-1")
    try:
        with open(source, "rb") as fh, pytest.raises(BackendUnavailableError):
            push(failing, "again", fh, lines_per_message=100, messages_per_request=8, report=report)
    finally:
        failing.close()
    assert 0 < report.lines < 5000
    stored = info(gateway, "again")["ready"]
    assert stored == 24, "three requests of 8 messages reached the gateway"
    backend = HttpBackend.from_url(gateway.url, token=TOKEN, delivery="poll")
    try:
        with open(source, "rb") as fh:
            again = push(backend, "again", fh, lines_per_message=100, push_id="nightly-1")
        assert again.lines == 5000
        assert info(gateway, "again")["ready"] == 50, "the re-run stored only the messages missing"
        pulled = pull(backend, "again", target, wait=0.2)
    finally:
        backend.close()
    assert pulled.duplicates == 0
    assert target.read_bytes() == data


def test_a_rerun_cut_differently_still_writes_each_byte_once(gateway: GatewayProcess, tmp_path: Path) -> None:
    """A re-run with the same --id cut elsewhere (a pipe is cut by time too) still writes each byte once."""
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    data = make_file(source, 3000, trailing_newline=False)
    half = tmp_path / "half.txt"
    half.write_bytes(data[: len(data) // 2])  # the first run got half the input, with a partial last line
    first = jobchain(
        "http", "push", gateway.url, "recut", str(half), "--id", "feed", "--lines-per-message", "7"
    )
    assert first.returncode == 0, first.stderr
    second = jobchain(
        "http", "push", gateway.url, "recut", str(source), "--id", "feed", "--lines-per-message", "300"
    )
    assert second.returncode == 0, second.stderr
    pulled = jobchain("http", "pull", gateway.url, "recut", str(target))
    assert pulled.returncode == 0, pulled.stderr
    assert target.read_bytes() == data


def test_a_failed_push_says_how_to_run_it_again(gateway: GatewayProcess, tmp_path: Path) -> None:
    """The error names the push's id, and re-running with it is the hint."""
    source = tmp_path / "in.txt"
    make_file(source, 10)
    done = forkserver.run(
        [sys.executable, "-m", "jobchain", "http", "push", gateway.url, "q", str(source), "--id", "job-7"],
        cwd=ROOT,
        env=process_env(JOBCHAIN_HTTP_TOKEN="wrong"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: push stopped after 0 lines (byte 0): ")
    assert lines[1] == "to send the rest without duplicates, push the same file again with --id job-7"


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return start_gateway()
