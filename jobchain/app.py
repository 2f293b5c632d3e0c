"""The application: tasks, submission and the failed queue, over one backend."""

from __future__ import annotations

import builtins
import contextlib
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload

from attrs import evolve, field, frozen

from jobchain._eager import EagerRunner
from jobchain.aging import DEFAULT_AGING_INTERVAL
from jobchain.aio import DEFAULT_THREADS, AsyncBridge
from jobchain.backend import Backend
from jobchain.browsing import Jobs
from jobchain.buffer import DEFAULT_BUFFER, BufferedSubmits, PendingSubmit, SubmitBuffer
from jobchain.canvas import Chain, Group, Signature, TaskBase, chain
from jobchain.capabilities import Cancel, CancelReport, Pause, Stats, Uniqueness, WorkerRegistry, require
from jobchain.capabilities import FailedQueue as FailedQueueCapability
from jobchain.clock import Clock, SystemClock
from jobchain.delays import delay_of
from jobchain.errors import ConfigurationError, InvalidJobError, NotInFailedQueueError, UnknownTaskError
from jobchain.errortext import DEFAULT_MAX_ERROR_BYTES, MIN_MAX_ERROR_BYTES
from jobchain.events import Events
from jobchain.handles import ChainHandle, JobHandle
from jobchain.limits import KeyBy, Limits
from jobchain.model import ChainRecord, FailedEntry, Job, QueueStats, WorkerInfo
from jobchain.payload import DEFAULT_MAX_PAYLOAD
from jobchain.plugins import Plugins, default_plugins
from jobchain.retry import Retry
from jobchain.schedules import Schedule
from jobchain.signing import Signer, signer_from_config
from jobchain.submission import Builder
from jobchain.uniqueness import UniqueBy, check_hold, check_unique_by, unique_of
from jobchain.worker import Runtime, Worker

__all__ = ["App", "FailedPage", "FailedQueue", "Task"]

P = ParamSpec("P")
R = TypeVar("R")


def _check_number(name: str, value: Any, *, allow_none: bool = True, minimum: float = 0.0) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= minimum:
        raise InvalidJobError(f"{name} must be a number of seconds > {minimum:g}, got {value!r}")


def _candidates(function: Callable[..., Any]) -> list[Any]:
    """The function, what it wraps (a bound method's, a partial's) and an object's ``__call__``."""
    candidates = [function, getattr(function, "__func__", None), getattr(function, "func", None)]
    if callable(function) and not inspect.isroutine(function) and not isinstance(function, type):
        candidates.append(type(function).__call__)
    return [c for c in candidates if c is not None]


def _is_async(function: Callable[..., Any]) -> bool:
    """True for a coroutine function (``async def``), or an object whose ``__call__`` is one."""
    return any(inspect.iscoroutinefunction(c) for c in _candidates(function))


def _is_async_generator(function: Callable[..., Any]) -> bool:
    return any(inspect.isasyncgenfunction(c) for c in _candidates(function))


