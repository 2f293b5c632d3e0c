"""The plugin as installed: its entry point, its schemes and its command."""

from __future__ import annotations

import pytest
from jobchain_http import HttpBackend

from jobchain import Plugins
from jobchain.errors import BackendUnavailableError


def test_entry_point_registers_http_and_https() -> None:
    """jobchain finds http:// and https:// through the entry point of the jobchain-http distribution."""
    registry = Plugins().backends
    for scheme in ("http", "https"):
        spec = registry.get(scheme)
        assert spec is not None
        assert spec.distribution == "jobchain-http"


def test_url_carries_token_and_options_but_shows_no_token() -> None:
    """The token comes from the URL; ``backend.url`` leaves it out; options come from the query."""
    backend = Plugins().open_backend("http://:s3cret@127.0.0.1:1/?delivery=poll&prefetch=7")
    assert isinstance(backend, HttpBackend)
    try:
        assert (backend.token, backend.delivery, backend.prefetch) == ("s3cret", "poll", 7)
        assert "s3cret" not in backend.url
        with pytest.raises(BackendUnavailableError):
            backend.stats()
    finally:
        backend.close()


def test_unknown_url_option_is_an_error() -> None:
    """A misspelt option in the URL is refused instead of ignored."""
    with pytest.raises(ValueError, match="prefech"):
        HttpBackend.from_url("http://127.0.0.1:1?prefech=3")
