"""Bad input at submit time: each gives a clear exception naming the problem, and stores nothing."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import pytest

import jobchain
import jobchain.errors
from jobchain import (
    App,
    ConfigurationError,
    InvalidJobError,
    JobchainError,
    Plugins,
    UnknownTaskError,
    chain,
)
from jobchain.memory import MemoryBackend
from jobchain.payload import MAX_DEPTH

WHEN = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def tasks(app: App) -> App:
    @app.task
    def notify(user: str, options: dict[str, Any]) -> None:
        return None

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    def echo(*args: Any, **kwargs: Any) -> Any:
        return args

    return app


def nothing_stored(app: App) -> bool:
    return all(s.ready == 0 and s.delayed == 0 for s in app.stats())


# --- arguments that are not JSON --------------------------------------------------------


def test_non_json_argument_names_its_path(tasks: App) -> None:
    """A datetime nested in an argument is reported by its exact path and type."""
    with pytest.raises(InvalidJobError) as info:
        tasks.submit("notify", "ann", {"when": WHEN})
    assert "args[1]['when']: datetime" in str(info.value)
    assert "task 'notify' arguments must be JSON-serialisable" in str(info.value)
    assert nothing_stored(tasks)


@pytest.mark.parametrize(
    ("args", "kwargs", "path"),
    [
        ((1, [2, {3.5}]), {}, "args[1][1]: set"),
        ((), {"amount": decimal.Decimal("1.5")}, "kwargs['amount']: Decimal"),
        ((), {"deep": {"a": [0, b"raw"]}}, "kwargs['deep']['a'][1]: bytes"),
        ((float("nan"),), {}, "args[0]: nan (not finite)"),
        (({1: "one"},), {}, "args[0]: key 1 of type int (keys must be str)"),
        (({"ok": {(1, 2): "pair"}},), {}, "args[0]['ok']: key (1, 2) of type tuple (keys must be str)"),
    ],
)
def test_non_json_values_are_reported_by_path(
    tasks: App, args: tuple[Any, ...], kwargs: dict[str, Any], path: str
) -> None:
    """Sets, decimals, bytes, NaN and non-string keys are each named by path at submit."""
    with pytest.raises(InvalidJobError) as info:
        tasks.submit("echo", *args, **kwargs)
    assert path in str(info.value)
    assert nothing_stored(tasks)


def test_non_json_argument_to_chain_names_its_path(tasks: App) -> None:
    """A bad argument bound to a later chain step is reported with its path when the chain is built."""
    echo = tasks.tasks["echo"]
    with pytest.raises(InvalidJobError, match=r"args\[0\]\['when'\]: datetime"):
        chain(echo, echo.s({"when": WHEN})).submit(1)
    assert nothing_stored(tasks)


# --- strings no backend can store, and nesting too deep -----------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("args", "kwargs", "path"),
    [
        (("\ud800",), {}, "args[0]: lone surrogate '\\ud800' at index 0 (not valid UTF-8)"),
        (("ok", ["x", "ab\udc80"]), {}, "args[1][1]: lone surrogate '\\udc80' at index 2"),
        ((), {"name": "\udfff"}, "kwargs['name']: lone surrogate"),
        (({"k\ud800": 1},), {}, "args[0]: key with a lone surrogate '\\ud800' at index 1"),
    ],
    ids=["arg", "nested", "kwarg", "key"],
)
def test_lone_surrogate_is_refused_naming_where(
    tasks: App, args: tuple[Any, ...], kwargs: dict[str, Any], path: str
) -> None:
    """A lone surrogate (not encodable as UTF-8, so no backend can store it) is refused at submit."""
    with pytest.raises(InvalidJobError) as info:
        tasks.submit("echo", *args, **kwargs)
    assert path in str(info.value)
    assert nothing_stored(tasks)


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_nesting_over_the_depth_limit_is_refused(tasks: App, depth: int) -> None:
    """An argument nested deeper than MAX_DEPTH is refused with InvalidJobError, never RecursionError."""
    with pytest.raises(InvalidJobError, match="nested too deeply") as info:
        tasks.submit("echo", _nested(depth))
    assert "args[0][0][0]" in str(info.value)
    assert len(str(info.value)) < 200  # the path is cut short
    assert nothing_stored(tasks)


def test_nesting_at_the_depth_limit_is_accepted(tasks: App) -> None:
    """64 levels in an argument (and in a keyword argument) are accepted."""
    assert MAX_DEPTH == 64
    handle = tasks.submit("echo", _nested(64), deep=_nested(64))
    assert handle.id


def test_deep_nesting_in_a_chain_argument_is_refused(tasks: App) -> None:
    """A chain's arguments are checked the same way."""
    with pytest.raises(InvalidJobError, match="nested too deeply"):
        chain(tasks.tasks["echo"], tasks.tasks["echo"]).submit(_nested(2_000))
    assert nothing_stored(tasks)


