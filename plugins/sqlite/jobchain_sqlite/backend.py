"""The ``sqlite://`` backend: jobs in one SQLite file, shared by the threads and processes of one machine.

Written against the public contract only (:class:`jobchain.backend.Backend`,
:mod:`jobchain.model`, :mod:`jobchain.workflow`), as a third party would.

Layout (schema version :data:`SCHEMA_VERSION`, in the ``meta`` table):

* ``jobs``: one row per job: its payload (``Job.to_wire`` JSON), ``state``,
  the static aging key ``order_key = enqueued_at / aging_interval - priority``
  and the FIFO position ``seq`` (a partial index on ``(queue, order_key, seq)``
  over ready rows serves a reservation exactly, see :mod:`jobchain.aging`),
  ``not_before`` of delayed rows, the lease (``token``, ``worker``,
  ``lease_until``), the deliveries of the attempt, the crash count and the
  running mark (:meth:`Backend.mark_running`), result, error and timings,
  and ``errors``: the error history, a JSON list of the last
  :data:`~jobchain.model.MAX_KEPT_ERRORS` attempts' errors, oldest first
  (read and rewritten by the settlement that adds one; added within schema
  version 1: a file written before it gets the column when next opened, and
  its rows read with their ``error`` alone);
* ``chains``: one row per chain or group, its record as JSON (``ChainRecord.to_wire``);
* ``failed``: the failed queue, oldest first (``pos``), with ``raw`` kept for
  a job that could not be read;
* ``workers``: the registered workers, the expiry of their heartbeat and a
  stop flag; ``queues``: every queue seen; ``paused``: a row per paused queue;
  ``unique_keys``: the held uniqueness keys (:mod:`jobchain_sqlite._unique`);
  ``cancel_requests`` (:mod:`jobchain_sqlite._cancel`); ``schedules``: each
  schedule's latest slot and paused flag (:mod:`jobchain_sqlite._schedules`)
  (these created on open where a file of this version lacks them).

Every transition is one ``BEGIN IMMEDIATE`` transaction, so it is atomic
across threads and processes; the file is in WAL mode, so readers never wait
for the writer. Each thread gets a connection of its own (sqlite3 objects are
not thread-safe). There is no server to push a wake-up: :meth:`reserve`
polls, first after 2 ms, then doubling up to ``poll`` seconds (0.05 s by
default), so a job submitted by another process waits up to that long before
an idle worker sees it; within one process an enqueue or settlement wakes the
waiting reservers at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import structlog

from jobchain import workflow
from jobchain.backend import Backend, name_taken
from jobchain.capabilities import Browse, FailedQueue, JobPage, Pause, Stats, Uniqueness, WorkerRegistry
from jobchain.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidJobError,
    NotInFailedQueueError,
)
from jobchain.model import (
    UNREADABLE_TASK,
    Aborted,
    ChainRecord,
    ChainState,
    Completed,
    Delivery,
    ErrorInfo,
    Failed,
    FailedEntry,
    Job,
    JobRecord,
    JobState,
    Json,
    Outcome,
    QueueStats,
    Released,
    Retried,
    SettleResult,
    WorkerInfo,
    errors_from_wire,
    kept_errors,
)
from jobchain.uniqueness import check_batch
from jobchain_sqlite import _browse, _unique
from jobchain_sqlite._limits import LIMIT_TABLES, SqliteLimits
from jobchain_sqlite._unique import UNIQUE_TABLE

__all__ = ["SCHEMA_VERSION", "SqliteBackend", "parse_url"]

from jobchain_sqlite._cancel import _CANCEL_TABLE, SqliteCancel, mark_cancelled
from jobchain_sqlite._schedules import SCHEDULES_TABLE, SqliteSchedules

logger = structlog.get_logger("jobchain.sqlite")

#: The layout this version reads and writes; a database of another version is refused.
SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        order_key REAL NOT NULL,
        seq INTEGER,
        not_before REAL,
        payload TEXT NOT NULL,
        token TEXT,
        worker TEXT,
        lease_until REAL,
        deliveries INTEGER NOT NULL DEFAULT 0,
        crashes INTEGER NOT NULL DEFAULT 0,
        marked TEXT,
        result TEXT,
        error TEXT,
        started_at REAL,
        finished_at REAL,
        errors TEXT
    )""",
    "CREATE INDEX jobs_ready ON jobs (queue, order_key, seq) WHERE state = 'queued'",
    "CREATE INDEX jobs_delayed ON jobs (not_before) WHERE state = 'delayed'",
    "CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running'",
    "CREATE INDEX jobs_state ON jobs (state, queue)",
    "CREATE TABLE chains (id TEXT PRIMARY KEY, record TEXT NOT NULL)",
    """CREATE TABLE failed (
        pos INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL UNIQUE,
        queue TEXT NOT NULL,
        failed_at REAL NOT NULL,
        payload TEXT NOT NULL,
        error TEXT NOT NULL,
        raw TEXT
    )""",
    """CREATE TABLE workers (
        name TEXT PRIMARY KEY,
        instance TEXT NOT NULL,
        info TEXT NOT NULL,
        expires REAL NOT NULL,
        stop INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE TABLE queues (name TEXT PRIMARY KEY)",
)
#: added within schema version 1: a file written before it gets the table when next opened
_PAUSED_TABLE = "CREATE TABLE IF NOT EXISTS paused (queue TEXT PRIMARY KEY)"
#: added within schema version 1: a file written before it gets the column when next opened
_ERRORS_COLUMN = "ALTER TABLE jobs ADD COLUMN errors TEXT"

_SYNCHRONOUS = ("normal", "full", "extra")
_OPTIONS = {
    "busy_timeout": "seconds a transition waits for another process's lock (default 10)",
    "synchronous": "normal (default: safe from process crashes) or full/extra (also from power loss)",
    "poll": "the longest pause, in seconds, between two looks for work while idle (default 0.05)",
}
_FIRST_PAUSE = 0.002


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """The file path and the options of a ``sqlite://`` URL; :class:`ConfigurationError` says what is wrong.

    ``sqlite:///abs/path/jobs.db`` names an absolute path (three slashes: the
    host part is empty), ``sqlite://jobs.db`` or ``sqlite://data/jobs.db`` a
    path relative to the current directory.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a sqlite:// URL: {url!r}")
    if "@" in parts.netloc:
        raise ConfigurationError(
            "a sqlite:// URL takes no user or password: SQLite files are protected by file permissions"
        )
    path = unquote(parts.netloc + parts.path)
    if not path:
        raise ConfigurationError(
            "the sqlite:// URL names no file: use sqlite:///absolute/path/jobs.db "
            "or sqlite://jobs.db (relative to the current directory)"
        )
    if path.lstrip("/") == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"sqlite://{path} is not a file other processes can open: name a file "
            "(sqlite:///path/jobs.db), or use memory:// for jobs held in one process"
        )
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            known = "; ".join(f"{k}: {text}" for k, text in _OPTIONS.items())
            raise ConfigurationError(f"unknown sqlite:// URL option {key!r}; the options are {known}")
        if key in options:
            raise ConfigurationError(f"the sqlite:// URL option {key!r} is given twice: give it once")
        options[key] = value
    return path, options


