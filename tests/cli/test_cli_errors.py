"""Mistakes a user will make: each gives a one- or two-line message, a non-zero exit, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]


def assert_short_error(result: Any, code: int, *fragments: str) -> None:
    assert result.code == code, result
    assert "Traceback" not in result.err, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, result  # message, hint (a syntax error's caret line may follow)
    assert lines[0].startswith("error: "), result
    for fragment in fragments:
        assert fragment in result.err, result
    assert result.out == "", result


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--workers", "0"], "'--workers'"),
        (["--workers", "-3"], "'--workers'"),
        (["--iterations", "0"], "'--iterations'"),
        (["--fail-rate", "2"], "'--fail-rate': 2.0 is not in the range 0.0<=x<=1.0"),
        (["--fail-rate", "-0.1"], "'--fail-rate'"),
        (["--chain-length", "0"], "'--chain-length'"),
        (["--workers", "many"], "'many' is not a valid integer"),
        (["--backend", "localhost:6379"], "not a backend URL"),
        (["--target", "etl"], "--target needs --config"),
        (["--no-such-option"], "no such option"),
    ],
)
def test_invalid_options_are_usage_errors(jobchain: Run, args: list[str], fragment: str) -> None:
    """Invalid numbers and misplaced options: exit code 2 and a pointer to --help."""
    result = jobchain("run", *args)
    assert_short_error(result, 2, fragment, "jobchain run -h")


def test_reference_only_options_are_refused_with_a_config(jobchain: Run) -> None:
    """--fail-rate shapes the reference workload; with --config it is a usage error, not ignored."""
    result = jobchain("run", "--config", "examples/etl.py", "--target", "etl", "--fail-rate", "0.5")
    assert_short_error(result, 2, "--fail-rate applies to the reference workload")


def test_missing_config_file(jobchain: Run) -> None:
    """A config path that does not exist says so."""
    result = jobchain("run", "--config", "examples/nope.py", "--target", "x")
    assert_short_error(result, 1, "config file 'examples/nope.py' does not exist")


def test_missing_config_module(jobchain: Run) -> None:
    """A dotted module that cannot be imported says so."""
    result = jobchain("run", "--config", "no_such_pkg.jobs", "--target", "x")
    assert_short_error(result, 1, "no config module named 'no_such_pkg.jobs'")


def test_config_given_as_a_dotted_module(jobchain: Run) -> None:
    """--config also takes a module name, imported from the current directory."""
    result = jobchain("run", "--config", "examples.seed", "--target", "nope")
    assert_short_error(result, 1, "no target 'nope' in examples.seed", "nap")


def test_syntax_error_shows_file_and_line(jobchain: Run, tmp_path: Path) -> None:
    """A syntax error names file:line and shows the line."""
    config = tmp_path / "broken.py"
    config.write_text("from jobchain import App\napp = App()\n\n@app.task\ndef f(x:\n    return x\n")
    result = jobchain("run", "--config", str(config), "--target", "f")
    assert_short_error(result, 1, f"syntax error in {config}:5", "def f(x:")


def test_config_that_raises_shows_where(jobchain: Run, tmp_path: Path) -> None:
    """An exception while importing the config names its type, message and line."""
    config = tmp_path / "raises.py"
    config.write_text("from jobchain import App\napp = App()\nrate = 1 / 0\n")
    result = jobchain("run", "--config", str(config), "--target", "f")
    assert_short_error(result, 1, "ZeroDivisionError: division by zero", f"{config}:3")


def test_config_without_an_app(jobchain: Run, tmp_path: Path) -> None:
    """A module with no App says what to add."""
    config = tmp_path / "empty.py"
    config.write_text("x = 1\n")
    result = jobchain("run", "--config", str(config), "--target", "f")
    assert_short_error(result, 1, "defines no jobchain.App")


def test_unknown_target_lists_the_available_ones(jobchain: Run) -> None:
    """A target that is not there: the tasks, chains and groups that are."""
    result = jobchain("run", "--config", "examples/fanout.py", "--target", "thumbnail")
    assert_short_error(
        result,
        1,
        "no target 'thumbnail' in examples/fanout.py",
        "tasks: fetch, publish, resize",
        "thumbnails",
    )


def test_config_without_target_lists_the_available_ones(jobchain: Run) -> None:
    """--config alone: what could be run."""
    result = jobchain("run", "--config", "examples/etl.py")
    assert_short_error(result, 1, "--config needs --target", "chains: etl")


def test_unknown_backend_scheme_names_installed_ones(jobchain: Run) -> None:
    """An unknown scheme names the installed schemes."""
    result = jobchain("run", "--backend", "nosuch://localhost/0")
    assert_short_error(result, 1, "no backend for 'nosuch://'; installed: memory")


def test_missing_redis_backend_names_the_distribution(jobchain: Run) -> None:
    """A redis URL without the redis plugin says what to install."""
    result = jobchain("run", "--backend", "redis-streams://localhost:6379/0")
    if result.code == 0 or "cannot reach" in result.err:
        pytest.skip("jobchain-redis is installed here")
    assert_short_error(result, 1, "redis-streams://", "pip install jobchain-redis")


def test_unreachable_backend_names_the_address(
    jobchain: Run, plugin_env: Callable[..., dict[str, str]]
) -> None:
    """A backend that cannot be reached: which address, no traceback wall."""
    env = plugin_env({"jobchain-unreachable": "jobchain_unreachable"})
    result = jobchain("run", "--backend", "unreachable://db.example:6379", "--iterations", "5", env=env)
    assert_short_error(result, 1, "cannot reach backend unreachable://db.example:6379", "connection refused")


def test_bad_args_json_for_submit(jobchain: Run) -> None:
    """ARGS_JSON that is not JSON is a usage error naming the argument."""
    result = jobchain("submit", "--config", "examples/seed.py", "nap", "{bad")
    assert_short_error(result, 2, "ARGS_JSON", "not valid JSON")


@pytest.mark.parametrize(
    ("args_json", "fragment"),
    [
        ('["\\ud800"]', "args[0]: lone surrogate '\\ud800' at index 0"),
        ('{"rows": ["ok", "\\udc80"]}', "kwargs['rows'][1]: lone surrogate"),
    ],
    ids=["arg", "kwarg"],
)
def test_a_lone_surrogate_in_args_json_is_refused(jobchain: Run, args_json: str, fragment: str) -> None:
    """JSON escapes of a lone surrogate parse, but no backend can store them: one line naming where."""
    result = jobchain("submit", "-c", "examples/etl.py", "load", args_json)
    assert_short_error(result, 1, fragment, "not valid UTF-8")


@pytest.mark.parametrize("depth", [66, 1_500, 60_000])  # the outer array is the argument list
def test_args_json_nested_too_deeply_is_refused(jobchain: Run, depth: int) -> None:
    """JSON nested past the limit (even past Python's recursion limit) is one short error."""
    result = jobchain("submit", "-c", "examples/etl.py", "load", "[" * depth + "]" * depth)
    assert_short_error(result, 2 if depth > 500 else 1, "nested too deeply", "64 levels")


def test_arguments_the_task_cannot_take(jobchain: Run) -> None:
    """Arguments that do not fit the task's signature are refused at submit time."""
    result = jobchain("submit", "--config", "examples/seed.py", "nap", '{"nope": 1}')
    assert_short_error(result, 1, "task 'nap' cannot take these arguments")


def test_unknown_command(jobchain: Run) -> None:
    """A misspelt command: usage error."""
    result = jobchain("rnu")
    assert_short_error(result, 2, "no such command 'rnu'")


def test_submit_to_an_unreachable_redis_fails_after_store_timeout(jobchain: Run) -> None:
    """The submit is buffered while Redis cannot be reached; after --store-timeout it fails, naming the id."""
    pytest.importorskip("jobchain_redis", reason="jobchain-redis is not installed")
    import socket

    from tests.cli.conftest import base_env

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis-lists://127.0.0.1:{port}/0"
    args = ["submit", "--config", "examples/seed.py", "--backend", url, "--store-timeout", "0.5", "nap"]
    result = jobchain(*args, env=base_env(installed_plugins=True))
    assert result.code == 1, result
    assert "Traceback" not in result.err, result
    # the App's warning that it buffered the submit, and its error naming what it could not store, come first
    error = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result
    assert "was not stored" in error[0], result
    assert f"127.0.0.1:{port}" in error[0], result
    assert "--store-timeout" in result.err, result
    assert result.out == "", result