# --- unknown tasks ------------------------------------------------------------------------


def test_unknown_task_at_submit_lists_known_ones(tasks: App) -> None:
    """Submitting a task name nobody declared names it and lists the declared tasks."""
    with pytest.raises(UnknownTaskError) as info:
        tasks.submit("nofity", "ann", {})
    assert str(info.value) == "unknown task 'nofity'; known tasks: add, echo, notify"
    assert (info.value.task, info.value.known) == ("nofity", ("add", "echo", "notify"))
    assert isinstance(info.value, LookupError)


def test_unknown_task_with_no_tasks_says_none(app: App) -> None:
    """With no task declared the message says so instead of listing nothing."""
    with pytest.raises(UnknownTaskError, match="known tasks: none"):
        app.submit("anything")


# --- size -------------------------------------------------------------------------------------


def test_oversized_payload_is_rejected_with_sizes(plugins: Plugins) -> None:
    """Arguments over max_payload bytes are refused with their size and the limit."""
    app = App(MemoryBackend(), plugins=plugins, max_payload=1000)

    @app.task
    def store(blob: str) -> None:
        return None

    with pytest.raises(InvalidJobError, match=r"payload is 1\d\d\d bytes, over the limit of 1000 bytes"):
        store.submit("x" * 1000)
    assert nothing_stored(app)


def test_payload_at_the_limit_is_accepted(plugins: Plugins) -> None:
    """The limit is inclusive: arguments encoding to exactly max_payload bytes are accepted."""
    blob = "é" * 100
    size = len(json.dumps([[blob], {}], ensure_ascii=False, separators=(",", ":")).encode())
    app = App(MemoryBackend(), plugins=plugins, max_payload=size)

    @app.task
    def store(blob: str) -> None:
        return None

    assert store.submit(blob).status() == "queued"
    with pytest.raises(InvalidJobError, match="over the limit"):
        store.submit(blob + "x")


def test_default_payload_limit_is_one_mebibyte(app: App) -> None:
    """By default a payload over 1 MiB is refused."""

    @app.task
    def store(blob: str) -> None:
        return None

    store.submit("x" * (1024 * 1024 - 100))
    with pytest.raises(InvalidJobError, match="over the limit of 1048576 bytes"):
        store.submit("x" * (1024 * 1024))


# --- arity --------------------------------------------------------------------------------------


def test_missing_argument_at_submit(tasks: App) -> None:
    """Too few arguments for the function is refused at submit, naming the task and the argument."""
    with pytest.raises(InvalidJobError, match=r"task 'add' cannot take these arguments: .*'b'"):
        tasks.submit("add", 1)
    assert nothing_stored(tasks)


def test_unexpected_keyword_at_submit(tasks: App) -> None:
    """An unknown keyword argument is refused at submit."""
    with pytest.raises(InvalidJobError, match="unexpected keyword argument 'c'"):
        tasks.tasks["add"].submit(1, 2, c=3)


def test_chain_step_arity_counts_the_previous_result(tasks: App) -> None:
    """A later step is checked with the previous result as its first argument."""
    echo, add = tasks.tasks["echo"], tasks.tasks["add"]
    chain(echo, add.s(1)).submit()
    with pytest.raises(InvalidJobError, match="task 'add' cannot take these arguments"):
        chain(echo, add.s(1, 2)).submit()
    with pytest.raises(InvalidJobError, match="task 'add' cannot take these arguments"):
        chain(echo, add).submit()


