"""Comparing the versions engines/ writes (1.15 and 1.15.0 are one version)."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version


def same_version(a: str | None, b: str | None) -> bool:
    """Versions equal as PEP 440 versions (1.15 == 1.15.0), else as strings."""
    if a is None or b is None:
        return a == b
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
