"""``failed show`` prints arguments and the stored payload as JSON, as ``status ID`` and ``submit`` do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = Callable[..., Any]

_FAILING = """
import contextlib

import jobchain.submission
from jobchain import App, Fail

jobchain.submission.new_id = lambda: "f-1"
app = App("memory://failing")


@app.task
def shape(name, extra=None, *, flag=False, rows=()):
    raise Fail("no " + name)


shape.submit("x", None, flag=True, rows=[{"a": 1.5}])
with app.worker(concurrency=1, poll=0.01), contextlib.suppress(Exception):
    app.job("f-1").wait(10)
"""


def test_failed_show_prints_arguments_as_json(jobchain: Run, tmp_path: Path) -> None:
    """``("x", null, flag=true, rows=[{"a": 1.5}])``: JSON values, no Python reprs (None, True, 'x')."""
    config = tmp_path / "failing.py"
    config.write_text(_FAILING)
    result = jobchain("failed", "show", "-c", str(config), "f-1")
    assert result.code == 0, result
    lines = dict(line.split(None, 1) for line in result.out.splitlines() if line.strip() and line[0] != " ")
    assert lines["arguments"] == '("x", null, flag=true, rows=[{"a": 1.5}])', result
    assert lines["error"] == "Fail: no x", result
    assert "None" not in result.out
    assert "True" not in result.out
    assert "'x'" not in result.out


def test_call_text_and_json_text() -> None:
    from jobchain.cli.output import call_text, json_text

    assert json_text({"a": None, "b": [True, "é"]}) == '{"a": null, "b": [true, "é"]}'
    assert call_text(["x"], {"n": None}) == '("x", n=null)'
    assert call_text(["y" * 200], {}) == '("' + "y" * 97 + "…"
    assert call_text(["y" * 200], {}, limit=None) == '("' + "y" * 200 + '")'
