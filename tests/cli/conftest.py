"""Helpers for the CLI tests: every test runs the real ``jobchain`` command in a subprocess."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forkserver
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
PLUGINS = Path(__file__).resolve().parent / "plugins"


class Result:
    """What one ``jobchain`` invocation printed and returned."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.code = done.returncode
        self.out = done.stdout
        self.err = done.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}>"


def _installed_plugins() -> list[str]:
    """Entry points of the plugins installed here, jobchain's own memory backend excepted."""
    found = importlib.metadata.entry_points(group="jobchain")
    return sorted(ep.name for ep in found if ep.dist is None or ep.dist.name != "jobchain")


def base_env(*, installed_plugins: bool = False) -> dict[str, str]:
    """The environment of the test run without anything that would change jobchain's behaviour.

    Plugins installed in this environment (a redis backend under development, say) are
    disabled unless ``installed_plugins``: the tests see the core and the plugins they install.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    disabled = _installed_plugins()
    if disabled and not installed_plugins:
        env["JOBCHAIN_DISABLE_PLUGINS"] = ",".join(disabled)
    return env


def run_jobchain(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60
) -> Result:
    """``python -m jobchain ARGS...`` in a process of its own, forked from a warm interpreter.

    (tests/forkserver.py; ``JOBCHAIN_TEST_FORKSERVER=0`` starts a fresh interpreter each time.)
    """
    done = forkserver.run(
        [sys.executable, "-m", "jobchain", *args],
        cwd=cwd,
        env=env or base_env(),
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(done)


@pytest.fixture
def jobchain() -> Callable[..., Result]:
    """Run ``python -m jobchain ARGS...`` from the repository root; returns a :class:`Result`."""
    return run_jobchain


def installed_plugin_env(tmp_path: Path, plugins: dict[str, str], *sources: Path) -> dict[str, str]:
    """An environment in which ``plugins`` (distribution -> module) are installed, as pip leaves them.

    A dist-info directory with an entry point in group ``jobchain`` on ``sys.path``
    is an installed distribution to importlib.metadata, and so to jobchain.
    """
    for name, module in plugins.items():
        dist_info = tmp_path / f"{name.replace('-', '_')}-0.1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        (dist_info / "entry_points.txt").write_text(f"[jobchain]\n{name} = {module}\n")
    env = base_env()
    paths = [str(tmp_path), *(str(s) for s in sources), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment the ``jobchain`` subprocesses get."""
    return base_env()


@pytest.fixture
def installed_cli_env() -> dict[str, str]:
    """The environment the ``jobchain`` subprocesses get, with the plugins installed here enabled."""
    return base_env(installed_plugins=True)


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def configs() -> Path:
    """tests/cli/configs: configs made for these tests."""
    return CONFIGS


@pytest.fixture
def plugin_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Make an environment with plugins installed: ``make({distribution: module}, *source_dirs)``.

    Modules are found in tests/cli/plugins and in the extra source directories.
    """

    def make(plugins: dict[str, str], *sources: Path) -> dict[str, str]:
        return installed_plugin_env(tmp_path, plugins, PLUGINS, *sources)

    return make


@pytest.fixture
def sqlite_run(tmp_path: Path, installed_cli_env: dict[str, str]) -> Callable[..., Result]:
    """``jobchain ARGS... -b sqlite://FILE``: every command of the test on one SQLite file."""
    url = f"sqlite://{tmp_path / 'jobs.db'}"

    def call(*args: str) -> Result:
        return run_jobchain(*args, "-b", url, env=installed_cli_env)

    return call
