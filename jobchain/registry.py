"""The registry of backend factories that plugins fill through ``jobchain_register_backends``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import frozen

from jobchain.errors import DuplicateSchemeError

if TYPE_CHECKING:
    from jobchain.backend import Backend

__all__ = ["BackendFactory", "BackendRegistry", "BackendSpec"]

#: Builds a backend from its URL; keyword arguments (``clock`` …) come from the App.
BackendFactory = Callable[..., "Backend"]


@frozen
class BackendSpec:
    scheme: str
    factory: BackendFactory
    summary: str
    distribution: str

    @property
    def backend_class(self) -> type[Backend] | None:
        """The class the factory builds, when it is one or one's classmethod (``X.from_url``)."""
        from jobchain.backend import Backend

        owner = getattr(self.factory, "__self__", self.factory)
        return owner if isinstance(owner, type) and issubclass(owner, Backend) else None

    @property
    def capabilities(self) -> list[str] | None:
        """The capabilities the backend declares (:mod:`jobchain.capabilities`); None if unknown.

        Read off the class's bases by module, without importing :mod:`jobchain.capabilities`,
        which looks schemes up in this registry for its error messages (an import cycle).
        """
        cls = self.backend_class
        if cls is None:
            return None
        declared = [c for c in cls.__mro__ if c.__module__ == "jobchain.capabilities"]
        return [c.__name__ for c in declared if c.__name__ != "Capability"]


class BackendRegistry:
    """Maps URL schemes to backend factories; handed to ``jobchain_register_backends``."""

    def __init__(self) -> None:
        self._specs: dict[str, BackendSpec] = {}
        self.conflicts: dict[str, DuplicateSchemeError] = {}
        self._current_distribution = "unknown"

    def add(self, scheme: str, factory: BackendFactory, *, summary: str = "") -> None:
        """Serve URLs ``scheme://…`` with ``factory(url, **options)``."""
        scheme = scheme.lower()
        existing = self._specs.get(scheme)
        if existing is not None:
            error = DuplicateSchemeError(scheme, existing.distribution, self._current_distribution)
            self.conflicts[scheme] = error
            raise error
        self._specs[scheme] = BackendSpec(scheme, factory, summary, self._current_distribution)

    def get(self, scheme: str) -> BackendSpec | None:
        return self._specs.get(scheme.lower())

    def specs(self) -> list[BackendSpec]:
        return sorted(self._specs.values(), key=lambda s: s.scheme)

    def schemes(self) -> list[str]:
        return sorted(self._specs)

    def _set_distribution(self, name: str) -> None:
        self._current_distribution = name

    def __contains__(self, scheme: Any) -> bool:
        return isinstance(scheme, str) and scheme.lower() in self._specs
