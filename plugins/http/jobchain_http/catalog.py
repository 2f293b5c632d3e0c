"""What the gateway may enqueue: tasks and chains by name, the allow-list, argument checks.

With a config (``jobchain http serve --config app.py``) the gateway knows the
tasks and chains it declares: a name it does not know is 404, and arguments
are checked against the task's signature (422). Without one it accepts any
task name, as a plain job (there is nothing to check the arguments against
but JSON size). ``--allow-task`` narrows either case: a name not on the list
is 403 (a name the config does not know is 404 first), for submissions by
name and for raw jobs sent by ``http://`` clients. A chain or group is named
on the list by its own name; raw jobs and chain records by each task's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from attrs import evolve, frozen

from jobchain.backend import Backend
from jobchain.canvas import Chain, Group, Signature
from jobchain.capabilities import Uniqueness, require
from jobchain.errors import InvalidJobError
from jobchain.model import ChainRecord, Job
from jobchain.payload import DEFAULT_MAX_PAYLOAD
from jobchain.submission import Builder, check_id
from jobchain.uniqueness import check_key, unique_of
from jobchain_http.guard import HttpError
from jobchain_http.wire import WireError, arr, integer, number, obj, text

if TYPE_CHECKING:
    from jobchain.app import App, Task

__all__ = ["Catalog", "Submission"]

MAX_DELAY = 366 * 86400.0


@frozen
class Submission:
    """One item of a submit request, checked: the target's name and what to call it with."""

    target: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    queue: str | None
    priority: int | None
    delay: float | None
    path: str
    #: the job's (or chain's) id instead of a fresh one
    id: str | None = None
    #: the job's uniqueness key (instead of the one its task derives), and seconds to hold it
    unique_key: str | None = None
    unique_for: float | None = None


def _submit_id(value: Any, path: str) -> str | None:
    if value is None:
        return None
    try:
        return check_id(value, "id")
    except InvalidJobError as exc:
        raise WireError(path, str(exc)) from None


def _unique_key(value: Any, path: str) -> str | None:
    if value is None:
        return None
    try:
        return check_key(value, "unique_key")
    except InvalidJobError as exc:
        raise WireError(path, str(exc)) from None


def _unique_for(value: Any, path: str) -> float | None:
    if value is None:
        return None
    seconds = number(value, path, minimum=0, maximum=MAX_DELAY)
    if seconds <= 0:
        raise WireError(path, "unique_for must be > 0 seconds")
    return seconds


def parse_submission(raw: Any, path: str) -> Submission:
    data = obj(raw, path)
    args = data.get("args", [])
    kwargs = data.get("kwargs", {})
    queue = data.get("queue")
    priority = data.get("priority")
    delay = data.get("delay")
    return Submission(
        target=text(data.get("target"), f"{path}.target"),
        args=tuple(arr(args, f"{path}.args")),
        kwargs=dict(obj(kwargs, f"{path}.kwargs")),
        queue=None if queue is None else text(queue, f"{path}.queue"),
        priority=None
        if priority is None
        else integer(priority, f"{path}.priority", minimum=-(10**9), maximum=10**9),
        delay=None if delay is None else number(delay, f"{path}.delay", minimum=0, maximum=MAX_DELAY),
        path=path,
        id=_submit_id(data.get("id"), f"{path}.id"),
        unique_key=_unique_key(data.get("unique_key"), f"{path}.unique_key"),
        unique_for=_unique_for(data.get("unique_for"), f"{path}.unique_for"),
    )


