"""The dashboard tests' fixtures, from dash_rig.py (which the tests also import their helpers from)."""

from dash_rig import browser, shots, site

__all__ = ["browser", "shots", "site"]
