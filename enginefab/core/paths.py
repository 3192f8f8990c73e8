"""Where a definition lives in the project checkout. (Where the checkout, the cache and the store
are is a setting: `core.settings`.)"""

from __future__ import annotations

from pathlib import Path


def definition_path(root: Path, alias: str) -> Path:
    """The pinned definition of an image: build/<alias>.json in the project checkout."""
    return root / "build" / f"{alias}.json"
