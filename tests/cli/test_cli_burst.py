"""``jobchain worker --burst``: work off what is there (and what it submits meanwhile), then exit 0."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]


def test_burst_worker_drains_a_memory_backend_and_exits_0(
    jobchain: Run, configs: Path, cli_env: dict[str, str]
) -> None:
    """Jobs the config submits, the jobs they submit and a chain's later step all run; then exit 0."""
    env = {**cli_env, "BURST_SUBMIT": "1"}
    result = jobchain("worker", "--config", str(configs / "burst.py"), "--burst", "-j", "2", env=env)
    assert result.code == 0, result
    assert "until the queues are idle" in result.err
    assert "8 succeeded, 0 failed" in result.err


def test_burst_worker_with_nothing_to_do_exits_at_once(
    jobchain: Run, configs: Path, cli_env: dict[str, str]
) -> None:
    result = jobchain("worker", "--config", str(configs / "burst.py"), "--burst", env=cli_env, timeout=20)
    assert result.code == 0, result
    assert "0 succeeded" in result.err


def test_burst_refuses_a_backend_without_stats(
    jobchain: Run, configs: Path, plugin_env: Callable[..., dict[str, str]]
) -> None:
    """A backend that cannot count its queues cannot tell when they are idle: one line, exit 1."""
    env = plugin_env({"jobchain-minimal": "jobchain_minimal"})
    result = jobchain("worker", "--config", str(configs / "burst.py"), "-b", "minimal://", "--burst", env=env)
    assert result.code == 1, result
    assert "--burst needs a backend that counts its queues (Stats)" in result.err
    assert "Traceback" not in result.err


def test_burst_with_processes_is_a_usage_error(jobchain: Run, configs: Path, cli_env: dict[str, str]) -> None:
    config = str(configs / "burst.py")
    result = jobchain("worker", "--config", config, "--burst", "--processes", "2", env=cli_env)
    assert result.code == 2, result


@pytest.mark.parametrize("scheme", ["redis-lists", "redis-streams"])
def test_burst_worker_drains_redis_and_exits_0(
    jobchain: Run, configs: Path, installed_cli_env: dict[str, str], redis_server_url: str, scheme: str
) -> None:
    """Work submitted by another process to a shared Redis backend is worked off; then exit 0."""
    url = redis_server_url.replace("redis://", f"{scheme}://") + f"?prefix=b{uuid.uuid4().hex[:10]}"
    config = str(configs / "burst.py")
    env = {**installed_cli_env, "BURST_BACKEND": url}
    subprocess.run([sys.executable, config], env=env, check=True, timeout=60)
    result = jobchain("worker", "--config", config, "-b", url, "--burst", env=installed_cli_env, timeout=60)
    assert result.code == 0, result
    assert "8 succeeded, 0 failed" in result.err
    again = jobchain("worker", "--config", config, "-b", url, "--burst", env=installed_cli_env, timeout=60)
    assert again.code == 0, again
    assert "0 succeeded" in again.err
