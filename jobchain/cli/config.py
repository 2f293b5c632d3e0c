"""Loading a user's config (``--config FILE_OR_MODULE[:APP]``) and finding targets in it.

A config is an ordinary Python module that builds a :class:`jobchain.App` and
declares tasks, chains and groups. It is given as a file path
(``examples/etl.py``) or a dotted module name (``myproject.jobs``); a ``:NAME``
suffix picks one App when the module has several. Every way this can go
wrong becomes a :class:`ConfigError` with a short message: the file is
missing, it has a syntax error (file:line and the line itself), importing it
raised (where), there is no App, or the target is not there (the available
ones are listed).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from attrs import frozen

from jobchain.app import App, Task
from jobchain.canvas import Chain, Group, Signature
from jobchain.cli.common import CliError
from jobchain.cli.output import plural

__all__ = ["ConfigError", "LoadedConfig", "Target", "find_target", "load_config", "target_jobs"]

Target = Task[Any, Any] | Signature | Chain | Group

_counter = itertools.count(1)


class ConfigError(CliError):
    """The config cannot be loaded or does not hold what was asked for."""


@frozen
class LoadedConfig:
    """A loaded config: what the user gave, the module and its App."""

    source: str
    module: ModuleType
    app: App
    app_name: str

    def targets(self) -> dict[str, list[str]]:
        """Names usable with ``--target``, by kind."""
        found: dict[str, set[str]] = {"tasks": set(self.app.tasks), "chains": set(), "groups": set()}
        for name, value in vars(self.module).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Chain):
                found["chains"].add(name)
            elif isinstance(value, Group):
                found["groups"].add(name)
            elif isinstance(value, Signature) or (isinstance(value, Task) and value.app is self.app):
                found["tasks"].add(name)
        return {kind: sorted(names) for kind, names in found.items() if names}

    def describe_targets(self) -> str:
        parts = [f"{kind}: {', '.join(names)}" for kind, names in self.targets().items()]
        return "; ".join(parts) or "none (declare tasks with @app.task)"


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec or Path(spec).is_file()


def _split(spec: str) -> tuple[str, str | None]:
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.isidentifier() and not (len(head) == 1 and head.isalpha()):
        return head, tail
    return spec, None


def load_config(spec: str) -> LoadedConfig:
    """Import the config module and pick its App."""
    where, app_name = _split(spec)
    module = _import_path(where) if _is_path(where) else _import_module(where)
    app, chosen = _pick_app(module, where, app_name)
    return LoadedConfig(source=where, module=module, app=app, app_name=chosen)


def _import_path(where: str) -> ModuleType:
    path = Path(where)
    if path.is_dir():
        raise ConfigError(f"config {where!r} is a directory; give a .py file or a dotted module name")
    if not path.is_file():
        guess = path.with_name(path.name + ".py")
        hint = (
            f"did you mean {str(guess)!r}?"
            if guess.is_file()
            else f"the path is relative to the current directory, {os.getcwd()}"
        )
        raise ConfigError(f"config file {where!r} does not exist", hint=hint)
    path = path.resolve()
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)  # as when running the file as a script: siblings import
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        found = importlib.util.find_spec(stem)
        if found is not None and found.origin and Path(found.origin).resolve() == path:
            return _run_import(where, lambda: importlib.import_module(stem), path)
    name = f"_jobchain_config_{next(_counter)}_{stem if stem.isidentifier() else 'module'}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {where!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def execute() -> ModuleType:
        sys.modules[name] = module
        try:
            loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module

    return _run_import(where, execute, path)


def _import_module(where: str) -> ModuleType:
    if not all(part.isidentifier() for part in where.split(".")):
        raise ConfigError(f"config {where!r} is neither a file nor a dotted module name")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does
    try:
        return _run_import(where, lambda: importlib.import_module(where), None)
    except ModuleNotFoundError as exc:  # not re-raised for the module's own imports (see below)
        raise ConfigError(
            f"no config module named {where!r}", hint="give a file path, or run from the project directory"
        ) from exc


def _run_import(where: str, load: Any, path: Path | None) -> ModuleType:
    try:
        module: ModuleType = load()
    except SyntaxError as exc:
        location = _relative(exc.filename) if exc.filename else where
        if exc.lineno:
            location += f":{exc.lineno}"
        hint = None
        if exc.text:
            line = exc.text.rstrip("\n")
            stripped = line.lstrip()
            hint = f"  {stripped}"
            if exc.offset and exc.offset > 0:
                caret = max(0, exc.offset - 1 - (len(line) - len(stripped)))
                hint += "\n  " + " " * caret + "^"
        raise ConfigError(f"syntax error in {location}: {exc.msg}", hint=hint) from None
    except ModuleNotFoundError as exc:
        if path is None and exc.name and (where == exc.name or where.startswith(exc.name + ".")):
            raise  # the config module itself is missing: the caller words it
        raise ConfigError(f"config {where} failed to import {exc.name!r}: {exc}{_where(exc)}") from None
    except CliError:
        raise
    except (Exception, SystemExit) as exc:
        raise ConfigError(f"config {where} raised {type(exc).__name__}: {exc}{_where(exc)}") from None
    return module


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "importlib" not in f.filename and "jobchain/cli" not in f.filename]
    if not inside:
        return ""
    frame = inside[-1]
    return f" (at {_relative(frame.filename)}:{frame.lineno})"


def _relative(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if relative.startswith("..") else relative


def _pick_app(module: ModuleType, where: str, app_name: str | None) -> tuple[App, str]:
    if app_name is not None:
        value = getattr(module, app_name, None)
        if not isinstance(value, App):
            raise ConfigError(f"{where} has no jobchain.App named {app_name!r}")
        return value, app_name
    apps = {name: value for name, value in vars(module).items() if isinstance(value, App)}
    if not apps:
        raise ConfigError(f"{where} defines no jobchain.App", hint="add `app = jobchain.App()` to it")
    if "app" in apps:
        return apps["app"], "app"
    if len(apps) > 1:
        names = ", ".join(sorted(apps))
        raise ConfigError(f"{where} defines several Apps ({names}); pick one with --config {where}:NAME")
    name, app = next(iter(apps.items()))
    return app, name


def find_target(loaded: LoadedConfig, name: str) -> Target:
    """The task, signature, chain or group called ``name`` (a module attribute or a task name)."""
    value = getattr(loaded.module, name, None) if not name.startswith("_") else None
    if isinstance(value, Chain | Group | Signature):
        return value
    if isinstance(value, Task) and value.app is loaded.app:
        return value
    task = loaded.app.tasks.get(name)
    if task is not None:
        return task
    raise ConfigError(
        f"no target {name!r} in {loaded.source}", hint=f"available: {loaded.describe_targets()}"
    )


def target_jobs(target: Target) -> int:
    """How many jobs one submission of ``target`` runs when nothing fails."""
    if isinstance(target, Chain):
        return sum(len(step) if isinstance(step, Group) else 1 for step in target.steps)
    if isinstance(target, Group):
        return len(target)
    return 1


def describe_target(target: Target, name: str) -> str:
    """``task nap``, ``chain etl (3 jobs)``, ``group variants (3 jobs)``."""
    if isinstance(target, Chain):
        return f"chain {name} ({plural(target_jobs(target), 'job')})"
    if isinstance(target, Group):
        return f"group {name} ({plural(len(target), 'job')})"
    return f"task {name}"
