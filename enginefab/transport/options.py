"""The HTTP stack's patience (timeouts, deadline, retries, size caps): `core.httpoptions`, where
the settings (`core.settings`) can hold it; named here too for the transport's callers."""

from __future__ import annotations

from enginefab.core.httpoptions import DEFAULT, HttpOptions

__all__ = ["DEFAULT", "HttpOptions"]
