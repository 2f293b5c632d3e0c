"""Delays that read well: countdown= and eta= on tasks, signatures and chains, and their checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobchain import App, InvalidJobError, ManualClock, chain, group
from jobchain.delays import delay_of, parse_duration, parse_instant
from jobchain.memory import MemoryBackend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> App:
    return App(backend=MemoryBackend(clock=clock), clock=clock)


def _not_before(app: App, job_id: str) -> float | None:
    record = app.backend.get_job(job_id)
    assert record is not None
    return record.job.not_before


def test_countdown_delays_a_task_submit(app: App, clock: ManualClock) -> None:
    """task.submit(..., countdown=S) makes the job wait S seconds, with no signature built by hand."""

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.submit(1, 2, countdown=30)
    assert _not_before(app, handle.id) == clock.now() + 30


def test_eta_as_aware_datetime_and_epoch(app: App, clock: ManualClock) -> None:
    """eta= takes an aware datetime or epoch seconds, on a task and on a signature."""

    @app.task
    def ping() -> None: ...

    at = datetime.fromtimestamp(clock.now(), UTC) + timedelta(minutes=5)
    assert _not_before(app, ping.submit(eta=at).id) == clock.now() + 300
    assert _not_before(app, ping.s().submit(eta=clock.now() + 7).id) == clock.now() + 7


def test_a_past_eta_runs_now(app: App, clock: ManualClock) -> None:
    """An eta already past is no delay at all."""

    @app.task
    def ping() -> None: ...

    assert _not_before(app, ping.submit(eta=clock.now() - 60).id) is None


def test_a_chain_countdown_delays_its_first_step(app: App, clock: ManualClock) -> None:
    """chain.submit(countdown=S) delays the first step's jobs; a group's members all wait."""

    @app.task
    def one() -> int:
        return 1

    @app.task
    def inc(n: int) -> int:
        return n + 1

    handle = chain(one, inc).submit(countdown=10, chain_id="c-delayed")
    record = app.backend.get_chain(handle.id)
    assert record is not None
    assert _not_before(app, record.steps[0].members[0].job_id) == clock.now() + 10
    fan = group(one, one).submit(countdown=20)
    members = app.backend.get_chain(fan.id)
    assert members is not None
    assert {_not_before(app, m.job_id) for m in members.steps[0].members} == {clock.now() + 20}


@pytest.mark.parametrize(
    ("countdown", "eta", "message"),
    [
        (-1, None, "countdown must be >= 0"),
        ("5", None, "countdown must be a number"),
        (1, 2, "not both"),
        (None, datetime(2030, 1, 1), "has no time zone"),
        (None, "tomorrow", "eta must be an aware datetime or epoch seconds"),
    ],
)
def test_bad_delays_are_one_line_errors(countdown: object, eta: object, message: str) -> None:
    """A negative countdown, a naive datetime, both at once: InvalidJobError saying so on one line."""
    with pytest.raises(InvalidJobError, match=message) as info:
        delay_of(countdown, eta, now=0.0)
    assert "\n" not in str(info.value)


def test_a_bad_delay_stores_nothing(app: App) -> None:
    """A submit refused for its delay leaves the backend empty."""

    @app.task
    def ping() -> None: ...

    with pytest.raises(InvalidJobError):
        ping.submit(countdown=-5)
    assert [s for s in app.stats() if s.ready or s.delayed] == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2d", 172800.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """The CLI's --delay spellings."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-5s", "-3", "5 minutes", "1x", "m5"])
def test_parse_duration_refuses(text: str) -> None:
    """Anything else is a ValueError that says what to write."""
    with pytest.raises(ValueError, match="delay"):
        parse_duration(text)


def test_parse_instant() -> None:
    """--at needs an offset (Z included); a naive time says so."""
    utc, paris = parse_instant("2026-05-01T09:00:00Z"), parse_instant("2026-05-01T11:00:00+02:00")
    assert utc.timestamp() == paris.timestamp()
    with pytest.raises(ValueError, match="no time zone"):
        parse_instant("2026-05-01T09:00:00")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant("next tuesday")
