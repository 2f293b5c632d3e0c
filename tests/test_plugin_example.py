"""The example plugin (examples/plugin_backend) is found through its entry point and passes the suite.

Rather than pip-installing into the shared environment, each test runs a
subprocess whose ``sys.path`` holds the example's sources and a dist-info
directory built from the example's own pyproject.toml: to importlib.metadata,
and so to jobchain's plugin loader, that is an installed distribution.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jobchain.testing import BackendConformance

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_backend"


@pytest.fixture
def installed_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess in which jobchain-dictstore is installed, as pip would leave it."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines: list[str] = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines.extend(f"{ep} = {target}" for ep, target in entries.items())
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env.pop("JOBCHAIN_DISABLE_PLUGINS", None)
    for name in [n for n in env if n.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))]:
        del env[name]  # under pytest-xdist: the nested pytest is a run of its own, not a worker
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), str(EXAMPLE), env.get("PYTHONPATH")) if p)
    return env


_DISCOVER = """
import json
from jobchain.plugins import Plugins
plugins = Plugins()
spec = plugins.backends.get("dictstore")
backend = plugins.open_backend("dictstore://")
print(json.dumps({
    "schemes": plugins.backends.schemes(),
    "distribution": spec.distribution if spec else None,
    "failures": [str(f) for f in plugins.failures],
    "backend": f"{type(backend).__module__}.{type(backend).__name__}",
}))
"""


def test_entry_point_is_discovered_by_plugins(installed_env: dict[str, str]) -> None:
    """jobchain.plugins.Plugins() finds dictstore:// through the jobchain-dictstore entry point."""
    done = subprocess.run(
        [sys.executable, "-c", _DISCOVER], env=installed_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"memory", "dictstore"} <= set(found["schemes"])
    assert found["distribution"] == "jobchain-dictstore"
    assert found["backend"] == "jobchain_dictstore.backend.DictStoreBackend"
    assert not [f for f in found["failures"] if "dictstore" in f]


@pytest.mark.slow
def test_conformance_suite_passes_on_the_example_plugin(installed_env: dict[str, str]) -> None:
    """The example's own tests, the whole conformance suite among them, pass on its backend."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=installed_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None, summary
    assert not re.search(r"failed|error|skipped", summary), summary
    suite_tests = [name for name in dir(BackendConformance) if name.startswith("test_")]
    assert int(passed.group(1)) > len(suite_tests)
