"""The CLI's edges as a new user meets them (issue 18, item 7): each was a surprise once.

Every command runs as a real ``jobchain`` subprocess (tests/cli/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
