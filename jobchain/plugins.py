"""Loading plugins and calling their hooks.

Plugins are modules (or objects) with ``@jobchain.hookimpl`` functions. Installed
ones are found through the ``jobchain`` entry-point group; the memory backend
arrives the same way. Each load is tried on its own: one that fails is kept in
:attr:`Plugins.failures` (``jobchain backends`` shows them) and does not break
anything else. ``JOBCHAIN_DISABLE_PLUGINS`` (comma-separated entry-point or
distribution names, or ``*`` for every plugin but jobchain's own) skips plugins.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pluggy
import structlog

from jobchain import hookspecs
from jobchain.errors import (
    DuplicateSchemeError,
    PluginLoadError,
    UnknownBackendError,
)
from jobchain.errortext import DEFAULT_MAX_ERROR_BYTES, cap, describe, format_traceback, type_name
from jobchain.registry import BackendRegistry

if TYPE_CHECKING:
    from jobchain.backend import Backend

__all__ = ["ENTRY_POINT_GROUP", "Plugins", "default_plugins", "scheme_of"]

ENTRY_POINT_GROUP = "jobchain"
CORE_DISTRIBUTION = "jobchain"

logger = structlog.get_logger("jobchain.plugins")

#: Where to find backends that are not installed, by scheme prefix.
_INSTALL_HINTS = {
    "redis": "jobchain-redis",
    "rediss": "jobchain-redis",
    "http": "jobchain-http",
    "https": "jobchain-http",
}


def scheme_of(url: str) -> str:
    """The scheme of a backend URL, lower-cased (``redis-lists+sentinel`` stays whole)."""
    if "://" not in url:
        raise UnknownBackendError(
            url, [], hint="a backend URL looks like memory:// or redis-lists://host:6379/0"
        )
    return urlsplit(url).scheme.lower() or url.split("://", 1)[0].lower()


class Plugins:
    """A pluggy plugin manager with jobchain's hookspecs, its backend registry and event calls."""

    def __init__(self, *, entry_points: bool = True, plugins: Iterable[Any] = ()) -> None:
        self.pm = pluggy.PluginManager("jobchain")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginLoadError] = []
        self.distributions: dict[str, str] = {}
        self._impl_cache: dict[str, list[tuple[str, Any, tuple[str, ...]]]] = {}
        self._registry: BackendRegistry | None = None
        self._lock = threading.RLock()
        if entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self.register(plugin)
        self.pm.check_pending()

    # --- loading -----------------------------------------------------------------

    def _disabled(self) -> set[str]:
        raw = os.environ.get("JOBCHAIN_DISABLE_PLUGINS", "")
        return {part.strip() for part in raw.split(",") if part.strip()}

    def _load_entry_points(self) -> None:
        disabled = self._disabled()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            is_core = dist == CORE_DISTRIBUTION
            if ep.name in disabled or dist in disabled or ("*" in disabled and not is_core):
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                self.pm.register(ep.load(), name=ep.name)
                # a misspelt or mistyped hook is this plugin's load failure, not everyone's
                self.pm.check_pending()
            except Exception as exc:
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                error = PluginLoadError(ep.name, dist, f"{type(exc).__name__}: {exc}")
                self.failures.append(error)
                logger.warning("plugin_load_failed", entry_point=ep.name, distribution=dist, error=str(exc))
                continue
            self.distributions[ep.name] = dist
        self._invalidate()

    def register(self, plugin: Any, name: str | None = None, distribution: str = "local") -> str:
        """Register a plugin object directly (tests, applications); returns its name."""
        with self._lock:
            if name is None:
                # a readable name for logs ("hook_failed plugin=JobLogger"), not pluggy's id() default
                base = getattr(plugin, "__name__", None) or type(plugin).__qualname__
                name, n = base, 1
                while self.pm.has_plugin(name):
                    n += 1
                    name = f"{base}-{n}"
            registered = self.pm.register(plugin, name=name)
            if registered is None:
                raise ValueError(f"plugin {name or plugin!r} is already registered")
            self.distributions[registered] = distribution
            self.pm.check_pending()
            self._invalidate()
            return registered

    def unregister(self, plugin: Any) -> None:
        with self._lock:
            self.pm.unregister(plugin)
            self._invalidate()

    def _invalidate(self) -> None:
        self._impl_cache = {}
        self._registry = None

    # --- backends ----------------------------------------------------------------

    @property
    def backends(self) -> BackendRegistry:
        """The backend registry, filled by every plugin's ``jobchain_register_backends``."""
        with self._lock:
            if self._registry is None:
                self._registry = self._build_registry()
            return self._registry

    def _build_registry(self) -> BackendRegistry:
        registry = BackendRegistry()
        for impl in self.pm.hook.jobchain_register_backends.get_hookimpls():  # registration order
            dist = self.distributions.get(impl.plugin_name, "local")
            registry._set_distribution(dist)
            try:
                impl.function(registry=registry)
            except DuplicateSchemeError as exc:
                registry.conflicts[exc.scheme] = exc
                self.failures.append(PluginLoadError(impl.plugin_name, dist, str(exc)))
            except Exception as exc:
                self.failures.append(PluginLoadError(impl.plugin_name, dist, f"{type(exc).__name__}: {exc}"))
                logger.warning(
                    "plugin_register_failed", plugin=impl.plugin_name, distribution=dist, exc_info=True
                )
        return registry

    def open_backend(self, url: str, **options: Any) -> Backend:
        """Build the backend for ``url`` with the factory its scheme's plugin registered."""
        scheme = scheme_of(url)
        registry = self.backends
        if scheme in registry.conflicts:
            raise registry.conflicts[scheme]
        spec = registry.get(scheme)
        if spec is None:
            raise UnknownBackendError(scheme, registry.schemes(), hint=self._hint(scheme))
        return spec.factory(url, **options)

    def _hint(self, scheme: str) -> str:
        base = scheme.split("+", 1)[0]
        parts: list[str] = []
        for prefix, dist in _INSTALL_HINTS.items():
            if base == prefix or base.startswith(prefix + "-"):
                parts.append(f"install {dist} for {scheme}:// (pip install {dist})")
                break
        if self.failures:
            failed = "; ".join(f"{f.distribution} ({f.reason})" for f in self.failures)
            parts.append(f"plugins that failed to load: {failed}")
        return ". ".join(parts)

    # --- events ------------------------------------------------------------------

    def _impls(self, hook: str) -> list[tuple[str, Any, tuple[str, ...]]]:
        cached = self._impl_cache.get(hook)
        if cached is None:
            caller = getattr(self.pm.hook, hook)
            cached = [
                (impl.plugin_name, impl.function, tuple(impl.argnames))
                for impl in reversed(caller.get_hookimpls())
            ]
            self._impl_cache[hook] = cached
        return cached

    def has_listeners(self, hook: str) -> bool:
        return bool(self._impls(hook))

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of an event hook; one that raises is logged, the rest still run.

        Whatever a hook raises is caught, ``SystemExit`` and other ``BaseException``
        subclasses included (a hook must not end a worker thread), except a
        ``KeyboardInterrupt`` on the main thread, which is the user's Ctrl-C.
        """
        impls = self._impl_cache.get(hook)
        if impls is None:
            impls = self._impls(hook)
        for plugin_name, function, argnames in impls:
            try:
                function(**{name: kwargs[name] for name in argnames})
            except BaseException as exc:
                on_main = threading.current_thread() is threading.main_thread()
                if isinstance(exc, KeyboardInterrupt) and on_main:
                    raise
                logger.warning(
                    "hook_failed",
                    hook=hook,
                    plugin=plugin_name,
                    error_type=type_name(exc),
                    error=cap(describe(exc), 1024),
                    traceback=cap(format_traceback(exc), DEFAULT_MAX_ERROR_BYTES, keep_tail=True),
                )

    def call_all(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call a non-event hook through pluggy (errors propagate)."""
        result: list[Any] = getattr(self.pm.hook, hook)(**kwargs)
        return result


_default: Plugins | None = None
_default_lock = threading.Lock()


def default_plugins() -> Plugins:
    """The process-wide plugin manager, loading installed plugins on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Plugins()
        return _default
