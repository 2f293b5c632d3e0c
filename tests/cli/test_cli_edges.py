"""The CLI's edges as a new user meets them (issue 18, item 7): each was a surprise once.

Every command runs as a real ``jobchain`` subprocess (tests/cli/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import forkserver
import pytest

Run = Callable[..., Any]
CONFIG = "examples/etl.py"


@pytest.mark.parametrize(
    "args",
    [
        ("submit", "-c", CONFIG, "extract", '["x"]', "-v"),
        ("submit", "-v", "-c", CONFIG, "extract", '["x"]'),
        ("-v", "submit", "-c", CONFIG, "extract", '["x"]'),
    ],
)
def test_verbose_is_accepted_after_the_command(jobchain: Run, args: tuple[str, ...]) -> None:
    """``-v`` logs info wherever it is written: before the command (global) or after it."""
    result = jobchain(*args)
    assert result.code == 0, result
    assert "worker_started" in result.err, result


def test_verbose_after_a_subcommand_of_a_group(jobchain: Run) -> None:
    result = jobchain("failed", "list", "-v")
    assert result.code == 0, result


def test_failed_wait_hints_a_status_command_on_the_same_backend(jobchain: Run) -> None:
    """The hint after a failed ``submit --wait`` keeps ``--backend`` (and ``--config``): it finds the job."""
    result = jobchain("submit", "-c", CONFIG, "-b", "memory://", "transform", '[[{"id": 1}]]', "--wait")
    assert result.code == 1, result
    hint = next(line for line in result.err.splitlines() if line.startswith("details: "))
    assert hint.startswith("details: jobchain status "), result
    assert "--backend memory://" in hint, result
    assert f"--config {CONFIG}" in hint, result


def test_counts_of_one_are_singular(jobchain: Run) -> None:
    """``1 job``, ``1 retry``, ``1 worker``: never ``1 jobs``."""
    quiet = jobchain("run", "--workers", "1", "--iterations", "1", "--chain-length", "1", "-q")
    assert quiet.code == 0, quiet
    assert quiet.out.startswith("1 job: "), quiet
    full = jobchain("run", "--workers", "1", "--iterations", "1", "--chain-length", "1")
    assert full.code == 0, full
    assert "1 worker " in full.out, full
    assert "1 workers" not in full.out, full
    assert "1 job)" in full.out, full
    assert "1 sleep job " in full.out, full


def test_plural_and_printable_helpers() -> None:
    from jobchain.cli.output import plural, printable

    assert [plural(n, "thread") for n in (0, 1, 2)] == ["0 threads", "1 thread", "2 threads"]
    assert plural(1, "retry") == "1 retry"
    assert plural(3, "retry") == "3 retries"
    assert plural(1, "process") == "1 process"
    assert plural(2, "process") == "2 processes"
    assert printable("q\x1b[2J\r\nname\x07") == "q\\x1b[2J\\r\\nname\\x07"
    assert printable("plain-queue é") == "plain-queue é"


_SHOWN = """
import jobchain.submission
from jobchain import App

jobchain.submission.new_id = lambda: "s-1"
app = App("memory://shown")


@app.task(queue=QUEUE)
def shape(name: str, flag: bool = False) -> dict:
    return {"name": name, "flag": flag, "none": None}


shape.submit("x", flag=True)
with app.worker(queues=[QUEUE], concurrency=1, poll=0.01, name=WORKER):
    app.job("s-1").wait(10)
