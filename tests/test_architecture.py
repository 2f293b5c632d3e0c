"""The shape of the import graph, read from the source with ``ast`` (nothing is imported).

The *core* is every module of the ``jobchain`` package except the CLI
(``jobchain.cli``, ``jobchain.__main__``: an application of the core, the one
place that may use click and rich) and the conformance suite
(``jobchain.testing``: a pytest plugin, which may use pytest). Checked here:

- the core's import graph has no cycle. An edge is any import that runs: at
  module level or inside a function (a lazy import hides a cycle from the
  import order, it does not remove it). Imports under ``if TYPE_CHECKING:``
  are type annotations only; the cycles they make are listed in
  :data:`TYPE_ONLY_CYCLES` and may not grow;
- the worker depends on its runtime, never on the App, not even for types;
- no module outside the CLI imports redis, click or rich, and only the
  conformance suite imports pytest, and only jobchain.metrics prometheus_client.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jobchain"

#: cycles made by imports under ``if TYPE_CHECKING:`` only (annotations), each a set of modules
TYPE_ONLY_CYCLES = [
    # errors.py names the model types its exceptions carry; model.py raises InvalidJobError
    {"jobchain.errors", "jobchain.model"},
    # a Signature holds a Task, a handle its App; the App builds both, its jobs through submission
    {"jobchain.app", "jobchain.canvas", "jobchain.handles", "jobchain.submission"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_core(module: str) -> bool:
    return not module.startswith(("jobchain.cli", "jobchain.testing", "jobchain.__main__"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> Iterator[tuple[str, bool]]:
    """(module imported, whether only under TYPE_CHECKING) for every import statement of ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[str, bool]]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from walk(child, True)
            for child in node.orelse:
                yield from walk(child, type_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, type_only
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from jobchain import signing`` imports the submodule, not a name of the package
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            if all(name in MODULES for name in submodules):
                for name in submodules:
                    yield name, type_only
            else:
                yield source, type_only
        for child in ast.iter_child_nodes(node):
            yield from walk(child, type_only)

    yield from walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)


def _graph(*, type_only: bool) -> dict[str, set[str]]:
    """The core's import graph; with ``type_only``, imports under TYPE_CHECKING are edges too."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        if not _is_core(module):
            continue
        graph[module] = {
            name
            for name, typing_only in _imports(module)
            if name in MODULES and _is_core(name) and name != module and (type_only or not typing_only)
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    graph = _graph(type_only=False)
    assert "jobchain.app" in graph
    assert "jobchain.worker._core" in graph
    assert "jobchain.cli.main" not in graph
    assert {"jobchain.canvas", "jobchain.worker", "jobchain.plugins"} <= graph["jobchain.app"]
    assert "jobchain.signing" in graph["jobchain.worker._execution"]  # from jobchain import signing


def test_the_core_has_no_import_cycle() -> None:
    assert _cycles(_graph(type_only=False)) == []


def test_type_only_import_cycles_do_not_grow() -> None:
    for cycle in _cycles(_graph(type_only=True)):
        assert any(cycle <= known for known in TYPE_ONLY_CYCLES), f"a new import cycle: {sorted(cycle)}"


def test_the_worker_never_imports_the_app() -> None:
    graph = _graph(type_only=True)
    worker = {m for m in graph if m == "jobchain.worker" or m.startswith("jobchain.worker.")}
    reached: set[str] = set()
    todo = list(worker)
    while todo:
        for target in graph[todo.pop()]:
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert "jobchain.app" not in reached
    assert "jobchain" not in reached  # the package's __init__ imports the App


def test_the_worker_is_imported_through_its_public_module() -> None:
    graph = _graph(type_only=True)
    private = {
        (module, target)
        for module, targets in graph.items()
        if not module.startswith("jobchain.worker")
        for target in targets
        if target.startswith("jobchain.worker.")
    }
    assert private == set()


#: where each library may be imported (prometheus_client is an optional dependency: jobchain[metrics])
PLACES = {
    "redis": ("jobchain.cli", "jobchain.__main__"),
    "click": ("jobchain.cli", "jobchain.__main__"),
    "rich": ("jobchain.cli", "jobchain.__main__"),
    "pytest": ("jobchain.testing",),
    "prometheus_client": ("jobchain.metrics",),
}


@pytest.mark.parametrize("library", sorted(PLACES))
def test_third_party_libraries_stay_in_their_place(library: str) -> None:
    allowed = PLACES[library]
    offenders = sorted(
        module
        for module in MODULES
        if not module.startswith(allowed)
        for name, _ in _imports(module)
        if name == library or name.startswith(library + ".")
    )
    assert offenders == []
