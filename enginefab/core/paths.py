"""Where things live: the project checkout, the cache, the store."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    """The checkout holding engines/ and build/: $ENGINEFAB_ROOT, else the nearest parent of cwd
    with engines/ (and a pyproject.toml or engines/platforms.toml)."""
    env = os.environ.get("ENGINEFAB_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "engines").is_dir() and ((p / "pyproject.toml").is_file() or (p / "engines" / "platforms.toml").is_file()):
            return p  # this checkout, or a project of its own (`enginefab init`)
    # fall back to the checkout this package was installed from (editable installs)
    pkg = Path(__file__).resolve().parents[2]
    if (pkg / "engines").is_dir():
        return pkg
    return here


def cache_root() -> Path:
    env = os.environ.get("ENGINEFAB_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "enginefab"


def downloads_dir() -> Path:
    """Content-addressed cache of fetched inputs (wheels, debs, indexes), shared by all stores."""
    return cache_root() / "downloads"


def default_store() -> Path:
    env = os.environ.get("ENGINEFAB_STORE")
    return Path(env) if env else cache_root() / "store"


def definition_path(root: Path, alias: str) -> Path:
    """The pinned definition of an image: build/<alias>.json in the project checkout."""
    return root / "build" / f"{alias}.json"