"""


def _shown_config(tmp_path: Any, queue: str = "default", worker: str = "w") -> str:
    path = tmp_path / "shown.py"
    path.write_text(_SHOWN.replace("QUEUE", repr(queue)).replace("WORKER", repr(worker)))
    return str(path)


def test_status_of_a_job_prints_json_values(jobchain: Run, tmp_path: Any) -> None:
    """``status ID`` shows arguments and result as JSON (``"x"``, ``true``, ``null``), as ``submit`` does."""
    result = jobchain("status", "-c", _shown_config(tmp_path), "s-1")
    assert result.code == 0, result
    lines = dict(line.split(None, 1) for line in result.out.splitlines() if line.strip())
    assert lines["arguments"] == '("x", flag=true)', result
    assert lines["result"] == '{"name": "x", "flag": true, "none": null}', result


def test_control_characters_in_names_are_escaped(jobchain: Run, tmp_path: Any) -> None:
    """A queue named with escape sequences does not reach the terminal raw: ``status`` shows ``\\x1b``."""
    config = _shown_config(tmp_path, queue="q\x1b[2J\x07")
    for args in (("status", "-c", config), ("status", "-c", config, "s-1")):
        result = jobchain(*args)
        assert result.code == 0, result
        assert "\x1b" not in result.out, result
        assert "\x07" not in result.out, result
        assert "q\\x1b[2J\\x07" in result.out, result


def test_submit_by_name_without_config_and_a_megabyte_from_stdin(
    tmp_path: Any, installed_cli_env: dict[str, str], repo_root: Any
) -> None:
    """No --config: the job is stored under the task's name and a worker that has the task runs it.

    The arguments come from stdin (``--args-file -``): 900 kB (the payload limit is 1 MiB), which on
    the command line fails with "Argument list too long" (one argument is at most 128 kB on Linux).
    """
    pytest.importorskip("jobchain_sqlite")
    url = f"sqlite:///{tmp_path / 'q.db'}"
    env = installed_cli_env
    jc = [sys.executable, "-m", "jobchain"]
    worker = forkserver.popen(
        [*jc, "worker", "-c", CONFIG, "-b", url, "--queues", "db"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        rows = [{"id": 1, "eur": 2.5, "note": "x" * 900_000}]
        done = forkserver.run(
            [*jc, "submit", "-b", url, "load", "-q", "db", "--args-file", "-", "--wait", "--timeout", "30"],
            cwd=repo_root,
            env=env,
            input=json.dumps([rows]),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert done.returncode == 0, done.stderr
    assert 'result: {"rows": 1, "total_eur": 2.5}' in done.stdout, done


def test_submit_by_name_on_memory_says_nothing_could_run_it(jobchain: Run, tmp_path: Any) -> None:
    args = tmp_path / "args.json"
    args.write_text('["x"]')
    result = jobchain("submit", "extract", "--args-file", str(args))
    assert result.code == 1, result
    assert "no --config" in result.err, result
    both = jobchain("submit", "-c", CONFIG, "extract", '["x"]', "--args-file", str(args))
    assert both.code == 2, both


def test_submit_wait_says_when_no_worker_consumes_the_queue(
    jobchain: Run, tmp_path: Any, installed_cli_env: dict[str, str]
) -> None:
    """``submit --wait`` with nothing serving the queue says so once, instead of waiting in silence."""
    pytest.importorskip("jobchain_sqlite")
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = jobchain(
        "submit", "-c", CONFIG, "-b", url, "load", "[[]]", "--wait", "--timeout", "3", env=installed_cli_env
    )
    assert result.code == 124, result
    assert result.err.count("note: no live worker consumes queue db") == 1, result


@pytest.mark.parametrize(("fmt", "is_json"), [("console", False), ("json", True)])
def test_log_format_from_the_environment(
    jobchain: Run, cli_env: dict[str, str], fmt: str, is_json: bool
) -> None:
    """``JOBCHAIN_LOG_FORMAT`` chooses the log format once for every command (stderr here is a pipe)."""
    env = {**cli_env, "JOBCHAIN_LOG_FORMAT": fmt}
    result = jobchain("-v", "submit", "-c", CONFIG, "extract", '["x"]', env=env)
    assert result.code == 0, result
    started = next(line for line in result.err.splitlines() if "worker_started" in line)
    assert started.startswith("{") is is_json, result
