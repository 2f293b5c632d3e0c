"""More of the CLI's sharp edges (issue 18, item 7) that the first round left without a test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Run = Callable[..., Any]


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_plain_redis_and_rediss_urls_open_the_default_layout(
    jobchain: Run, installed_cli_env: dict[str, str], scheme: str
) -> None:
    """``rediss://`` too is an alias (of ``rediss-lists://``): with no server it cannot reach it,
    and never says "install jobchain-redis"."""
    pytest.importorskip("jobchain_redis", reason="pip install -e backends/redis")
    result = jobchain("status", "-b", f"{scheme}://127.0.0.1:1/0", env=installed_cli_env)
    assert result.code == 1, result
    assert f"cannot reach backend {scheme}-lists://127.0.0.1:1/0" in result.err, result
    assert "install" not in result.err, result


def test_one_worker_thread_is_singular_in_the_split_error(jobchain: Run) -> None:
    result = jobchain("run", "-w", "1", "--processes", "2", "-n", "1")
    assert result.code == 2, result
    assert "--workers 1 (1 thread) cannot be split over --processes 2" in result.err, result
