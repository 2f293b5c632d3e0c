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

from attrs import frozen

from jobchain.backend import Backend
from jobchain.canvas import Chain, Group, Signature
from jobchain.errors import InvalidJobError
from jobchain.ids import new_id
from jobchain.model import ChainRecord, Job
from jobchain.payload import DEFAULT_MAX_PAYLOAD, check_payload
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
        """Check every item (403/404/422 before anything is stored), then enqueue them in order.

        Plain tasks go to the backend in one call; chains and groups are submitted one by one.
        """
        resolved = []
        for item in items:
            resolved.append(self._resolve(item))  # 404 for a name the config does not know
            self.check_allowed(item.target, f"{item.path}.target")  # 403 for one it may not take
        now = self.backend.now()
        plans: list[tuple[Submission, Any, Job | None]] = []
        for item, target in zip(items, resolved, strict=True):
            try:
                plans.append((item, target, self._plan(item, target, now)))
            except InvalidJobError as exc:
                raise HttpError(422, "invalid_arguments", str(exc), path=f"{item.path}.args") from None
        jobs = [job for _, _, job in plans if job is not None]
        if jobs:
            self.backend.enqueue(jobs)
        out: list[dict[str, Any]] = []
        for item, target, job in plans:
            if job is not None:
                out.append({"id": job.id, "kind": "job", "target": item.target})
                continue
            assert self.app is not None
            try:
                handle = self.app.submit(target, *item.args, **item.kwargs)
            except InvalidJobError as exc:
                submitted = [o["id"] for o in out]
                raise HttpError(
                    422,
                    "invalid_arguments",
                    f"{exc} (already submitted: {submitted})",
                    path=f"{item.path}.args",
                ) from None
            out.append({"id": handle.id, "kind": "chain", "target": item.target})
        return out

    def _plan(self, item: Submission, target: Any, now: float) -> Job | None:
        """The job for a task item (checked), or None for a chain or group (checked here as far as can be)."""
        if target is None:  # no config: a plain job of any (allowed) task name
            check_payload(item.args, item.kwargs, limit=self.max_payload, what=f"task {item.target!r}")
            return self._job(item.target, item.args, item.kwargs, item, now, None, None)
        if isinstance(target, Chain | Group):
            if item.queue is not None or item.priority is not None or item.delay is not None:
                raise InvalidJobError("queue, priority and delay apply to tasks, not to chains or groups")
            check_payload(item.args, item.kwargs, limit=self.max_payload, what="chain")
            first = target.steps[0] if isinstance(target, Chain) else target
            for sig in first.members if isinstance(first, Group) else (first,):
                if not sig.immutable:
                    sig.task.check_call(tuple(item.args) + sig.args, {**sig.kwargs, **item.kwargs})
            return None
        sig = target if isinstance(target, Signature) else Signature(task=target)
        task: Task[Any, Any] = sig.task
        args = sig.args + tuple(item.args)
        kwargs = {**sig.kwargs, **item.kwargs}
        check_payload(args, kwargs, limit=self.max_payload, what=f"task {task.name!r}")
        task.check_call(args, kwargs)
        return self._job(
            task.name,
            args,
            kwargs,
            item,
            now,
            sig.queue or task.queue,
            task.expires,
            priority=sig.priority if sig.priority is not None else task.priority,
        )

    @staticmethod
    def _job(
        task: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        item: Submission,
        now: float,
        queue: str | None,
        expires: float | None,
        priority: int = 0,
    ) -> Job:
        return Job(
            id=new_id(),
            task=task,
            args=tuple(args),
            kwargs=dict(kwargs),
            queue=item.queue or queue or "default",
            priority=item.priority if item.priority is not None else priority,
            enqueued_at=now,
            not_before=now + item.delay if item.delay else None,
            expires_at=None if expires is None else now + expires,
        )


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
