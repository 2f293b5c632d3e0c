"""A plugin for the tests: ``minimal://``, the example backend on the required core alone (no Stats)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jobchain

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))

from minimal_backend import MinimalBackend


@jobchain.hookimpl
def jobchain_register_backends(registry: Any) -> None:
    registry.add("minimal", lambda url, **options: MinimalBackend(url, **options), summary="core only")
