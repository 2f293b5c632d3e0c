"""The module named by this distribution's ``jobchain`` entry point: it registers the backend."""

from __future__ import annotations

import jobchain
from jobchain_dictstore.backend import DictStoreBackend


@jobchain.hookimpl
def jobchain_register_backends(registry: jobchain.BackendRegistry) -> None:
    registry.add(
        "dictstore", DictStoreBackend.from_url, summary="example plugin: jobs kept as JSON text, in memory"
    )
