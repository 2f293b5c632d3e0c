"""examples/minimal_backend.py: a backend on the required core alone passes the core suite and runs an App.

It also proves the contract's promises about what is missing: a capability
the backend does not declare is a NotSupportedError, in Python and on the
command line, never an AttributeError.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from jobchain import App, Backend, ManualClock, NotSupportedError, Plugins, chain
from jobchain.capabilities import capabilities
from jobchain.cli.main import cli
from jobchain.testing.suite import CoreConformance

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "minimal_backend.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("minimal_backend", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["minimal_backend"] = module  # attrs resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


minimal_backend = _load()
MinimalBackend: type[Backend] = minimal_backend.MinimalBackend


class TestMinimalBackend(CoreConformance):
    @pytest.fixture
    def backend(self, clock: ManualClock) -> Iterator[Backend]:
        backend = MinimalBackend(clock=clock)
        yield backend
        backend.close()


def test_it_needs_fewer_than_ten_methods() -> None:
    """The whole backend is fewer than ten methods, written on the public contract only."""
    methods = [name for name, value in vars(MinimalBackend).items() if inspect.isfunction(value)]
    assert len(methods) < 10, methods
    source = EXAMPLE.read_text()
    assert set(re.findall(r"^from (jobchain[.\w]*) import", source, re.MULTILINE)) == {"jobchain.contract"}
    assert capabilities(MinimalBackend) == []


def test_docs_show_the_example_file() -> None:
    """docs/backends.md shows examples/minimal_backend.py word for word (less its docstring)."""
    doc = (ROOT / "docs" / "backends.md").read_text()
    code = re.sub(r'^""".*?"""\n\n', "", EXAMPLE.read_text(), count=1, flags=re.DOTALL)
    assert code in re.findall(r"```python\n(.*?)```", doc, re.DOTALL)


def test_a_missing_capability_is_not_supported_in_python() -> None:
    """The App's failed queue, stats and workers on a core-only backend raise NotSupportedError."""
    app = App(backend=MinimalBackend(), plugins=Plugins(entry_points=False))
    with pytest.raises(NotSupportedError) as caught:
        app.failed.list()
    assert (caught.value.url, caught.value.capability) == ("minimal://", "FailedQueue")
    assert str(caught.value).startswith(
        "minimal:// does not support the failed queue (capability FailedQueue); "
        "use a backend that does, e.g. "
    )
    assert "memory" in caught.value.supported_by
    with pytest.raises(NotSupportedError, match=r"does not support queue statistics \(capability Stats\)"):
        app.stats()
    with pytest.raises(NotSupportedError, match="capability WorkerRegistry"):
        app.workers()
    with pytest.raises(NotImplementedError):  # NotSupportedError is one too
        app.stop_worker("w-1")


@pytest.mark.parametrize(
    ("args", "capability"),
    [
        (["failed", "list"], "FailedQueue"),
        (["failed", "purge", "--yes"], "FailedQueue"),
        (["workers"], "WorkerRegistry"),
        (["workers", "stop", "w-1"], "WorkerRegistry"),
        (["status"], "Stats"),
    ],
)
def test_a_missing_capability_is_a_one_line_cli_error(
    args: list[str], capability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that needs a capability the backend lacks says so in one line, exit code 1."""
    from jobchain.cli.common import Opened

    app = App(backend=MinimalBackend(), plugins=Plugins(entry_points=False))
    for module in ("failed", "workers", "status"):  # as if --backend named an installed minimal://
        monkeypatch.setattr(f"jobchain.cli.{module}.open_app", lambda *_, **__: Opened(app, None))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: minimal:// does not support ")
    assert f"(capability {capability})" in lines[0]
    assert "Traceback" not in result.output


def test_status_of_one_job_needs_only_the_core() -> None:
    """`jobchain status ID` reads records, which every backend has."""
    import jobchain.cli.status as status

    app = App(backend=MinimalBackend(), plugins=Plugins(entry_points=False))

    @app.task
    def noop() -> None: ...

    handle = noop.submit()
    status._one(app, handle.id, as_json=True)


def test_an_app_and_a_worker_run_a_chain_on_it() -> None:
    """A chain submitted through an App runs to completion on a Worker over the minimal backend."""
    app = App(backend=MinimalBackend(), plugins=Plugins(entry_points=False))

    @app.task
    def fetch(url: str) -> str:
        return f"body of {url}"

    @app.task
    def count(body: str) -> int:
        return len(body)

    handle = chain(fetch, count).submit("u")
    worker = app.worker(concurrency=2, poll=0.02).start()
    try:
        assert handle.wait(3.0) == len("body of u")
    finally:
        worker.stop(timeout=5.0)
    assert handle.render() == "fetch (succeeded) -> count (succeeded)"