def _seconds(options: Mapping[str, str], key: str, default: float, top: float) -> float:
    text = options.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= top:  # false for nan too
        raise ConfigurationError(
            f"sqlite:// option {key} must be a number of seconds in (0, {top:g}], got {text!r}"
        )
    return value


def _dumps(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"))


def _text(value: Any) -> str:
    """A stored column as text, whatever bytes someone put there (selected with ``CAST(... AS BLOB)``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _job_from(value: Any, job_id: str) -> Job:
    """The job of a stored payload; InvalidJobError (or ValueError) when it cannot be read."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")  # UnicodeDecodeError is a ValueError
    job = Job.from_wire(json.loads(value))
    if job.id != job_id:
        raise InvalidJobError(f"the stored payload is job {job.id!r}, not {job_id!r}")
    return job


def _chain_to_json(record: ChainRecord) -> str:
    return _dumps(record.to_wire())


def _chain_from_json(text: str) -> ChainRecord:
    """A stored chain record: the core's wire form (records stored before it had ``"v"`` read as well)."""
    return ChainRecord.from_wire(json.loads(text))


def _error_from(text: str | None) -> ErrorInfo | None:
    return None if text is None else ErrorInfo.from_wire(json.loads(text))


def _history_from(error: str | None, errors: str | None) -> tuple[ErrorInfo, ...]:
    """A row's error history; a row from before the column (``errors`` NULL): its ``error`` alone."""
    return errors_from_wire(None if errors is None else json.loads(errors), _error_from(error))


