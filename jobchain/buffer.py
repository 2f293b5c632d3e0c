"""The submit buffer: what ``submit`` accepts while the backend cannot be reached.

When storing a submit raises :class:`~jobchain.BackendUnavailableError` (the
backend is down, restarting or cut off; never for a job the backend refused),
the :class:`BufferedSubmits` wrapped around it (what an App submits through)
holds the submit instead, and the handle says ``buffered``. A background thread
stores what the queue holds once the backend answers again. The rules:

* **Submit order.** Submits are stored in the order they were accepted. While
  anything is buffered, new submits queue behind it even if the backend is
  back, so a job submitted later is never stored before one submitted earlier.
* **Idempotent.** The thread stores through :meth:`Backend.enqueue`, which
  skips ids that exist: a flush retried after an ambiguous failure (the
  connection dropped after the write, before the reply) stores nothing twice.
  That also covers the submit that failed in the first place: it may have
  been written before its reply was lost.
* **Bounded.** The queue holds at most ``max_jobs`` jobs and ``max_bytes`` bytes
  (their JSON form). A submit that does not fit raises
  :class:`~jobchain.errors.SubmitBufferFullError` and is not kept: the caller
  knows at once, nothing is dropped behind its back.
* **Nothing silent.** :meth:`BufferedSubmits.close` (``App.close(timeout)``) stores
  what is left within its timeout or raises
  :class:`~jobchain.errors.SubmitsNotStoredError` naming the job ids (and
  carrying the jobs). At interpreter exit a queue that still holds submits is
  given ``exit_timeout`` seconds, then what is left is logged with its ids.
* **Retries.** Capped exponential backoff with jitter (``retry_base`` doubling up
  to ``retry_cap``), so a long outage is polled about every ``retry_cap``
  seconds and the queue drains within about that long of the backend's return.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import structlog
from attrs import field, frozen

from jobchain.errors import (
    BackendUnavailableError,
    ConfigurationError,
    InvalidJobError,
    SubmitBufferFullError,
    SubmitsNotStoredError,
)
from jobchain.model import ChainRecord, Job, JobState
from jobchain.outage import Backoff

if TYPE_CHECKING:
    from jobchain.backend import Backend

__all__ = ["LOGGED_IDS", "NOT_STORED", "BufferedSubmits", "PendingSubmit", "SubmitBuffer"]

logger = structlog.get_logger("jobchain.buffer")

#: what a handle says when its buffered submit was given up (``App.close`` timed out, or refused)
NOT_STORED = "not_stored"
#: a SubmitsNotStoredError message names at most this many ids (all are in its attributes)
_SHOWN_IDS = 20
#: the ``buffered_submits_not_stored`` log line of App.close lists at most this many job ids
LOGGED_IDS = 1000


def _positive_int(_inst: object, attribute: Any, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"SubmitBuffer.{attribute.name} must be an int >= 1, got {value!r}")


def _seconds(_inst: object, attribute: Any, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(
            f"SubmitBuffer.{attribute.name} must be a number of seconds >= 0, got {value!r}"
        )


@frozen(kw_only=True)
class SubmitBuffer:
    """Limits and timing of the submit buffer: ``App(buffer=SubmitBuffer(max_jobs=50_000))``.

    ``max_jobs`` and ``max_bytes`` bound what is held (bytes count the jobs' and
    chain records' JSON form). ``retry_base``/``retry_cap`` are the first and
    longest waits between flush attempts (seconds, jittered). ``flush_batch``
    is how many jobs one flush stores in one backend call. ``exit_timeout`` is
    how long interpreter exit waits for a non-empty buffer. ``App(buffer=None)``
    turns buffering off: ``submit`` then raises ``BackendUnavailableError``.
    """

    max_jobs: int = field(default=10_000, validator=_positive_int)
    max_bytes: int = field(default=16 * 1024 * 1024, validator=_positive_int)
    retry_base: float = field(default=0.05, validator=_seconds)
    retry_cap: float = field(default=2.0, validator=_seconds)
    flush_batch: int = field(default=500, validator=_positive_int)
    exit_timeout: float = field(default=5.0, validator=_seconds)

    def __attrs_post_init__(self) -> None:
        if self.retry_base <= 0 or self.retry_cap < self.retry_base:
            raise ConfigurationError(
                f"SubmitBuffer needs 0 < retry_base <= retry_cap, got {self.retry_base!r}, {self.retry_cap!r}"
            )


#: the limits ``App`` uses when given none
DEFAULT_BUFFER = SubmitBuffer()


def _size(jobs: Sequence[Job], chains: Sequence[ChainRecord]) -> int:
    """The bytes a submit holds in the buffer: its jobs and chain records as compact JSON."""
    compact = (",", ":")
    total = sum(len(json.dumps(job.to_wire(), separators=compact)) for job in jobs)
    return total + sum(len(json.dumps(attrs.asdict(c), separators=compact, default=str)) for c in chains)


class PendingSubmit:
    """One submit call held in the buffer (its jobs and chain records) until it is stored."""

    def __init__(self, jobs: Sequence[Job], chains: Sequence[ChainRecord], size: int) -> None:
        self.jobs = tuple(jobs)
        self.chains = tuple(chains)
        self.size = size
        self.stored = False
        #: why it was not stored, once given up (a SubmitsNotStoredError, or the backend's refusal)
        self.error: BaseException | None = None
        self._done = threading.Event()
        #: wake-ups of coroutines awaiting :meth:`wait_async` (each hands the news to its own loop)
        self._wakers: list[Callable[[], None]] = []
        self._wakers_lock = threading.Lock()

    @property
    def state(self) -> str:
        """``buffered`` while held, ``stored`` once the backend has it, ``not_stored`` if given up."""
        if self.stored:
            return "stored"
        return JobState.BUFFERED.value if self.error is None else NOT_STORED

    def wait(self, timeout: float | None) -> bool:
        """Block until stored or given up (True), or ``timeout`` seconds pass (False)."""
        return self._done.wait(timeout)

    async def wait_async(self, timeout: float | None) -> bool:
        """:meth:`wait` for a coroutine: the flusher thread wakes it through its loop; no thread waits."""
        if self._done.is_set():
            return True
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile: nobody waits
                loop.call_soon_threadsafe(settle)

        with self._wakers_lock:
            self._wakers.append(wake)
        try:
            if self._done.is_set():  # finished between the first look and the waker's registration
                return True
            try:
                await asyncio.wait_for(woken, timeout)
            except TimeoutError:
                return self._done.is_set()
            return True
        finally:
            with self._wakers_lock:
                self._wakers.remove(wake)

    def _finish(self, error: BaseException | None = None) -> None:
        if error is None:
            self.stored = True
            self.error = None
        elif not self.stored:
            self.error = error
        self._done.set()
        with self._wakers_lock:
            wakers = list(self._wakers)
        for wake in wakers:
            wake()


class BufferedSubmits:
    """A backend's submits, held in a buffer while it cannot be reached, and the thread that stores them.

    Wraps a :class:`~jobchain.backend.Backend` with the same two ways to store
    (:meth:`enqueue_new` for fresh ids, :meth:`enqueue` for ids that may exist),
    each returning None once stored, or the :class:`PendingSubmit` it holds.
    :class:`~jobchain.App` keeps one (``app.buffer``) and submits through it;
    ``backend`` may be replaced (``App.use_backend``), and what is held goes
    to the new one.
    """

    def __init__(self, backend: Backend, config: SubmitBuffer = DEFAULT_BUFFER) -> None:
        self.backend = backend
        self.config = config
        self._cond = threading.Condition()
        self._queue: deque[PendingSubmit] = deque()
        self._jobs = 0
        self._bytes = 0
        self._thread: threading.Thread | None = None
        self._nudged = False

    @property
    def url(self) -> str:
        """The backend's public URL (for messages)."""
        return self.backend.url

    # --- storing -----------------------------------------------------------------------

    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> PendingSubmit | None:
        """Store a submit of fresh ids now (None), or buffer it (its :class:`PendingSubmit`).

        It is buffered when the backend cannot be reached, or when earlier
        submits are buffered still (it goes behind them). Raises
        :class:`SubmitBufferFullError` when it must be buffered but does not fit.
        """
        return self._store(jobs, chains, fresh=True)

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> PendingSubmit | None:
        """As :meth:`enqueue_new`, for ids that may exist (explicit ones): the backend skips those."""
        return self._store(jobs, chains, fresh=False)

    def _store(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], *, fresh: bool
    ) -> PendingSubmit | None:
        with self._cond:
            if self._queue:
                return self._hold(jobs, chains, None)
        try:
            if fresh:
                self.backend.enqueue_new(jobs, chains)
            else:
                self.backend.enqueue(jobs, chains)
        except BackendUnavailableError as exc:
            with self._cond:
                return self._hold(jobs, chains, exc)
        return None

    async def store_async(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], store: Callable[[], Awaitable[None]]
    ) -> PendingSubmit | None:
        """:meth:`enqueue_new` / :meth:`enqueue` for a coroutine: ``store()`` awaits the backend's write.

        The same rules: behind what is buffered already; held when ``store()``
        raises :class:`BackendUnavailableError`; the flusher thread stores it
        later (through the synchronous backend, in order with every other submit).
        """
        with self._cond:
            if self._queue:
                return self._hold(jobs, chains, None)
        try:
            await store()
        except BackendUnavailableError as exc:
            with self._cond:
                return self._hold(jobs, chains, exc)
        return None

    @property
    def jobs(self) -> int:
        """How many jobs the buffer holds."""
        return self._jobs

    @property
    def bytes(self) -> int:
        """How many bytes (JSON) the buffer holds."""
        return self._bytes

    def __len__(self) -> int:
        return self._jobs

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Block until everything buffered is stored (True) or ``timeout`` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue, timeout)

    def close(self, timeout: float, *, log_all: bool = False) -> None:
        """Store what is buffered within ``timeout`` seconds, or give it up and raise.

        Raises :class:`SubmitsNotStoredError` naming the job ids not stored; their
        handles then say ``not_stored``. The error log line lists the first
        :data:`LOGGED_IDS` ids (every one with ``log_all``, at interpreter exit,
        where no caller sees the exception).
        """
        with self._cond:
            if not self._queue:
                return
            self._nudged = True  # try at once rather than at the end of the current backoff
            self._cond.notify_all()
            if self._cond.wait_for(lambda: not self._queue, max(0.0, timeout)):
                return
            left = list(self._queue)
            self._queue.clear()
            self._jobs = self._bytes = 0
            self._cond.notify_all()
        error = SubmitsNotStoredError(
            [job for p in left for job in p.jobs],
            [chain for p in left for chain in p.chains],
            f"the backend {self.url} did not take them within {timeout:g}s",
            shown=_SHOWN_IDS,
        )
        for pending in left:
            pending._finish(error)
        shown = error.job_ids if log_all else error.job_ids[:LOGGED_IDS]
        logger.error(
            "buffered_submits_not_stored",
            url=self.url,
            jobs=len(error.job_ids),
            job_ids=list(shown),
            chain_ids=list(error.chain_ids if log_all else error.chain_ids[:LOGGED_IDS]),
            unlisted=len(error.job_ids) - len(shown),
        )
        raise error

    # --- holding ---------------------------------------------------------------------

    def _hold(
        self, jobs: Sequence[Job], chains: Sequence[ChainRecord], cause: BackendUnavailableError | None
    ) -> PendingSubmit:
        """Append a submit (the lock is held); raise SubmitBufferFullError if it does not fit."""
        size = _size(jobs, chains)
        config = self.config
        if self._jobs + len(jobs) > config.max_jobs or self._bytes + size > config.max_bytes:
            raise SubmitBufferFullError(
                cause.url if cause is not None else self.url,
                needed_jobs=len(jobs),
                needed_bytes=size,
                held_jobs=self._jobs,
                held_bytes=self._bytes,
                max_jobs=config.max_jobs,
                max_bytes=config.max_bytes,
            ) from cause
        pending = PendingSubmit(jobs, chains, size)
        if not self._queue:
            logger.warning(
                "submits_buffered",
                url=self.url,
                reason=str(cause) if cause is not None else "a flush is under way",
                max_jobs=config.max_jobs,
                max_bytes=config.max_bytes,
            )
        self._queue.append(pending)
        self._jobs += len(jobs)
        self._bytes += size
        if self._thread is None:
            _LIVE.add(self)
            self._thread = threading.Thread(target=self._run, name="jobchain-submit-flusher", daemon=True)
            self._thread.start()
        return pending

    # --- flushing --------------------------------------------------------------------

    def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds (the lock is held), or less if close() asks for a try now."""
        deadline = time.monotonic() + delay
        while not self._nudged:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        self._nudged = False

    def _take(self, single: bool) -> list[PendingSubmit]:
        """The submits at the head of the queue for one backend call, in order."""
        taken = [self._queue[0]]
        count = len(taken[0].jobs)
        if not single:
            for pending in list(self._queue)[1:]:
                if count + len(pending.jobs) > self.config.flush_batch:
                    break
                taken.append(pending)
                count += len(pending.jobs)
        return taken

    def _settled(self, taken: Sequence[PendingSubmit], error: BaseException | None) -> None:
        """Remove flushed (or refused) submits from the head of the queue; wake their handles."""
        with self._cond:
            for pending in taken:
                if self._queue and self._queue[0] is pending:  # close() may have given them up
                    self._queue.popleft()
                    self._jobs -= len(pending.jobs)
                    self._bytes -= pending.size
            self._cond.notify_all()
        for pending in taken:
            pending._finish(error)

    def _run(self) -> None:
        """The flusher thread: store the queue's head until it is empty, backing off on failures."""
        backoff = Backoff(base=self.config.retry_base, cap=self.config.retry_cap)
        delay = backoff.next()  # a submit just failed: give the backend a moment
        started = time.monotonic()
        stored = attempts = 0
        failing: str | None = None
        single = False
        while True:
            with self._cond:
                if delay > 0:
                    self._pause(delay)
                if not self._queue:
                    self._thread = None
                    self._cond.notify_all()
                    if stored:
                        logger.info(
                            "submit_buffer_flushed",
                            url=self.url,
                            jobs=stored,
                            attempts=attempts,
                            seconds=round(time.monotonic() - started, 3),
                        )
                    return
                taken = self._take(single)
            jobs = [job for p in taken for job in p.jobs]
            chains = [chain for p in taken for chain in p.chains]
            attempts += 1
            try:
                self.backend.enqueue(jobs, chains)
            except BackendUnavailableError as exc:
                if failing != "unavailable":
                    failing = "unavailable"
                    logger.info("submit_buffer_waiting", url=self.url, error=str(exc), jobs=self._jobs)
                delay = backoff.next()
                continue
            except InvalidJobError as exc:
                if len(taken) > 1:
                    single, delay = True, 0.0  # find the submit the backend refuses
                    continue
                logger.error(
                    "buffered_submit_refused",
                    url=self.url,
                    job_ids=[job.id for job in jobs],
                    error=str(exc),
                )
                self._settled(taken, SubmitsNotStoredError(jobs, chains, f"refused: {exc}"))
                single, delay = False, 0.0
                continue
            except Exception as exc:
                # a BackendError the backend answered with (out of memory …) or a bug: keep the
                # submits, log once per streak, try again later; close() reports what never went
                if failing != type(exc).__name__:
                    failing = type(exc).__name__
                    logger.warning("submit_buffer_flush_failed", url=self.url, error=str(exc), exc_info=True)
                delay = backoff.next()
                continue
            self._settled(taken, None)
            stored += len(jobs)
            backoff.reset()
            failing, single, delay = None, False, 0.0


#: queues that held submits, checked at interpreter exit
_LIVE: weakref.WeakSet[BufferedSubmits] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Give every non-empty buffer ``exit_timeout`` seconds; close() logs what is left, with its ids."""
    for queue in list(_LIVE):
        with contextlib.suppress(SubmitsNotStoredError):  # close() logged what is left
            queue.close(queue.config.exit_timeout, log_all=True)