def test_immutable_step_arity_ignores_the_previous_result(tasks: App) -> None:
    """An immutable step is checked with its own arguments only."""
    echo, add = tasks.tasks["echo"], tasks.tasks["add"]
    chain(echo, add.si(1, 2)).submit()
    with pytest.raises(InvalidJobError, match="task 'add' cannot take these arguments"):
        chain(echo, add.si(1)).submit()


def test_bad_item_in_submit_many_stores_nothing(tasks: App) -> None:
    """If one item of submit_many is invalid, none of the items is enqueued."""
    add = tasks.tasks["add"]
    with pytest.raises(InvalidJobError):
        tasks.submit_many([add.s(1, 2), add.s(3, 4), add.s(5)])
    assert nothing_stored(tasks)


# --- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"priority": "high"}, ConfigurationError, "priority must be an int, got 'high'"),
        ({"priority": 1.5}, ConfigurationError, "priority must be an int, got 1.5"),
        ({"retry": 3}, ConfigurationError, "retry must be a jobchain.Retry, got 3"),
        ({"timeout": 0}, InvalidJobError, "timeout must be a number of seconds > 0, got 0"),
        ({"timeout": "5"}, InvalidJobError, "timeout must be a number of seconds > 0, got '5'"),
        ({"expires": -1}, InvalidJobError, "expires must be a number of seconds > 0, got -1"),
    ],
)
def test_invalid_task_options(
    app: App, options: dict[str, Any], error: type[JobchainError], message: str
) -> None:
    """@app.task with an invalid option names the option and the value."""
    with pytest.raises(error) as info:
        app.task(**options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": "1"}, "priority must be an int, got '1'"),
        ({"priority": True}, "priority must be an int, got True"),
        ({"delay": -1}, "delay must be a number of seconds >= 0, got -1"),
        ({"queue": ""}, "queue must be a non-empty string, got ''"),
    ],
)
def test_invalid_signature_options(tasks: App, options: dict[str, Any], message: str) -> None:
    """.set() with an invalid queue, priority or delay names it."""
    with pytest.raises(InvalidJobError) as info:
        tasks.tasks["add"].s(1, 2).set(**options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": "never"}, "retry must be a jobchain.Retry"),
        ({"max_payload": 0}, "max_payload must be a positive number of bytes, got 0"),
        ({"aging_interval": 0}, "aging_interval must be a number of seconds > 0, got 0"),
        ({"max_error_bytes": 100}, "max_error_bytes must be a number of bytes >= 256, got 100"),
        ({"max_error_bytes": 1.5e6}, "max_error_bytes must be a number of bytes >= 256, got 1500000.0"),
    ],
)
def test_invalid_app_options(plugins: Plugins, options: dict[str, Any], message: str) -> None:
    """App() with an invalid option names it."""
    with pytest.raises(JobchainError) as info:
        App(MemoryBackend(), plugins=plugins, **options)
    assert message in str(info.value)


def test_submitting_something_that_is_not_a_task(tasks: App) -> None:
    """Submitting a plain function or value says what can be submitted."""
    with pytest.raises(InvalidJobError, match=r"cannot submit 42 \(int\); expected a task"):
        tasks.submit(42)


def test_result_too_large_is_an_invalid_job_error_with_facts() -> None:
    """ResultTooLarge is exported, an InvalidJobError, carries its facts and says what to do."""
    error = jobchain.ResultTooLarge("render", 2_000_000, 1_048_576)
    assert isinstance(error, InvalidJobError)
    assert (error.task, error.size, error.limit) == ("render", 2_000_000, 1_048_576)
    assert str(error) == (
        "task 'render' returned a result of 2000000 bytes, over the limit of 1048576 bytes "
        "(App(max_payload=...)); store large data elsewhere and return a reference"
    )
    assert "ResultTooLarge" in jobchain.errors.__doc__  # drawn in the tree