class SqliteBackend(
    Backend,
    FailedQueue,
    WorkerRegistry,
    Stats,
    SqliteCancel,
    Pause,
    Browse,
    Uniqueness,
    SqliteSchedules,
    SqliteLimits,
):
    """Jobs in a SQLite database file in WAL mode; every transition one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        busy_timeout: float = 10.0,
        synchronous: str = "normal",
        poll: float = 0.05,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"sqlite:// option synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.path = os.path.abspath(path)
        self.url = url or f"sqlite://{self.path}"
        self.busy_timeout = float(busy_timeout)
        self.synchronous = synchronous
        self.poll = float(poll)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._pid = os.getpid()
        self._wake = threading.Condition(threading.Lock())
        self._open()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteBackend:
        """Open the database a ``sqlite://`` URL names (created when missing); arguments win over the URL."""
        path, own = parse_url(url)
        from_url: dict[str, Any] = {}
        if "busy_timeout" in own:
            from_url["busy_timeout"] = _seconds(own, "busy_timeout", 10.0, 3600.0)
        if "synchronous" in own:
            from_url["synchronous"] = own["synchronous"].lower()
        if "poll" in own:
            from_url["poll"] = _seconds(own, "poll", 0.05, 10.0)
        return cls(path, url=url, **{**from_url, **options})

    # --- connections and transactions ---------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.OperationalError as exc:
            raise ConfigurationError(
                f"cannot open the SQLite database {self.path}: {exc} "
                "(does its directory exist, and may this user write to it?)"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"{self.path} is not a SQLite database jobchain can use ({exc}): name another file"
            ) from exc
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # a forked child: never share the parent's connections
            self._pid = os.getpid()
            self._local = threading.local()
            with self._connections_lock:
                self._connections = []
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _failure(self, exc: sqlite3.Error) -> BackendError:
        if isinstance(exc, sqlite3.OperationalError):  # locked past busy_timeout, disk full, I/O
            return BackendUnavailableError(self.url, str(exc))
        return BackendError(f"the SQLite database {self.path} failed: {exc}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled back if it raises."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._failure(exc) from exc
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads (a deferred transaction: WAL readers never wait)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN")
            yield conn
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _open(self) -> None:
        """Switch the file to WAL mode and create the schema, or check the version of the one there."""
        conn = self._conn()
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"{self.path} is not a SQLite database jobchain can use ({exc}): name another file"
            ) from exc
        with self._write() as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                if tables - {"sqlite_sequence"}:
                    raise ConfigurationError(
                        f"{self.path} holds tables that are not jobchain's ({', '.join(sorted(tables))}): "
                        "give jobchain a database file of its own"
                    )
                for statement in (
                    *_SCHEMA,
                    _PAUSED_TABLE,
                    UNIQUE_TABLE,
                    _CANCEL_TABLE,
                    SCHEDULES_TABLE,
                    *LIMIT_TABLES,
                ):
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("seq", 0)],
                )
                return
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = None if row is None else row[0]
            if version != SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the database {self.path} has jobchain-sqlite schema version {version!r}, and this "
                    f"jobchain-sqlite reads version {SCHEMA_VERSION}: open it with the jobchain-sqlite "
                    "that wrote it, or give this one a new file"
                )
            if "paused" not in tables:
                conn.execute(_PAUSED_TABLE)
            if "errors" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}:
                conn.execute(_ERRORS_COLUMN)
            if "unique_keys" not in tables:
                conn.execute(UNIQUE_TABLE)
            if "cancel_requests" not in tables:
                conn.execute(_CANCEL_TABLE)
            if "schedules" not in tables:
                conn.execute(SCHEDULES_TABLE)
            for statement in LIMIT_TABLES:  # IF NOT EXISTS: a file written before limits gets them
                conn.execute(statement)

    def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, []
        self._local = threading.local()
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                conn.close()

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # --- internals (inside a write transaction) ----------------------------------------------

    def _next_seqs(self, conn: sqlite3.Connection, count: int) -> int:
        """Reserve ``count`` FIFO positions; the first of them."""
        (last,) = conn.execute(
            "UPDATE meta SET value = value + ? WHERE key = 'seq' RETURNING value", (count,)
        ).fetchone()
        return int(last) - count + 1

    def _key(self, job: Job) -> float:
        return job.enqueued_at / self.aging_interval - job.priority

    def _insert(self, conn: sqlite3.Connection, jobs: Sequence[Job], now: float) -> list[Job]:
        """Store jobs whose ids are not stored yet, ready or delayed; those of ``jobs`` that are ready.

        A job whose id exists is skipped (``INSERT OR IGNORE``), but it is in the list
        returned: callers pass only ids they know are new when they use the list.
        """
        ready = [job for job in jobs if job.not_before is None or job.not_before <= now]
        seq = self._next_seqs(conn, len(ready)) if ready else 0
        rows: list[tuple[Any, ...]] = []
        for job in jobs:
            is_ready = job.not_before is None or job.not_before <= now
            try:
                payload = _dumps(job.to_wire())
            except (TypeError, ValueError) as exc:
                raise InvalidJobError(f"job {job.id} cannot be stored as JSON: {exc}") from exc
            rows.append(
                (
                    job.id,
                    job.queue,
                    "queued" if is_ready else "delayed",
                    self._key(job),
                    seq if is_ready else None,
                    None if is_ready else job.not_before,
                    payload,
                )
            )
            seq += is_ready
        conn.executemany(
            "INSERT OR IGNORE INTO jobs (id, queue, state, order_key, seq, not_before, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany("INSERT OR IGNORE INTO queues (name) VALUES (?)", {(job.queue,) for job in jobs})
        return ready

    def _promote(self, conn: sqlite3.Connection, now: float) -> None:
        """Make due delayed jobs ready, and jobs whose lease ended ready again (counting marked ones)."""
        due = conn.execute(
            "SELECT id, seq FROM jobs WHERE state = 'delayed' AND not_before <= ? ORDER BY not_before, rowid",
            (now,),
        ).fetchall()
        if due:
            fresh = sum(1 for _, seq in due if seq is None)
            seq = self._next_seqs(conn, fresh) if fresh else 0
            rows = []
            for job_id, kept in due:
                if kept is None:
                    kept, seq = seq, seq + 1
                rows.append((kept, job_id))
            conn.executemany(
                "UPDATE jobs SET state = 'queued', seq = ?, not_before = NULL WHERE id = ?", rows
            )
        expired = conn.execute(
            "SELECT id, worker FROM jobs WHERE state = 'running' AND lease_until <= ?", (now,)
        ).fetchall()
        if expired:
            conn.execute(
                "UPDATE jobs SET state = 'queued', "
                "crashes = crashes + (marked IS NOT NULL AND marked = token), "
                "marked = NULL, token = NULL, worker = NULL, lease_until = NULL "
                "WHERE state = 'running' AND lease_until <= ?",
                (now,),
            )
            for job_id, worker in expired:
                logger.info("lease_expired", job_id=job_id, worker=worker)

    def _lease(
        self,
        conn: sqlite3.Connection,
        job: Job,
        *,
        deliveries: int,
        crashes: int,
        lease_until: float,
        worker: str,
    ) -> Delivery:
        token = secrets.token_hex(8)
        conn.execute(
            "UPDATE jobs SET state = 'running', token = ?, worker = ?, lease_until = ?, deliveries = ?, "
            "marked = NULL, result = NULL WHERE id = ?",
            (token, worker, lease_until, deliveries + 1, job.id),
        )
        return Delivery(
            job=job,
            token=token,
            lease_until=lease_until,
            worker=worker,
            delivery_count=deliveries + 1,
            crashes=crashes,
        )

    def _take(
        self,
        conn: sqlite3.Connection,
        queues: Sequence[str],
        limit: int,
        lease_until: float,
        worker: str,
        now: float,
    ) -> list[Delivery]:
        rows: list[Any] = []
        for queue in dict.fromkeys(queues):
            rows += conn.execute(
                "SELECT id, queue, order_key, seq, CAST(payload AS BLOB), deliveries, crashes FROM jobs "
                "WHERE state = 'queued' AND queue = ? AND NOT EXISTS (SELECT 1 FROM paused WHERE queue = ?) "
                "ORDER BY order_key, seq LIMIT ?",
                (queue, queue, limit),
            ).fetchall()
        if len(queues) > 1:
            rows.sort(key=lambda r: (r[2], r[3]))
        out: list[Delivery] = []
        for job_id, queue, _key, _seq, payload, deliveries, crashes in rows:
            if len(out) == limit:
                break
            try:
                job = _job_from(payload, job_id)
            except (
                ValueError
            ) as exc:  # InvalidJobError, JSONDecodeError and UnicodeDecodeError are ValueErrors
                self._quarantine(conn, job_id, queue, payload, str(exc), now)
                continue
            out.append(
                self._lease(
                    conn, job, deliveries=deliveries, crashes=crashes, lease_until=lease_until, worker=worker
                )
            )
        return out

    def _quarantine(
        self, conn: sqlite3.Connection, job_id: str, queue: str, raw: Any, reason: str, now: float
    ) -> None:
        """File an unreadable job in the failed queue with its stored text; it is never delivered again."""
        logger.warning("unreadable_job_failed", job_id=job_id, queue=queue, reason=reason)
        placeholder = _dumps(Job(id=job_id, task=UNREADABLE_TASK, queue=queue, enqueued_at=now).to_wire())
        error = _dumps(ErrorInfo(type="UnreadableJob", message=reason, attempt=1, at=now).to_wire())
        conn.execute(
            "UPDATE jobs SET state = 'failed', payload = ?, error = ?, finished_at = ?, seq = NULL, "
            "token = NULL, worker = NULL, lease_until = NULL, marked = NULL WHERE id = ?",
            (placeholder, error, now, job_id),
        )
        conn.execute("DELETE FROM failed WHERE job_id = ?", (job_id,))
        conn.execute(
            "INSERT INTO failed (job_id, queue, failed_at, payload, error, raw) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, queue, now, placeholder, error, _text(raw)),
        )

    def _get_chain(self, conn: sqlite3.Connection, chain_id: str) -> ChainRecord | None:
        row = conn.execute("SELECT record FROM chains WHERE id = ?", (chain_id,)).fetchone()
        return None if row is None else _chain_from_json(row[0])

    def _put_chain(self, conn: sqlite3.Connection, record: ChainRecord) -> None:
        conn.execute("UPDATE chains SET record = ? WHERE id = ?", (_chain_to_json(record), record.id))

    # --- jobs ----------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        with self._write() as conn:
            now = self.clock.now()
            if chains:
                conn.executemany(
                    "INSERT OR IGNORE INTO chains (id, record) VALUES (?, ?)",
                    [(chain.id, _chain_to_json(chain)) for chain in chains],
                )
            if jobs:
                self._insert(conn, jobs, now)
        self._notify()

    def enqueue_unique(
        self, jobs: Sequence[Job], keys: Sequence[str], *, hold: float | None = None
    ) -> list[str]:
        check_batch(jobs, keys, hold)
        with self._write() as conn:
            now = self.clock.now()
            held = _unique.take(conn, jobs, keys, hold, now, lambda job: self._insert(conn, [job], now))
        self._notify()
        return held

    def _maybe_work(self, queues: Sequence[str], now: float) -> bool:
        """A cheap read: is anything ready in ``queues``, or due to become ready? (No write lock taken.)"""
        conn = self._conn()
        marks = ",".join("?" * len(queues))
        try:
            row = conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND queue IN ({marks}) "
                "AND queue NOT IN (SELECT queue FROM paused)) "
                "OR EXISTS (SELECT 1 FROM jobs WHERE state = 'delayed' AND not_before <= ?) "
                "OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND lease_until <= ?)",
                (*queues, now, now),
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        return bool(row[0])

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if not queues:
            return []
        deadline = time.monotonic() + wait
        pause = _FIRST_PAUSE
        while True:
            if self._maybe_work(queues, self.clock.now()):
                with self._write() as conn:
                    now = self.clock.now()
                    self._promote(conn, now)
                    taken = self._take(conn, queues, limit, now + lease, worker, now)
                if taken:
                    return taken
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self._wake:  # an enqueue or settlement in this process wakes us; other processes are polled
                woken = self._wake.wait(min(pause, remaining))
            pause = _FIRST_PAUSE if woken else min(pause * 2, self.poll)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        with self._write() as conn:
            lease_until = self.clock.now() + lease
            return [
                conn.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND state = 'running' AND token = ?",
                    (lease_until, d.job.id, d.token),
                ).rowcount
                == 1
                for d in deliveries
            ]

    def mark_running(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._write() as conn:
            now = self.clock.now()
            self._promote(conn, now)
            return [
                conn.execute(
                    "UPDATE jobs SET marked = token WHERE id = ? AND state = 'running' AND token = ? "
                    "AND lease_until > ?",
                    (d.job.id, d.token, now),
                ).rowcount
                == 1
                for d in deliveries
            ]

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        results, _ = self._settle(outcomes, None)
        return results

    def settle_and_take(
        self, outcomes: Sequence[Outcome], *, worker: str, queues: Sequence[str], lease: float, limit: int
    ) -> tuple[list[SettleResult], list[Delivery]]:
        return self._settle(outcomes, (worker, queues, lease, limit))

    def _settle(
        self, outcomes: Sequence[Outcome], take: tuple[str, Sequence[str], float, int] | None
    ) -> tuple[list[SettleResult], list[Delivery]]:
        results: list[SettleResult] = []
        taken: list[Delivery] = []
        with self._write() as conn:
            now = self.clock.now()
            following: list[Job] = []
            for outcome in outcomes:
                results.append(self._settle_one(conn, outcome, now, following))
            if take is not None and following:
                worker, queues, lease, limit = take
                for job in following:
                    if len(taken) == limit or job.queue not in queues:
                        continue
                    head = conn.execute(
                        "SELECT id FROM jobs WHERE state = 'queued' AND queue = ? "
                        "AND NOT EXISTS (SELECT 1 FROM paused WHERE queue = ?) "
                        "ORDER BY order_key, seq LIMIT 1",
                        (job.queue, job.queue),
                    ).fetchone()
                    if head is not None and head[0] == job.id:  # nothing ready in its queue is as urgent
                        taken.append(
                            self._lease(
                                conn, job, deliveries=0, crashes=0, lease_until=now + lease, worker=worker
                            )
                        )
        if any(r.accepted for r in results):
            self._notify()
        return results, taken

    def _settle_one(
        self, conn: sqlite3.Connection, outcome: Outcome, now: float, following: list[Job]
    ) -> SettleResult:
        delivery = outcome.delivery
        job = delivery.job
        row = conn.execute("SELECT state, token, deliveries FROM jobs WHERE id = ?", (job.id,)).fetchone()
        if row is None or row[0] != "running" or row[1] != delivery.token:
            logger.warning(
                "stale_settle_rejected", job_id=job.id, worker=delivery.worker, outcome=type(outcome).__name__
            )
            return SettleResult(accepted=False)
        deliveries = row[2]
        unlease = "token = NULL, worker = NULL, lease_until = NULL, marked = NULL"
        chain: ChainRecord | None = None
        if job.unique is not None and isinstance(outcome, Completed | Failed):
            _unique.release(conn, job)
        if isinstance(outcome, Completed):
            conn.execute(
                f"UPDATE jobs SET state = 'succeeded', {unlease}, seq = NULL, deliveries = 0, crashes = 0, "
                "result = ?, error = NULL, started_at = ?, finished_at = ? WHERE id = ?",
                (_dumps(outcome.result), outcome.started_at, outcome.finished_at, job.id),
            )
            chain = self._chain_completed(conn, outcome, now, following)
        elif isinstance(outcome, Retried):
            retry = job.retried(not_before=now + outcome.delay)
            delayed = retry.not_before is not None and retry.not_before > now
            recorded = outcome.recorded_error
            conn.execute(
                f"UPDATE jobs SET state = ?, {unlease}, deliveries = 0, crashes = 0, not_before = ?, "
                "payload = ?, result = NULL, error = ?, errors = ?, started_at = NULL, finished_at = NULL "
                "WHERE id = ?",
                (
                    "delayed" if delayed else "queued",
                    retry.not_before if delayed else None,
                    _dumps(retry.to_wire()),
                    _dumps(recorded.to_wire()),
                    self._history_with(conn, job.id, recorded),
                    job.id,
                ),
            )
        elif isinstance(outcome, Failed):
            recorded = outcome.recorded_error
            error = _dumps(recorded.to_wire())
            conn.execute(
                f"UPDATE jobs SET state = 'failed', {unlease}, seq = NULL, deliveries = 0, crashes = 0, "
                "error = ?, errors = ?, finished_at = ? WHERE id = ?",
                (error, self._history_with(conn, job.id, recorded), now, job.id),
            )
            conn.execute("DELETE FROM failed WHERE job_id = ?", (job.id,))
            conn.execute(
                "INSERT INTO failed (job_id, queue, failed_at, payload, error) VALUES (?, ?, ?, ?, ?)",
                (job.id, job.queue, now, _dumps(job.to_wire()), error),
            )
            chain = self._chain_failed(conn, job, outcome.error, now)
        elif isinstance(outcome, Aborted):
            chain = mark_cancelled(conn, job, now, started_at=outcome.started_at)
        elif isinstance(outcome, Released):  # the attempt and its crash count go on
            conn.execute(
                f"UPDATE jobs SET state = 'queued', {unlease}, deliveries = ? WHERE id = ?",
                (max(0, deliveries - 1), job.id),
            )
        return SettleResult(accepted=True, chain=chain)

    @staticmethod
    def _history_with(conn: sqlite3.Connection, job_id: str, error: ErrorInfo) -> str:
        """The job's error history with ``error`` appended, as stored (the last MAX_KEPT_ERRORS)."""
        row = conn.execute("SELECT error, errors FROM jobs WHERE id = ?", (job_id,)).fetchone()
        history = _history_from(row[0], row[1]) if row is not None else ()
        return _dumps([e.to_wire() for e in kept_errors(history, error)])

    def _chain_completed(
        self, conn: sqlite3.Connection, outcome: Completed, now: float, following: list[Job]
    ) -> ChainRecord | None:
        ref = outcome.delivery.job.chain
        if ref is None:
            return None
        record = self._get_chain(conn, ref.chain_id)
        if record is None:
            return None
        updated, jobs = workflow.apply_completed(
            record,
            ref,
            outcome.result,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            now=now,
            result_sig=outcome.result_sig,
        )
        if updated != record:
            self._put_chain(conn, updated)
        if jobs:
            known = {
                job_id
                for (job_id,) in conn.execute(
                    f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(jobs))})", [j.id for j in jobs]
                )
            }
            fresh = [j for j in jobs if j.id not in known]
            following += self._insert(conn, fresh, now) if fresh else []
        if updated.state is ChainState.COMPLETED and record.state is not ChainState.COMPLETED:
            return updated
        return None

    def _chain_failed(
        self, conn: sqlite3.Connection, job: Job, error: ErrorInfo, now: float
    ) -> ChainRecord | None:
        if job.chain is None:
            return None
        record = self._get_chain(conn, job.chain.chain_id)
        if record is None:
            return None
        updated = workflow.apply_failed(record, job.chain, error, now=now)
        if updated != record:
            self._put_chain(conn, updated)
        if updated.state is ChainState.HALTED and record.state is not ChainState.HALTED:
            return updated
        return None

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._read() as conn:
            sql = f"SELECT {_browse.RECORD_COLUMNS} FROM jobs WHERE id = ?"
            row = conn.execute(sql, (job_id,)).fetchone()
        return None if row is None else self._record(tuple(row))

    @staticmethod
    def _record(row: tuple[Any, ...]) -> JobRecord:
        """The record of a row of :data:`jobchain_sqlite._browse.RECORD_COLUMNS`."""
        job_id, payload, queue, state, result, error, started_at, finished_at, worker, errors = row
        try:
            job = _job_from(payload, job_id)
        except ValueError as exc:  # not reserved yet, so not quarantined yet: show it as unreadable
            job = Job(id=job_id, task=UNREADABLE_TASK, queue=queue, enqueued_at=0.0)
            error = error or _dumps(ErrorInfo(type="UnreadableJob", message=str(exc)).to_wire())
        return JobRecord(
            job=job,
            state=JobState(state),
            result=None if result is None else json.loads(result),
            error=_error_from(error),
            errors=_history_from(error, errors),
            started_at=started_at,
            finished_at=finished_at,
            worker=worker if state == JobState.RUNNING.value else None,
        )

    def get_chain(self, chain_id: str) -> ChainRecord | None:
        with self._read() as conn:
            return self._get_chain(conn, chain_id)

    # --- failed queue ----------------------------------------------------------------------------

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> FailedEntry:
        job_id, queue, failed_at, payload, error, raw = row
        try:
            job = _job_from(payload, job_id)
        except ValueError:
            job = Job(id=job_id, task=UNREADABLE_TASK, queue=queue, enqueued_at=failed_at)
            raw = raw if raw is not None else _text(payload)
        return FailedEntry(
            job=job, error=ErrorInfo.from_wire(json.loads(error)), failed_at=failed_at, raw=raw
        )

    _FAILED_COLUMNS = "job_id, queue, failed_at, CAST(payload AS BLOB), error, raw"

    def failed(self, *, limit: int = 100, offset: int = 0) -> list[FailedEntry]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._FAILED_COLUMNS} FROM failed ORDER BY pos LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [self._entry(row) for row in rows]

    def get_failed(self, job_id: str) -> FailedEntry | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._FAILED_COLUMNS} FROM failed WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else self._entry(row)

    def redrive(self, job_ids: Sequence[str]) -> list[str]:
        moved: list[str] = []
        with self._write() as conn:
            wanted = list(dict.fromkeys(job_ids))
            rows = {
                row[0]: row
                for chunk in range(0, len(wanted), 500)
                for row in conn.execute(
                    f"SELECT {self._FAILED_COLUMNS} FROM failed WHERE job_id IN "
                    f"({','.join('?' * len(wanted[chunk : chunk + 500]))})",
                    wanted[chunk : chunk + 500],
                )
            }
            missing = [job_id for job_id in wanted if job_id not in rows]
            if missing:  # checked inside the transaction before anything moves: all or nothing
                raise NotInFailedQueueError(missing)
            now = self.clock.now()
            for job_id in wanted:
                entry = self._entry(rows[job_id])
                if entry.raw is not None:
                    continue  # unreadable: stays in the failed queue
                job = attrs.evolve(entry.job, attempt=1, not_before=None, enqueued_at=now)
                if job.expires_at is not None:
                    job = attrs.evolve(
                        job, expires_at=now + (entry.job.expires_at or now) - entry.job.enqueued_at
                    )
                kept = conn.execute("SELECT error, errors FROM jobs WHERE id = ?", (job_id,)).fetchone()
                conn.execute("DELETE FROM failed WHERE job_id = ?", (job_id,))
                conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                self._insert(conn, [job], now)
                history = () if kept is None else _history_from(kept[0], kept[1])
                if history:  # the history outlives the re-drive; the next attempts append to it
                    conn.execute(
                        "UPDATE jobs SET errors = ? WHERE id = ?",
                        (_dumps([e.to_wire() for e in history]), job_id),
                    )
                if job.chain is not None:
                    record = self._get_chain(conn, job.chain.chain_id)
                    if record is not None:
                        self._put_chain(conn, workflow.apply_redrive(record, job.chain))
                moved.append(job_id)
        if moved:
            self._notify()
        return moved

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        with self._write() as conn:
            if job_ids is None:
                return conn.execute("DELETE FROM failed").rowcount
            return sum(
                conn.execute("DELETE FROM failed WHERE job_id = ?", (j,)).rowcount
                for j in dict.fromkeys(job_ids)
            )

    # --- workers ---------------------------------------------------------------------------------

    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        with self._write() as conn:
            now = self.clock.now()
            row = conn.execute(
                "SELECT info, expires, stop FROM workers WHERE name = ?", (info.name,)
            ).fetchone()
            holder = None if row is None else WorkerInfo.from_wire(json.loads(row[0]))
            live = row is not None and row[1] > now
            taken = name_taken(holder, live, info)
            if taken is not None:
                raise taken
            # a stop request was meant for the worker that held the name before
            stop = bool(row[2]) if holder is not None and live and holder.instance == info.instance else False
            conn.execute(
                "INSERT OR REPLACE INTO workers (name, instance, info, expires, stop) VALUES (?, ?, ?, ?, ?)",
                (info.name, info.instance, _dumps(info.to_wire()), now + ttl, int(stop)),
            )
            return stop

    def remove_worker(self, name: str, instance: str | None = None) -> None:
        with self._write() as conn:
            if instance is None:
                conn.execute("DELETE FROM workers WHERE name = ?", (name,))
            else:
                conn.execute("DELETE FROM workers WHERE name = ? AND instance = ?", (name, instance))

    def workers(self) -> list[WorkerInfo]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT info FROM workers WHERE expires > ? ORDER BY name", (self.clock.now(),)
            ).fetchall()
        return [WorkerInfo.from_wire(json.loads(info)) for (info,) in rows]

    def request_stop(self, name: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE workers SET stop = 1 WHERE name = ? AND expires > ?", (name, self.clock.now())
            ).rowcount
        return changed == 1

    # --- paused queues ---------------------------------------------------------------------------

    def pause(self, queues: Sequence[str]) -> None:
        with self._write() as conn:
            conn.executemany("INSERT OR IGNORE INTO paused (queue) VALUES (?)", [(q,) for q in queues])

    def resume(self, queues: Sequence[str]) -> None:
        with self._write() as conn:
            conn.executemany("DELETE FROM paused WHERE queue = ?", [(q,) for q in queues])
        self._notify()

    def paused(self) -> list[str]:
        with self._read() as conn:
            return [queue for (queue,) in conn.execute("SELECT queue FROM paused ORDER BY queue")]

    # --- browsing ---------------------------------------------------------------------------------

    def browse(
        self,
        *,
        queue: str,
        state: JobState,
        task: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> JobPage:
        with self._write() as conn:  # due delayed jobs become ready first, as for stats
            self._promote(conn, self.clock.now())
            return _browse.browse(
                conn,
                self._record,
                queue=queue,
                state=state,
                task=task,
                limit=limit,
                cursor=cursor,
                oldest_first=oldest_first,
            )

    def counts(self, queue: str) -> dict[JobState, int]:
        with self._write() as conn:
            self._promote(conn, self.clock.now())
            return _browse.counts(conn, queue)

    # --- inspection ------------------------------------------------------------------------------

    def stats(self) -> list[QueueStats]:
        with self._write() as conn:
            self._promote(conn, self.clock.now())
            counts: dict[str, dict[str, int]] = {
                name: {"ready": 0, "delayed": 0, "in_flight": 0, "failed": 0}
                for (name,) in conn.execute("SELECT name FROM queues")
            }
            column = {"queued": "ready", "delayed": "delayed", "running": "in_flight"}
            for queue, state, count in conn.execute(
                "SELECT queue, state, count(*) FROM jobs WHERE state IN ('queued', 'delayed', 'running') "
                "GROUP BY state, queue"
            ):
                counts.setdefault(queue, {"ready": 0, "delayed": 0, "in_flight": 0, "failed": 0})
                counts[queue][column[state]] = count
            for queue, count in conn.execute("SELECT queue, count(*) FROM failed GROUP BY queue"):
                counts.setdefault(queue, {"ready": 0, "delayed": 0, "in_flight": 0, "failed": 0})
                counts[queue]["failed"] = count
        return [QueueStats(queue=q, **c) for q, c in sorted(counts.items())]