class Catalog:
    """Resolves names to targets and checks them; builds and enqueues what is submitted."""

    def __init__(
        self,
        backend: Backend,
        *,
        app: App | None = None,
        module: Any = None,
        allow: Iterable[str] | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.backend = backend
        self.app = app
        self.module = module
        self.allow = None if allow is None else frozenset(allow)
        self.max_payload = app.max_payload if app is not None else max_payload
        #: builds the jobs and chain records: the App's builder (its limits, its signing keys) when given one
        self.builder = app.builder if app is not None else Builder(max_payload=max_payload)

    # --- checks ---------------------------------------------------------------------

    def check_allowed(self, name: str, path: str) -> None:
        if self.allow is not None and name not in self.allow:
            raise HttpError(
                403, "forbidden_task", f"task {name!r} is not on this gateway's allow-list", path=path
            )

    def check_known_task(self, name: str, path: str) -> None:
        if self.app is not None and name not in self.app.tasks:
            raise HttpError(404, "unknown_task", f"unknown task {name!r}", path=path)

    def check_raw(self, jobs: Sequence[Job], chains: Sequence[ChainRecord]) -> None:
        """Raw jobs from an ``http://`` client: every task named must be known and allowed."""
        for i, job in enumerate(jobs):
            self.check_known_task(job.task, f"$.jobs[{i}].task")
            self.check_allowed(job.task, f"$.jobs[{i}].task")
        for c, chain in enumerate(chains):
            for s, step in enumerate(chain.steps):
                for m, member in enumerate(step.members):
                    where = f"$.chains[{c}].steps[{s}].members[{m}].task"
                    self.check_known_task(member.task, where)
                    self.check_allowed(member.task, where)

    def _resolve(self, item: Submission) -> Any:
        """The config's target for ``item`` (a Task, Signature, Chain or Group), or None without config."""
        where = f"{item.path}.target"
        if self.app is None:
            return None
        found: Any = None
        if self.module is not None and not item.target.startswith("_"):
            value = getattr(self.module, item.target, None)
            if isinstance(value, Chain | Group | Signature):
                found = value
        if found is None:
            found = self.app.tasks.get(item.target)
        if found is None:
            raise HttpError(404, "unknown_target", f"unknown task or chain {item.target!r}", path=where)
        return found

    # --- submitting -----------------------------------------------------------------

    def submit(self, items: Sequence[Submission]) -> list[dict[str, Any]]:
        """Check and build every item (403/404/422 before anything is stored), then store them in one call."""
        resolved = []
        for item in items:
            resolved.append(self._resolve(item))  # 404 for a name the config does not know
            self.check_allowed(item.target, f"{item.path}.target")  # 403 for one it may not take
        now = self.backend.now()
        jobs: list[Job] = []
        chains: list[ChainRecord] = []
        out: list[dict[str, Any]] = []
        #: (index in out, job, key, hold) of the unique jobs, stored after the others
        keyed: list[tuple[int, Job, str, float | None]] = []
        for item, target in zip(items, resolved, strict=True):
            try:
                if isinstance(target, Chain | Group):
                    if item.unique_key is not None or item.unique_for is not None:
                        raise HttpError(
                            422,
                            "invalid_arguments",
                            "a chain or group cannot be unique: submit it under an explicit id instead",
                            path=f"{item.path}.unique_key",
                        )
                    record, first = self._chain(item, target, now)
                    chains.append(record)
                    jobs.extend(first)
                    out.append({"id": record.id, "kind": "chain", "target": item.target})
                else:
                    job, key, hold = self._job(item, target, now)
                    if key is None:
                        jobs.append(job)
                    else:
                        keyed.append((len(out), evolve(job, unique=key) if hold is None else job, key, hold))
                    out.append({"id": job.id, "kind": "job", "target": item.target})
            except InvalidJobError as exc:
                raise HttpError(422, "invalid_arguments", str(exc), path=f"{item.path}.args") from None
        unique = require(self.backend, Uniqueness) if keyed else None  # 501 before anything is stored
        if any(item.id is not None for item in items):
            self.backend.enqueue(jobs, chains)  # ids that exist are skipped
        elif jobs or chains:
            self.backend.enqueue_new(jobs, chains)
        for index, job, key, hold in keyed:
            assert unique is not None
            [out[index]["id"]] = unique.enqueue_unique([job], [key], hold=hold)
        return out

    def _job(
        self, item: Submission, target: Task[Any, Any] | Signature | None, now: float
    ) -> tuple[Job, str | None, float | None]:
        """The job of a task item (without a config, ``target`` None, of any task name); its key and hold."""
        if target is None:
            if item.unique_for is not None and item.unique_key is None:
                raise InvalidJobError("unique_for needs a unique_key")
            job = self.builder.named_job(
                item.target,
                item.args,
                item.kwargs,
                now=now,
                job_id=item.id,
                queue=item.queue,
                priority=item.priority,
                delay=item.delay,
            )
            return job, item.unique_key, item.unique_for
        sig = target if isinstance(target, Signature) else Signature(task=target)
        if item.unique_key is not None or item.unique_for is not None:
            sig = sig.set(unique_key=item.unique_key, unique_for=item.unique_for)
        job = self.builder.job(
            sig,
            item.args,
            item.kwargs,
            now=now,
            job_id=item.id,
            queue=item.queue,
            priority=item.priority,
            delay=item.delay,
        )
        key, hold = unique_of(sig, job)
        return job, key, hold

    def _chain(self, item: Submission, target: Chain | Group, now: float) -> tuple[ChainRecord, list[Job]]:
        if item.queue is not None or item.priority is not None or item.delay is not None:
            raise InvalidJobError("queue, priority and delay apply to tasks, not to chains or groups")
        return self.builder.chain(target, item.args, item.kwargs, now=now, chain_id=item.id)


def parse_submissions(body: Any) -> list[Submission]:
    """``{"target": ...}`` (one) or ``{"items": [...]}`` (a batch of up to 1000)."""
    data = obj(body, "$")
    if "items" in data:
        items = arr(data["items"], "$.items")
        if not items:
            raise WireError("$.items", "give at least one item")
        if len(items) > 1000:
            raise WireError("$.items", f"at most 1000 items per request, got {len(items)}")
        return [parse_submission(raw, f"$.items[{i}]") for i, raw in enumerate(items)]
    return [parse_submission(data, "$")]