class Task(TaskBase, Generic[P, R]):
    """A function declared with ``@app.task``. Calling it runs the function here, now."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str,
        priority: int,
        retry: Retry | None,
        timeout: float | None,
        expires: float | None,
        unique: UniqueBy | None = None,
        unique_for: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self._retry = retry
        self.timeout = timeout
        self.expires = expires
        #: how a submit of this task derives its uniqueness key (None: not unique unless given per submit)
        self.unique = check_unique_by(unique, fn, name)
        #: seconds the key is held from the submit (None: until the job finishes)
        self.unique_for = check_hold(unique_for)
        #: rate and concurrency limits the workers apply before a run (None: none)
        self.limits = limits
        self._signature: inspect.Signature | None = None
        #: number of parameters when all are plain (positional or keyword, no default), else -1
        self._arity = -1
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        #: an ``async def`` task: a worker awaits it on its event loop (see ``docs/guide.md``, asyncio)
        self.is_async = _is_async(fn)

    @property
    def retry(self) -> Retry:
        """The task's retry policy, or the App's default when it declared none."""
        return self._retry if self._retry is not None else self.app.retry

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """Bind arguments; in a chain, the previous result comes before them."""
        return Signature(task=self, args=args, kwargs=kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """Bind arguments and ignore the previous step's result (an immutable step)."""
        return Signature(task=self, args=args, kwargs=kwargs, immutable=True)

    @overload
    def submit(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle: ...

    @overload
    def submit(
        self,
        *args: Any,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> JobHandle: ...

    def submit(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueue one run of this task.

        ``job_id=`` gives the job that id instead of a fresh one (see
        :func:`jobchain.submission.check_id`); when a job with that id exists,
        nothing is stored and the handle is the existing job's. ``unique_key=``
        makes the job unique (see ``@app.task(unique=...)``): while a job of its
        queue holds the key, nothing is stored and the handle is the holder's;
        ``unique_for=`` holds the key that many seconds instead of until the job
        finishes. ``countdown=`` seconds or ``eta=`` (an aware datetime or epoch
        seconds) delays the job (see :mod:`jobchain.delays`). (So a task taking
        an argument of one of these names gets it with ``task.s(job_id=...)``.)
        """
        names = ("job_id", "unique_key", "unique_for")
        options = {name: kwargs.pop(name) for name in names if name in kwargs}
        timing = {name: kwargs.pop(name) for name in ("countdown", "eta") if name in kwargs}
        target = Signature(task=self).set(**options) if options else self
        if timing:
            handle: JobHandle = self.app.submit_later(target, args, kwargs, **timing)
        else:
            handle = self.app.submit(target, *args, **kwargs)
        return handle

    @overload
    async def submit_async(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle: ...

    @overload
    async def submit_async(
        self,
        *args: Any,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> JobHandle: ...

    async def submit_async(self, *args: Any, **kwargs: Any) -> JobHandle:
        """:meth:`submit` for a coroutine (same options; see :mod:`jobchain.aio`): never blocks the loop.

        During an outage the submit is buffered as :meth:`submit`'s is; the
        handle says ``buffered`` and :meth:`JobHandle.wait_stored_async` waits for it.
        """
        names = ("job_id", "unique_key", "unique_for")
        options = {name: kwargs.pop(name) for name in names if name in kwargs}
        timing = {name: kwargs.pop(name) for name in ("countdown", "eta") if name in kwargs}
        target = Signature(task=self).set(**options) if options else self
        app = self.app
        delay = delay_of(timing.get("countdown"), timing.get("eta"), now=app.clock.now()) if timing else None
        handle: JobHandle = await app._submit_async(target, args, kwargs, None, delay)
        return handle

    def submit_many(self, calls: Iterable[Sequence[Any]]) -> list[JobHandle]:
        """Enqueue one job per item of ``calls`` (each a sequence of positional arguments)."""
        return self.app.submit_many(Signature(task=self, args=tuple(c)) for c in calls)

    def check_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidJobError` if the function cannot take these arguments."""
        if self._signature is None:
            try:
                self._signature = inspect.signature(self.fn)
            except (TypeError, ValueError):  # builtins without a signature
                return
            params = self._signature.parameters.values()
            if all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params):
                self._arity = len(params)  # plain parameters: a positional call fits by its length
        if not kwargs and len(args) == self._arity:
            return  # (Signature.bind costs ~15 us a call, a tenth of a submit)
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidJobError(f"task {self.name!r} cannot take these arguments: {exc}") from None

    def __rshift__(self, other: Any) -> Chain:
        return chain(self, other)

    def __rrshift__(self, other: Any) -> Chain:
        return chain(other, self)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"


def _entries(value: Iterable[FailedEntry]) -> tuple[FailedEntry, ...]:
    return tuple(value)


@frozen(kw_only=True, eq=False)
class FailedPage(Sequence[FailedEntry]):
    """One page of the failed queue: a sequence of entries that says whether more follow.

    ``more`` is True when entries beyond this page match; pass ``next_offset``
    as ``offset=`` to :meth:`FailedQueue.list` for the next page (None when
    there is none). Offsets count positions in the whole failed queue, oldest
    first, so a page filtered by task or queue still resumes where it stopped;
    entries re-driven or purged meanwhile shift the later ones (one may be
    skipped or repeated across pages). :meth:`FailedQueue.iter` walks them all.
    """

    entries: tuple[FailedEntry, ...] = field(converter=_entries)
    more: bool = False
    next_offset: int | None = None

    @overload
    def __getitem__(self, index: int) -> FailedEntry: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[FailedEntry]: ...

    def __getitem__(self, index: int | slice) -> FailedEntry | Sequence[FailedEntry]:
        return self.entries[index]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[FailedEntry]:
        return iter(self.entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FailedPage):
            return (self.entries, self.more, self.next_offset) == (
                other.entries,
                other.more,
                other.next_offset,
            )
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self.entries) == list(other)  # so ``app.failed.list() == []`` reads naturally
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compares equal to lists, which cannot be hashed


class FailedQueue:
    """The failed queue of an App: list (a page at a time), iterate, show, re-drive and purge.

    Every method raises :class:`~jobchain.errors.NotSupportedError` on a
    backend without the :class:`~jobchain.capabilities.FailedQueue` capability.
    """

    #: how many entries one backend call fetches while scanning
    PAGE = 500

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def _backend(self) -> FailedQueueCapability:
        return require(self._app.backend, FailedQueueCapability)

    def list(
        self, *, task: str | None = None, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> FailedPage:
        """A page of at most ``limit`` failed entries, oldest first, optionally one task's or queue's.

        The page says whether more entries match (``.more``) and where the next
        page starts (``.next_offset``, to pass as ``offset=``); it is a sequence,
        so ``app.failed.list()[0]`` and ``for entry in app.failed.list()`` work.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        out: builtins.list[FailedEntry] = []
        for position, entry in self._scan(offset, task, queue):
            if len(out) == limit:  # one match past the page: there is more, and it starts here
                return FailedPage(entries=out, more=True, next_offset=position)
            out.append(entry)
        return FailedPage(entries=out)

    def iter(
        self, *, task: str | None = None, queue: str | None = None, offset: int = 0
    ) -> Iterator[FailedEntry]:
        """Every failed entry (from ``offset`` on), oldest first, optionally one task's or queue's.

        Pages are fetched from the backend as the iteration gets to them.
        """
        return (entry for _, entry in self._scan(offset, task, queue))

    def __iter__(self) -> Iterator[FailedEntry]:
        return self.iter()

    def _scan(self, offset: int, task: str | None, queue: str | None) -> Iterator[tuple[int, FailedEntry]]:
        """(position in the failed queue, entry) of the matching entries from ``offset`` on."""
        page = self.PAGE
        while True:
            batch = self._backend.failed(limit=page, offset=offset)
            for position, entry in enumerate(batch, offset):
                if (task is None or entry.job.task == task) and (queue is None or entry.job.queue == queue):
                    yield position, entry
            if len(batch) < page:
                return
            offset += page

    def show(self, job_id: str) -> FailedEntry | None:
        return self._backend.get_failed(job_id)

    def redrive(
        self, job_ids: Sequence[str] = (), *, task: str | None = None, all: bool = False
    ) -> builtins.list[str]:
        """Re-drive jobs by id, every failed job of ``task``, or ``all``; returns the ids moved.

        Ids given that are not in the failed queue (a typo, a job re-driven or
        purged already, an unreadable entry) raise :class:`NotInFailedQueueError`
        naming them, and nothing moves. ``task=``/``all=`` re-drive what they find;
        an entry that another client re-drives or purges meanwhile is skipped.
        """
        if isinstance(job_ids, str):
            job_ids = [job_ids]
        ids = list(dict.fromkeys(job_ids))
        if ids:
            moved = self._backend.redrive(ids)
            missing = [i for i in ids if i not in set(moved)]
            if missing:  # a backend that does not check first, a purge racing the move, an unreadable entry
                raise NotInFailedQueueError(missing, moved)
        else:
            moved = []
        if all or task is not None:
            found = [e.job.id for e in self.iter(task=None if all else task) if e.job.id not in set(moved)]
            if found:
                try:
                    moved += self._backend.redrive(found)
                except NotInFailedQueueError as exc:  # re-driven or purged since the scan: nothing moved
                    gone = set(exc.job_ids)
                    rest = [i for i in found if i not in gone]
                    moved += self._backend.redrive(rest) if rest else []
        return moved

    def purge(self, job_ids: Sequence[str] | None = None) -> int:
        """Delete entries (all of them when ``job_ids`` is None)."""
        return self._backend.purge_failed(None if job_ids is None else list(job_ids))

    # --- the same, for coroutines (the App's thread pool runs them; see jobchain.aio) ---

    async def list_async(
        self, *, task: str | None = None, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> FailedPage:
        """:meth:`list`, awaited."""
        return await self._app.aio.run(self.list, task=task, queue=queue, limit=limit, offset=offset)

    async def show_async(self, job_id: str) -> FailedEntry | None:
        """:meth:`show`, awaited."""
        return await self._app.aio.run(self.show, job_id)

    async def redrive_async(
        self, job_ids: Sequence[str] = (), *, task: str | None = None, all: bool = False
    ) -> builtins.list[str]:
        """:meth:`redrive`, awaited."""
        return await self._app.aio.run(self.redrive, job_ids, task=task, all=all)

    async def purge_async(self, job_ids: Sequence[str] | None = None) -> int:
        """:meth:`purge`, awaited."""
        return await self._app.aio.run(self.purge, job_ids)

    def __len__(self) -> int:
        queue = self._backend  # NotSupportedError first
        if isinstance(queue, Stats):
            return sum(s.failed for s in queue.stats())
        return sum(1 for _ in self.iter())


class App:
    """Tasks and the backend they run on.

    ``backend`` is a URL (``memory://``, ``redis-streams://host:6379/0`` …) or a
    :class:`Backend`; when None it is read from ``JOBCHAIN_BACKEND`` and defaults
    to ``memory://``. ``retry`` is the policy of tasks that declare none.

    ``max_payload`` bounds a job's arguments and a task's result (UTF-8 bytes
    of their JSON); a result over it fails its job as
    :class:`~jobchain.errors.ResultTooLarge`. ``max_error_bytes`` caps the
    message and the traceback of a recorded error, each, in UTF-8 bytes.

    ``buffer`` bounds the submit buffer: while the backend cannot be reached,
    ``submit`` keeps accepting work into it (handles say ``buffered``) and a
    background thread stores it, in submit order, when the backend returns
    (see :mod:`jobchain.buffer`). ``buffer=None`` turns it off, so ``submit``
    raises :class:`~jobchain.BackendUnavailableError` instead. Call
    :meth:`close` before exiting, so that what is buffered is stored or reported.

    ``signing_keys`` turns on payload signing (see :mod:`jobchain.signing` and
    ``docs/security.md``): jobs are signed with the first key and a worker runs
    only jobs signed with one of them; when None the keys are read from
    ``JOBCHAIN_SIGNING_KEYS`` (comma-separated), and ``[]`` turns signing off.
    ``require_signatures=False`` lets workers run unsigned jobs too (while
    signing is being rolled out); signed ones are still checked.

    Every client call has an ``*_async`` twin for asyncio code
    (:meth:`submit_async`, :meth:`JobHandle.wait_async` …): natively on a
    backend with the :class:`~jobchain.capabilities.AsyncClient` capability,
    otherwise in a pool of at most ``async_threads`` threads (see
    :mod:`jobchain.aio`). Close with ``await app.close_async()`` from the loop.

    ``eager=True`` is test mode (on the memory backend): each submit runs the
    jobs it stored, and what they lead to (retries without their delay, the
    next steps of chains, jobs they submit), in the calling thread before it
    returns, through the worker's own code; see :meth:`eager`.
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        retry: Retry | None = None,
        aging_interval: float = DEFAULT_AGING_INTERVAL,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_error_bytes: int = DEFAULT_MAX_ERROR_BYTES,
        default_queue: str = "default",
        clock: Clock | None = None,
        plugins: Plugins | None = None,
        buffer: SubmitBuffer | None = DEFAULT_BUFFER,
        signing_keys: Sequence[str | bytes] | None = None,
        require_signatures: bool = True,
        eager: bool = False,
        async_threads: int = DEFAULT_THREADS,
    ) -> None:
        if buffer is not None and not isinstance(buffer, SubmitBuffer):
            raise ConfigurationError(f"buffer must be a jobchain.SubmitBuffer or None, got {buffer!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigurationError(f"retry must be a jobchain.Retry, got {retry!r}")
        _check_number("aging_interval", aging_interval, allow_none=False)
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 1:
            raise ConfigurationError(f"max_payload must be a positive number of bytes, got {max_payload!r}")
        if (
            isinstance(max_error_bytes, bool)
            or not isinstance(max_error_bytes, int)
            or max_error_bytes < MIN_MAX_ERROR_BYTES
        ):
            raise ConfigurationError(
                f"max_error_bytes must be a number of bytes >= {MIN_MAX_ERROR_BYTES}, got {max_error_bytes!r}"
            )
        #: signs submitted jobs and checks them in workers; None when no keys are configured
        self.signer: Signer | None = signer_from_config(signing_keys, required=require_signatures)
        self.retry = retry or Retry.never()
        self.aging_interval = float(aging_interval)
        self.max_payload = max_payload
        self.max_error_bytes = max_error_bytes
        self.default_queue = default_queue
        self.clock: Clock = clock or SystemClock()
        #: builds what is submitted into jobs and chain records (checked, signed)
        self.builder = Builder(max_payload=max_payload, signer=self.signer, default_queue=default_queue)
        self._plugins = plugins
        self._buffer_config = buffer
        self._buffered: BufferedSubmits | None = None
        self._backend: Backend | None = None
        self._backend_url = None if isinstance(backend, Backend) else backend
        self._backend_lock = threading.Lock()
        #: test mode: runs what a submit stored before the submit returns (see :meth:`eager`)
        self._eager: EagerRunner | None = EagerRunner(self) if eager else None
        if isinstance(backend, Backend):
            self._attach(backend)
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: the schedules declared with :meth:`periodic` and :meth:`schedule`, by name
        self.schedules: dict[str, Schedule] = {}
        #: queue -> limits on its jobs (:meth:`limit_queue`)
        self.queue_limits: dict[str, Limits] = {}
        #: how the ``*_async`` methods reach the backend: natively, or in a pool of ``async_threads``
        self.aio = AsyncBridge(
            lambda: self.backend, opened=lambda: self._backend is not None, threads=async_threads
        )
        self.failed = FailedQueue(self)
        #: browse the backend's jobs: ``list`` a page by queue and state, ``counts``, ``get`` one
        self.jobs = Jobs(lambda: self.backend, aio=self.aio)

    # --- configuration ---------------------------------------------------------------

    @property
    def plugins(self) -> Plugins:
        if self._plugins is None:
            self._plugins = default_plugins()
        return self._plugins

    @property
    def backend_url(self) -> str:
        if self._backend is not None:
            return self._backend.url
        return self._backend_url or os.environ.get("JOBCHAIN_BACKEND") or "memory://"

    @property
    def backend(self) -> Backend:
        """The backend, opened on first use."""
        backend = self._backend
        if backend is None:
            with self._backend_lock:
                if self._backend is None:
                    self._attach(
                        self.plugins.open_backend(
                            self.backend_url, clock=self.clock, aging_interval=self.aging_interval
                        )
                    )
                backend = self._backend
                assert backend is not None
        return backend

    @property
    def buffer(self) -> BufferedSubmits | None:
        """The submit buffer around the backend (None when turned off): ``len(app.buffer)`` jobs wait in it.

        Opens the backend if it is not open yet.
        """
        if self._buffer_config is None:
            return None
        self.backend  # noqa: B018 - opened, so that the buffer wraps it
        return self._buffered

    def _attach(self, backend: Backend) -> None:
        """Make ``backend`` the App's, with the submit buffer around it (which keeps what it holds).

        The buffer is set first: a submit that sees the backend also sees it.
        """
        if self._buffer_config is not None:
            if self._buffered is None:
                self._buffered = BufferedSubmits(backend, self._buffer_config)
            else:
                self._buffered.backend = backend
        self._backend = backend

    def use_backend(self, backend: str | Backend) -> None:
        """Switch to another backend (before anything was submitted): the CLI's ``--backend``."""
        with self._backend_lock:
            if self._backend is not None and self._backend is not backend:
                self._backend.close()
            self._backend = None
            self._backend_url = None if isinstance(backend, Backend) else backend
            if isinstance(backend, Backend):
                self._attach(backend)

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retry: Retry | None = None,
        timeout: float | None = None,
        expires: float | None = None,
        unique: UniqueBy | None = None,
        unique_for: float | None = None,
        rate_limit: str | None = None,
        rate_key: KeyBy | str | None = None,
        concurrency: int | None = None,
        concurrency_key: KeyBy | str | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retry: Retry | None = None,
        timeout: float | None = None,
        expires: float | None = None,
        unique: UniqueBy | None = None,
        unique_for: float | None = None,
        rate_limit: str | None = None,
        rate_key: KeyBy | str | None = None,
        concurrency: int | None = None,
        concurrency_key: KeyBy | str | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Declare a task: ``@app.task`` or ``@app.task(queue="db", retry=Retry(attempts=5))``.

        ``timeout`` bounds one run (seconds); ``expires`` drops a job not started
        within that many seconds of being enqueued (it goes to the failed queue).
        ``unique`` makes each submit unique by a key derived from its arguments
        (True: all of them; a tuple of argument names; or a function
        ``(*args, **kwargs) -> str``), held until the job finishes or for
        ``unique_for`` seconds (see :mod:`jobchain.uniqueness`). ``rate_limit``
        (``"10/s;1000/h"``) and ``concurrency`` (at most N running) are limits
        every worker applies, per value of ``rate_key``/``concurrency_key``
        (argument names or a function ``(args, kwargs) -> str``) when given
        (see :mod:`jobchain.limits`).
        """
        limits = Limits.build(
            rate_limit=rate_limit, rate_key=rate_key, concurrency=concurrency, concurrency_key=concurrency_key
        )
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigurationError(f"retry must be a jobchain.Retry, got {retry!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigurationError(f"priority must be an int, got {priority!r}")
        _check_number("timeout", timeout)
        _check_number("expires", expires)

        def declare(function: Callable[P, R]) -> Task[P, R]:
            if not callable(function):
                raise ConfigurationError(f"@app.task needs a function, got {function!r}")
            task_name = name or getattr(function, "__name__", None)
            if not task_name or task_name == "<lambda>":
                raise ConfigurationError("give the task a name: @app.task(name=...)")
            if _is_async_generator(function):
                raise ConfigurationError(
                    f"task {task_name!r} is an async generator: a task returns one value; "
                    "declare it `async def` and return a list"
                )
            if task_name in self.tasks:
                raise ConfigurationError(
                    f"task name {task_name!r} is declared twice; give one of them @app.task(name=...)"
                )
            declared = Task(
                self,
                function,
                name=task_name,
                queue=queue or self.default_queue,
                priority=priority,
                retry=retry,
                timeout=timeout,
                expires=expires,
                unique=unique,
                unique_for=unique_for,
                limits=limits,
            )
            self.tasks[task_name] = declared
            return declared

        return declare(fn) if fn is not None else declare

    def limit_queue(
        self,
        queue: str,
        *,
        rate_limit: str | None = None,
        rate_key: KeyBy | str | None = None,
        concurrency: int | None = None,
        concurrency_key: KeyBy | str | None = None,
    ) -> None:
        """Limits on every job of ``queue``, applied by the workers of this App (see :mod:`jobchain.limits`).

        Declare them before the workers start; called again, it replaces them (no limit: removes them).
        """
        limits = Limits.build(
            rate_limit=rate_limit, rate_key=rate_key, concurrency=concurrency, concurrency_key=concurrency_key
        )
        if limits is None:
            self.queue_limits.pop(queue, None)
        else:
            self.queue_limits[queue] = limits

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(name, list(self.tasks)) from None

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue a declared task uses (the default one included)."""
        return tuple(sorted({self.default_queue, *(t.queue for t in self.tasks.values())}))

    # --- schedules -------------------------------------------------------------------

    def schedule(self, name: str, target: Any, **when: Any) -> Schedule:
        """Submit ``target`` (a task, signature, chain or group) at every slot: ``cron=`` or ``every=``.

        Options (see :mod:`jobchain.schedules`): ``tz=`` (a cron's time zone,
        default UTC), ``args=``/``kwargs=`` (passed to every run),
        ``missed="latest"|"skip"|"all"``, ``max_missed=``, ``grace=``. Run the
        schedules with ``jobchain scheduler`` or ``jobchain worker --schedules``.
        """
        if name in self.schedules:
            raise ConfigurationError(f"schedule {name!r} is declared twice")
        resolved = self._resolve(target)
        declared = Schedule(name=name, target=resolved, is_chain=isinstance(resolved, Chain | Group), **when)
        self.schedules[name] = declared
        return declared

    def periodic(self, *, name: str | None = None, **when: Any) -> Callable[[Task[P, R]], Task[P, R]]:
        """Decorate a task (below ``@app.task``) to schedule it: ``@app.periodic(cron="0 9 * * *")``.

        The schedule is named after the task unless ``name=`` is given; the
        options are :meth:`schedule`'s.
        """

        def declare(task: Task[P, R]) -> Task[P, R]:
            if not isinstance(task, Task):
                raise ConfigurationError("@app.periodic goes above @app.task: it schedules a declared task")
            self.schedule(name or task.name, task, **when)
            return task

        return declare

    def get_schedule(self, name: str) -> Schedule:
        """The schedule ``name``; :class:`ConfigurationError` listing the declared ones when unknown."""
        try:
            return self.schedules[name]
        except KeyError:
            known = ", ".join(sorted(self.schedules)) or "none"
            raise ConfigurationError(f"no schedule {name!r}; declared: {known}") from None

    # --- submission ------------------------------------------------------------------

    def _resolve(self, target: Any) -> Signature | Chain | Group:
        if isinstance(target, str):
            return Signature(task=self.get_task(target))
        if isinstance(target, Task):
            if target.app is not self:
                raise InvalidJobError(f"task {target.name!r} belongs to another App")
            return Signature(task=target)
        if isinstance(target, Signature | Chain | Group):
            return target
        raise InvalidJobError(
            f"cannot submit {target!r} ({type(target).__name__}); expected a task, its name, "
            "a signature, a chain or a group"
        )

    def submit(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        """Enqueue a task (by object or name), a signature, a chain or a group.

        Returns a :class:`JobHandle` for a task or signature, a :class:`ChainHandle`
        for a chain or group. While the backend cannot be reached the submit is
        buffered (the handle says ``buffered``; see :meth:`JobHandle.wait_stored`);
        :class:`~jobchain.errors.SubmitBufferFullError` when the buffer is full.
        """
        return self._submit(target, args, kwargs, None)

    def submit_as(self, submit_id: str, target: Any, *args: Any, **kwargs: Any) -> Any:
        """:meth:`submit` under an explicit id: the job's (task, signature) or the chain's (chain, group).

        The id must pass :func:`jobchain.submission.check_id`. A chain's members
        get job ids derived from it (``CHAIN.STEP.MEMBER``). When the id exists
        already, nothing is stored and the handle is the existing job's or chain's.
        """
        return self._submit(target, args, kwargs, submit_id)

    def submit_later(
        self,
        target: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        submit_id: str | None = None,
    ) -> Any:
        """:meth:`submit` (or :meth:`submit_as` with ``submit_id``) delayed by ``countdown`` or until ``eta``.

        ``countdown``: seconds from now (>= 0); ``eta``: an aware datetime or
        epoch seconds (a past one runs now); not both (see :mod:`jobchain.delays`).
        A chain's or group's first step waits; the later steps follow it as usual.
        """
        delay = delay_of(countdown, eta, now=self.clock.now())
        return self._submit(target, tuple(args), kwargs or {}, submit_id, delay)

    def _build(
        self,
        target: Any,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        submit_id: str | None,
        delay: float | None,
    ) -> _Built:
        """What a submit stores: its jobs and chain record, checked and signed (no backend call)."""
        resolved = self._resolve(target)
        now = self.clock.now()
        if isinstance(resolved, Signature):
            job = self.builder.job(resolved, args, kwargs, now=now, job_id=submit_id, delay=delay)
            key, hold = unique_of(resolved, job)
            fresh = submit_id is None and resolved.job_id is None
            return _Built(JobHandle, job.id, (job,), (), fresh, None if key is None else (key, hold))
        self._check_owned(resolved)
        record, jobs = self.builder.chain(resolved, args, kwargs, now=now, chain_id=submit_id)
        if delay:
            jobs = [evolve(job, not_before=now + delay) for job in jobs]
        return _Built(ChainHandle, record.id, tuple(jobs), (record,), submit_id is None, None)

    def _submit(
        self,
        target: Any,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        submit_id: str | None,
        delay: float | None = None,
    ) -> JobHandle | ChainHandle:
        built = self._build(target, args, kwargs, submit_id, delay)
        if built.unique is not None:
            return JobHandle(self, self._store_unique(built.jobs[0], *built.unique))
        return built.kind(self, built.id, self._store(built.jobs, built.chains, built.fresh))

    async def _submit_async(
        self,
        target: Any,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        submit_id: str | None,
        delay: float | None = None,
    ) -> Any:
        if self._eager is not None:  # test mode runs the jobs in the submitting thread: the pool's
            return await self.aio.run(self._submit, target, args, kwargs, submit_id, delay)
        built = self._build(target, args, kwargs, submit_id, delay)
        if built.unique is not None:  # only the backend knows the holder: never buffered, as in submit
            holder = await self.aio.run(self._store_unique, built.jobs[0], *built.unique)
            return JobHandle(self, holder)
        return built.kind(self, built.id, await self._store_async(built.jobs, built.chains, built.fresh))

    async def _store_async(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], fresh: bool
    ) -> PendingSubmit | None:
        """:meth:`_store_only` for a coroutine: through the submit buffer, natively or in the pool."""
        await self.aio.open()
        aio = self.aio

        async def store() -> None:
            await aio.enqueue(jobs, chains, fresh=fresh)

        buffered = self._buffered
        if buffered is not None:
            return await buffered.store_async(jobs, chains, store)
        await store()
        return None

    async def submit_async(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        """:meth:`submit` for a coroutine: a :class:`JobHandle` or :class:`ChainHandle`; the loop never waits.

        Buffered during an outage as :meth:`submit` is (see
        :meth:`JobHandle.wait_stored_async`). Safe from many coroutines at once.
        """
        return await self._submit_async(target, args, kwargs, None)

    async def submit_as_async(self, submit_id: str, target: Any, *args: Any, **kwargs: Any) -> Any:
        """:meth:`submit_as` for a coroutine."""
        return await self._submit_async(target, args, kwargs, submit_id)

    async def submit_later_async(
        self,
        target: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        submit_id: str | None = None,
    ) -> Any:
        """:meth:`submit_later` for a coroutine."""
        delay = delay_of(countdown, eta, now=self.clock.now())
        return await self._submit_async(target, tuple(args), kwargs or {}, submit_id, delay)

    def _store(self, jobs: Sequence[Job], chains: Sequence[ChainRecord], fresh: bool) -> PendingSubmit | None:
        """Store a submit's jobs and chains (in test mode, then run them), or buffer them.

        ``fresh``: every id was generated just now (``enqueue_new``); otherwise some
        may exist, and ``enqueue`` skips those.
        """
        pending = self._store_only(jobs, chains, fresh)
        if self._eager is not None:
            self._eager.run()
        return pending

    def _store_unique(self, job: Job, key: str, hold: float | None) -> str:
        """Store a unique job (never buffered: only the backend knows the holder); the id it stands for."""
        backend = require(self.backend, Uniqueness)
        if hold is None:
            job = evolve(job, unique=key)
        [holder] = backend.enqueue_unique([job], [key], hold=hold)
        if self._eager is not None:
            self._eager.run()
        return holder

    def eager(self) -> AbstractContextManager[App]:
        """Test mode for a block: each submit runs its jobs to completion before it returns.

        ``with app.eager(): handle = add.submit(1, 2)`` leaves ``handle`` finished.
        Same as ``App(..., eager=True)`` for the block; see ``docs/guide.md`` (test mode).
        """
        return _eager_block(self)

    def _store_only(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], fresh: bool
    ) -> PendingSubmit | None:
        backend = self.backend
        buffered = self._buffered
        if buffered is not None:
            return buffered.enqueue_new(jobs, chains) if fresh else buffered.enqueue(jobs, chains)
        if fresh:
            backend.enqueue_new(jobs, chains)
        else:
            backend.enqueue(jobs, chains)
        return None

    def submit_many(self, targets: Iterable[Any]) -> list[Any]:
        """Enqueue many tasks or chains in one backend call; returns their handles in order."""
        jobs, records, made, fresh = self._build_many(targets)
        pending = self._store(jobs, records, fresh) if jobs else None
        return [kind(self, made_id, pending) for kind, made_id in made]

    async def submit_many_async(self, targets: Iterable[Any]) -> list[Any]:
        """:meth:`submit_many` for a coroutine: one backend call, the loop never blocked."""
        if self._eager is not None:
            return await self.aio.run(self.submit_many, list(targets))
        jobs, records, made, fresh = self._build_many(targets)
        pending = await self._store_async(jobs, records, fresh) if jobs else None
        return [kind(self, made_id, pending) for kind, made_id in made]

    def _build_many(
        self, targets: Iterable[Any]
    ) -> tuple[list[Job], list[ChainRecord], list[tuple[type[JobHandle] | type[ChainHandle], str]], bool]:
        """The jobs and records of many submits, the handles to make, and whether every id is fresh."""
        now = self.clock.now()
        jobs: list[Job] = []
        records: list[ChainRecord] = []
        made: list[tuple[type[JobHandle] | type[ChainHandle], str]] = []
        fresh = True
        for target in targets:
            resolved = self._resolve(target)
            if isinstance(resolved, Signature):
                job = self.builder.job(resolved, now=now)
                if unique_of(resolved, job)[0] is not None:
                    raise InvalidJobError(
                        f"task {job.task!r} is submitted with a unique key: "
                        "submit it alone, not in submit_many"
                    )
                jobs.append(job)
                made.append((JobHandle, job.id))
                fresh = fresh and resolved.job_id is None
                continue
            self._check_owned(resolved)
            record, first = self.builder.chain(resolved, now=now)
            records.append(record)
            jobs.extend(first)
            made.append((ChainHandle, record.id))
        return jobs, records, made, fresh

    def _check_owned(self, spec: Chain | Group) -> None:
        for item in spec.steps if isinstance(spec, Chain) else (spec,):
            for sig in item.members if isinstance(item, Group) else (item,):
                if sig.task.app is not self:
                    raise InvalidJobError(f"task {sig.task.name!r} belongs to another App")

    # --- lookups ---------------------------------------------------------------------

    def job(self, job_id: str) -> JobHandle:
        """A handle for a job submitted earlier."""
        return JobHandle(self, job_id)

    def chain(self, chain_id: str) -> ChainHandle:
        """A handle for a chain or group submitted earlier."""
        return ChainHandle(self, chain_id)

    def stats(self) -> list[QueueStats]:
        """Counts per queue; :class:`~jobchain.errors.NotSupportedError` without the ``Stats`` capability."""
        return require(self.backend, Stats).stats()

    async def stats_async(self) -> list[QueueStats]:
        """:meth:`stats`, awaited (the App's thread pool runs it)."""
        return await self.aio.run(self.stats)

    async def cancel_async(self, job_ids: str | Iterable[str]) -> CancelReport:
        """:meth:`cancel`, awaited (the App's thread pool runs it)."""
        ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        return await self.aio.run(self.cancel, ids)

    def workers(self) -> list[WorkerInfo]:
        """Live workers; :class:`~jobchain.errors.NotSupportedError` without a ``WorkerRegistry``."""
        return require(self.backend, WorkerRegistry).workers()

    def stop_worker(self, name: str) -> bool:
        """Ask a live worker to stop gracefully; False if no worker has that name."""
        return require(self.backend, WorkerRegistry).request_stop(name)

    def pause(self, *queues: str) -> None:
        """Pause queues: submits are accepted, no worker reserves from them (within a second).

        Running jobs finish. :class:`~jobchain.errors.NotSupportedError` without ``Pause``.
        """
        require(self.backend, Pause).pause(queues)

    def resume(self, *queues: str) -> None:
        """Serve paused queues again (resuming a queue that is not paused does nothing)."""
        require(self.backend, Pause).resume(queues)

    def paused(self) -> list[str]:
        """The queues paused now."""
        return require(self.backend, Pause).paused()

    def cancel(self, job_ids: str | Iterable[str]) -> CancelReport:
        """Cancel jobs by id; the report says which were cancelled, asked to stop, finished or unknown.

        A ready or delayed job is removed and recorded ``cancelled`` (its chain
        ends); a running one is asked to stop (see :func:`jobchain.current_job`).
        :class:`~jobchain.errors.NotSupportedError` without ``Cancel``.
        """
        ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        return require(self.backend, Cancel).cancel(ids)

    def purge(self, queue: str) -> int:
        """Cancel every ready and delayed job of ``queue``; return how many (running jobs are left alone)."""
        return require(self.backend, Cancel).purge(queue)

    def runtime(self) -> Runtime:
        """What a worker of this App runs on: its tasks, backend (opened now), events, clock, settings."""
        return Runtime(
            tasks=self.tasks,
            backend=self.backend,
            events=Events(self.plugins),
            clock=self.clock,
            queues=self.queues,
            max_payload=self.max_payload,
            max_error_bytes=self.max_error_bytes,
            signer=self.signer,
            queue_limits=self.queue_limits,
        )

    def worker(self, **options: Any) -> Worker:
        """A :class:`jobchain.Worker` for this App (see its options)."""
        return Worker(self.runtime(), **options)

    def close(self, timeout: float = 10.0) -> None:
        """Store what the submit buffer holds (waiting up to ``timeout`` seconds), then close the backend.

        Raises :class:`~jobchain.errors.SubmitsNotStoredError`, naming the job
        ids, if buffered submits could not be stored in time; the backend is
        closed all the same.
        """
        try:
            if self._buffered is not None:
                self._buffered.close(timeout)
        finally:
            self._close_backend()
            self.aio.shutdown()

    def _close_backend(self) -> None:
        with self._backend_lock:
            if self._backend is not None:
                self._backend.close()

    async def close_async(self, timeout: float = 10.0) -> None:
        """:meth:`close` from a coroutine: also closes the connections the running loop's calls opened.

        The waits run in the App's thread pool; the loop is never blocked.
        """
        try:
            if self._buffered is not None:
                await self.aio.run(self._buffered.close, timeout)
        finally:
            try:
                await self.aio.close_loop(self._backend)
            finally:
                await self.aio.run(self._close_backend)
                self.aio.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"<App backend={self.backend_url!r} tasks={len(self.tasks)}>"


@frozen
class _Built:
    """One submit made ready to store: the handle's kind and id, the jobs and chain records, how to store."""

    kind: type[JobHandle] | type[ChainHandle]
    id: str
    jobs: tuple[Job, ...]
    chains: tuple[ChainRecord, ...]
    #: every id was made just now (``enqueue_new``); otherwise some may exist (``enqueue``)
    fresh: bool
    #: (key, hold) of a unique job, stored through the Uniqueness capability
    unique: tuple[str, float | None] | None


@contextlib.contextmanager
def _eager_block(app: App) -> Iterator[App]:
    previous = app._eager
    runner = app._eager = previous or EagerRunner(app)
    try:
        runner.check()
        runner.run()  # what was submitted before the block runs first
        yield app
    finally:
        app._eager = previous
