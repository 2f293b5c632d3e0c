"""Uniqueness keys on the client side: how tasks derive them, what is refused, the job's wire form."""

from __future__ import annotations

from typing import Any

import pytest

from jobchain import App, Plugins, chain
from jobchain.errors import ConfigurationError, InvalidJobError
from jobchain.memory import MemoryBackend
from jobchain.model import Job
from jobchain.uniqueness import MAX_KEY_LENGTH, check_key, derive_key


@pytest.fixture
def app() -> App:
    return App(MemoryBackend(), plugins=Plugins(entry_points=False))


def _fn(account: str, month: str = "01", *, verbose: bool = False) -> None: ...


def test_a_key_from_argument_names_applies_defaults() -> None:
    """The key is TASK: and the JSON of the chosen arguments, by name, with defaults filled in."""
    assert (
        derive_key(("account", "month"), "report", _fn, ("acme",), {})
        == 'report:{"account":"acme","month":"01"}'
    )
    assert derive_key(("account",), "report", _fn, (), {"account": "acme", "verbose": True}) == (
        'report:{"account":"acme"}'
    )


def test_every_argument_with_true_and_a_digest_when_long() -> None:
    """``True`` takes every argument; a key past 120 characters becomes a digest of them."""
    assert derive_key(True, "t", _fn, ("a",), {}) == 't:{"account":"a","month":"01","verbose":false}'
    long = derive_key(True, "t", _fn, ("x" * 500,), {})
    assert long.startswith("t:sha256:")
    assert len(long) < 60
    assert long == derive_key(True, "t", _fn, ("x" * 500,), {})


def test_a_key_function_is_used_as_it_returns() -> None:
    assert derive_key(lambda account, **_: f"acct-{account}", "t", _fn, ("a",), {}) == "acct-a"
    with pytest.raises(InvalidJobError, match="unique= function"):
        derive_key(lambda *a, **k: "", "t", _fn, ("a",), {})


def test_a_task_naming_an_argument_it_lacks_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="does not take"):

        @app.task(unique=("nope",))
        def task(x: int) -> None: ...


@pytest.mark.parametrize("bad", [(), 3, [1]])
def test_a_bad_unique_declaration_is_refused(app: App, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="unique="):

        @app.task(unique=bad)
        def task(x: int) -> None: ...


@pytest.mark.parametrize("bad", ["", "x" * (MAX_KEY_LENGTH + 1), "a\x00b", 7])
def test_a_bad_key_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidJobError):
        check_key(bad)


def test_unique_for_needs_a_key(app: App) -> None:
    @app.task
    def task(x: int) -> None: ...

    with pytest.raises(InvalidJobError, match="needs a unique_key"):
        task.submit(1, unique_for=10)
    with pytest.raises(InvalidJobError, match="unique_for must be"):
        task.submit(1, unique_key="k", unique_for=0)


def test_a_chain_step_cannot_be_unique_and_submit_many_refuses_keys(app: App) -> None:
    @app.task(unique=True)
    def first(x: int) -> int:
        return x

    @app.task
    def second(x: int) -> int:
        return x

    with pytest.raises(InvalidJobError, match="cannot be unique"):
        chain(first, second.s().set(unique_key="k")).submit(1)
    chain(first, second).submit(1)  # a task declared unique= is not unique as a chain step
    with pytest.raises(InvalidJobError, match="submit it alone"):
        app.submit_many([first.s(1)])


def test_the_key_travels_in_the_jobs_wire_form() -> None:
    job = Job(id="j", task="t", enqueued_at=1.0, unique="k")
    assert job.to_wire()["unique"] == "k"
    assert Job.from_wire(job.to_wire()) == job
    assert "unique" not in Job(id="j", task="t", enqueued_at=1.0).to_wire()
