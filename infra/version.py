"""The installed titan version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def titan_version() -> str:
    """The version of the installed distribution (or of the checkout)."""
    try:
        return version("titan")
    except PackageNotFoundError:
        return "0.1.0+checkout"
