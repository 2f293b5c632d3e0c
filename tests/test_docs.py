"""The docs stay in step with the code: every hook documented, the README example real."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobchain import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def hook_names() -> list[str]:
    return sorted(name for name in vars(hookspecs) if name.startswith("jobchain_"))


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_section_in_the_plugin_docs(hook: str) -> None:
    """Each hook in jobchain.hookspecs has a '## <hook>' section in docs/plugins.md."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    heading = re.search(rf"^##+ `?{hook}`?\s*$", text, re.MULTILINE)
    assert heading, f"docs/plugins.md has no section for {hook}"


def test_readme_example_is_the_example_file() -> None:
    """The README's Python example is examples/readme_example.py, word for word (less its docstring)."""
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "readme_example.py").read_text()
    example = re.sub(r'^""".*?"""\n\n', "", example, count=1, flags=re.DOTALL)
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert example in blocks


def test_readme_example_halts_then_completes_after_redrive() -> None:
    """Running the README example shows the chain halted, then re-driven and completed."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "readme_example.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert "A (succeeded) -> B (failed) -> C (not executed)" in out
    assert "failed queue: B Fail: the B service is down" in out
    assert "result: 'the answer is 42'" in out
    assert out[-1] == "A (succeeded) -> B (succeeded) -> C (succeeded)"
    assert out.index("A (succeeded) -> B (failed) -> C (not executed)") < len(out) - 1


@pytest.mark.parametrize(
    "section",
    ["Pausing a queue", "Browsing jobs", "Unique jobs", "Cancelling jobs", "Limits", "asyncio: the client"],
)
def test_a_guide_sections_example_runs(section: str) -> None:
    """The first Python example of the guide's section runs as written."""
    guide = (ROOT / "docs" / "guide.md").read_text()
    text = guide[guide.index(f"## {section}") :]
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert code is not None
    subprocess.run([sys.executable, "-c", code.group(1)], check=True, timeout=60, capture_output=True)
