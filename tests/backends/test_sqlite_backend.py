"""What is particular to the SQLite backend: its URL, the file it keeps, and rows it cannot read."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobchain_sqlite import SCHEMA_VERSION, SqliteBackend

from jobchain.clock import ManualClock
from jobchain.errors import BackendUnavailableError, ConfigurationError
from jobchain.model import UNREADABLE_TASK, JobState
from jobchain.plugins import Plugins
from jobchain.testing import MakeJob, completed, failed, reserve, reserve_one


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


@pytest.fixture
def backend(db: str, clock: ManualClock) -> Iterator[SqliteBackend]:
    backend = SqliteBackend(db, clock=clock)
    yield backend
    backend.close()


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three slashes: an absolute path; two: a path relative to the current directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    plugins = Plugins()
    absolute = plugins.open_backend(f"sqlite://{tmp_path}/abs.db?busy_timeout=2.5&poll=0.2&synchronous=FULL")
    relative = plugins.open_backend("sqlite://data/rel.db")
    try:
        assert isinstance(absolute, SqliteBackend)
        assert isinstance(relative, SqliteBackend)
        assert (absolute.path, absolute.busy_timeout, absolute.poll, absolute.synchronous) == (
            str(tmp_path / "abs.db"),
            2.5,
            0.2,
            "full",
        )
        assert relative.path == str(tmp_path / "data" / "rel.db")
        assert (tmp_path / "abs.db").exists()
        assert (tmp_path / "data" / "rel.db").exists()
    finally:
        absolute.close()
        relative.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "not a file other processes can open"),
        ("sqlite://:memory:", "not a file other processes can open"),
        ("sqlite://user:pw@host/x.db", "takes no user or password"),
        ("sqlite:///tmp/x.db?timeout=3", "unknown sqlite:// URL option 'timeout'"),
        ("sqlite:///tmp/x.db?poll=0.1&poll=0.2", "given twice"),
        ("sqlite:///tmp/x.db?busy_timeout=soon", r"busy_timeout must be a number of seconds"),
        ("sqlite:///tmp/x.db?busy_timeout=-1", r"busy_timeout must be a number of seconds"),
        ("sqlite:///tmp/x.db?poll=nan", r"poll must be a number of seconds"),
        ("sqlite:///tmp/x.db?synchronous=off", "synchronous must be one of normal, full, extra"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SqliteBackend.from_url(url)


def test_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError, match=r"cannot open the SQLite database .*does its directory exist"
    ):
        SqliteBackend(str(tmp_path / "nowhere" / "jobs.db"))


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just some text that is long enough to have a header " * 20)
    with pytest.raises(ConfigurationError, match="is not a SQLite database jobchain can use"):
        SqliteBackend(str(path))


def test_a_database_of_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(ConfigurationError, match=r"tables that are not jobchain's \(users\)"):
        SqliteBackend(str(path))


def test_an_unknown_schema_version_is_refused(db: str) -> None:
    SqliteBackend(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(ConfigurationError, match=f"schema version {SCHEMA_VERSION + 1}.*reads version 1"):
        SqliteBackend(db)


def test_jobs_survive_closing_and_reopening_the_file(db: str, clock: ManualClock, make_job: MakeJob) -> None:
    """Everything is in the file: a new backend on it sees the jobs, leases and results of the old one."""
    first = SqliteBackend(db, clock=clock)
    jobs = [make_job(args=[i]) for i in range(3)]
    first.enqueue(jobs)
    held = reserve_one(first)
    assert first.settle([completed(held, "done", clock=clock)])[0].accepted
    leased = reserve_one(first, lease=5.0)
    first.close()

    again = SqliteBackend(db, clock=clock)
    try:
        record = again.get_job(jobs[0].id)
        assert record is not None
        assert (record.state, record.result) == (JobState.SUCCEEDED, "done")
        [ready] = reserve(again)
        assert ready.job == jobs[2]
        clock.advance(6.0)  # the lease taken before the restart ends: the job is delivered again
        [back] = reserve(again)
        assert (back.job, back.delivery_count) == (leased.job, 2)
    finally:
        again.close()


def test_an_unreadable_row_is_filed_in_the_failed_queue(
    backend: SqliteBackend, db: str, make_job: MakeJob
) -> None:
    """A payload that is not a job fails that job with its text kept; the reservation goes on."""
    bad, good = make_job(args=[1]), make_job(args=[2])
    backend.enqueue([bad, good])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", ('{"v": 9, "garbage', bad.id))
    conn.close()
    [delivery] = reserve(backend)
    assert delivery.job == good
    entry = backend.get_failed(bad.id)
    assert entry is not None
    assert entry.raw == '{"v": 9, "garbage'
    assert (entry.job.id, entry.job.task, entry.error.type) == (bad.id, UNREADABLE_TASK, "UnreadableJob")
    record = backend.get_job(bad.id)
    assert record is not None
    assert record.state is JobState.FAILED
    assert backend.redrive([bad.id]) == []  # it stays where it is
    assert backend.get_failed(bad.id) is not None


def test_invalid_utf8_in_a_payload_is_filed_too(backend: SqliteBackend, db: str, make_job: MakeJob) -> None:
    job = make_job()
    backend.enqueue([job])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET payload = CAST(? AS TEXT) WHERE id = ?", (b"\xff\xfe{", job.id))
    conn.close()
    assert reserve(backend) == []
    entry = backend.get_failed(job.id)
    assert entry is not None
    assert entry.raw is not None
    assert entry.raw.endswith("{")


def test_a_lock_held_past_busy_timeout_is_an_outage(db: str, make_job: MakeJob) -> None:
    """Another process holding the write lock too long: BackendUnavailableError, which workers ride out."""
    backend = SqliteBackend(db, busy_timeout=0.05)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailableError, match="database is locked"):
            backend.enqueue([make_job()])
        other.execute("ROLLBACK")
        backend.enqueue([make_job()])
    finally:
        other.close()
        backend.close()


def test_a_file_from_before_pause_gets_the_paused_table(db: str) -> None:
    """A version-1 file written without the ``paused`` table gains it when opened; pausing then works."""
    SqliteBackend(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE paused")
    conn.close()
    backend = SqliteBackend(db)
    backend.pause(["a"])
    assert backend.paused() == ["a"]
    backend.close()


def test_a_file_from_before_error_histories_gets_the_column(
    db: str, clock: ManualClock, make_job: MakeJob
) -> None:
    """A version-1 file without ``jobs.errors`` gains it when opened; its failed job reads with its error."""
    backend = SqliteBackend(db, clock=clock)
    job = make_job()
    backend.enqueue([job])
    backend.settle([failed(reserve_one(backend), "old", clock=clock)])
    backend.close()
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN errors")
    conn.close()
    backend = SqliteBackend(db, clock=clock)
    try:
        record = backend.get_job(job.id)
        assert record is not None
        assert record.error is not None
        assert record.errors == (record.error,)
        backend.redrive([job.id])
        backend.settle([failed(reserve_one(backend), "new", clock=clock)])
        again = backend.get_job(job.id)
        assert again is not None
        assert [e.message for e in again.errors] == ["old", "new"]
    finally:
        backend.close()


def test_a_pause_is_seen_by_another_backend_on_the_file(db: str, make_job: MakeJob) -> None:
    """The paused queues are in the file: a worker of another process stops reserving from them."""
    first, second = SqliteBackend(db), SqliteBackend(db)
    first.enqueue([make_job(queue="a")])
    first.pause(["a"])
    assert second.reserve(["a"], limit=1, lease=30.0, worker="w", wait=0.0) == []
    first.resume(["a"])
    assert len(second.reserve(["a"], limit=1, lease=30.0, worker="w", wait=0.0)) == 1
    first.close()
    second.close()


def test_a_file_from_before_schedules_gets_the_schedules_table(db: str) -> None:
    """A version-1 file written without the ``schedules`` table gains it when opened; marks then work."""
    SqliteBackend(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE schedules")
    conn.close()
    backend = SqliteBackend(db)
    backend.mark_slot("s", 60.0, "j60")
    assert backend.schedule_states(["s"])[0].last_job == "j60"
    backend.close()


def test_racing_marks_on_one_file_leave_the_latest_slot(db: str) -> None:
    """Threads of two backends on one file mark slots in any order: the latest slot and its job stay."""
    import threading

    first, second = SqliteBackend(db), SqliteBackend(db)
    slots = list(range(40))

    def mark(backend: SqliteBackend, order: list[int]) -> None:
        for slot in order:
            backend.mark_slot("s", float(slot), f"j{slot}")

    threads = [
        threading.Thread(target=mark, args=(first, slots)),
        threading.Thread(target=mark, args=(second, slots[::-1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.pause_schedule("s")
    [state] = first.schedule_states(["s"])
    assert (state.last_slot, state.last_job, state.paused) == (39.0, "j39", True)
    first.close()
    second.close()
