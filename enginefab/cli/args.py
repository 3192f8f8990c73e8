"""What the shared options name, turned into the objects the stages take: the matrix, the chosen
images, the store, the shared action cache, the archive limits, a registry client.

Every stage is imported inside the function that needs it, so that `enginefab --help` imports
none of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def matrix():
    """The matrix, its broken images and files kept aside: a command fails only for those it touches."""
    from enginefab.core.paths import project_root
    from enginefab.engines.matrix import load

    return load(project_root(), strict=False)


def pick(m, names, all_, demo):
    from enginefab.core.errors import MatrixError

    imgs = m.select(names or [], all_=all_, demo=demo)
    if not imgs:
        raise MatrixError("no images chosen", fix="name images, or pass --all or --demo")
    return imgs


def shared(cache: Optional[str], store, plain_http: bool, ca_cert: Optional[Path]):
    """The registry action cache `--cache` names, wired to the builder's SharedCache."""
    if not cache:
        return None
    from enginefab.assemble.remote import SharedCache
    from enginefab.transport.actioncache import RegistryActionCache

    kw = {"ca_cert": str(ca_cert) if ca_cert else None, "env": os.environ}
    if plain_http:
        kw["plain_http"] = True
    return SharedCache(RegistryActionCache.at(cache, **kw), store)


def require_target(to: str) -> None:
    if not to:
        from enginefab.core.errors import RegistryError

        raise RegistryError("no target registry", fix="pass --to HOST[:PORT]/PREFIX, or a target of registry/targets.toml")


def store(path: Optional[Path]):
    from enginefab.assemble.store import Store
    from enginefab.core.paths import default_store

    return Store(path or default_store())


def _limit(flag: Optional[int], env: str, default: int) -> int:
    """A flag, else the environment variable `env`, else the default; positive."""
    from enginefab.core.errors import BuildError

    if flag is None and os.environ.get(env, "").strip():
        try:
            flag = int(os.environ[env])
        except ValueError:
            raise BuildError(f"{env}={os.environ[env]!r} is not a whole number",
                             fix=f"set {env} to a positive integer, or unset it") from None
    if flag is not None and flag <= 0:
        raise BuildError(f"an archive limit must be positive (got {flag} for {env})", fix="pass a positive integer")
    return default if flag is None else flag


def archive_limits(max_bytes: Optional[int] = None, max_entries: Optional[int] = None, max_ratio: Optional[int] = None):
    """Expansion limits per input archive: a flag, else ENGINEFAB_ARCHIVE_MAX_*, else the default."""
    from enginefab.assemble.limits import DEFAULT, ArchiveLimits

    return ArchiveLimits(max_bytes=_limit(max_bytes, "ENGINEFAB_ARCHIVE_MAX_BYTES", DEFAULT.max_bytes),
                         max_entries=_limit(max_entries, "ENGINEFAB_ARCHIVE_MAX_ENTRIES", DEFAULT.max_entries),
                         max_ratio=_limit(max_ratio, "ENGINEFAB_ARCHIVE_MAX_RATIO", DEFAULT.max_ratio))


def client_for(ref: str, plain_http: bool, ca_cert: Optional[Path]):
    """The reference `ref` parsed, and a registry client for its registry."""
    from enginefab.transport.client import RegistryClient
    from enginefab.transport.reference import parse_reference

    r = parse_reference(ref)
    return r, RegistryClient(r.registry, plain_http=plain_http, ca_cert=str(ca_cert) if ca_cert else None)


def registry_state() -> Path:
    """Where `registry start` keeps its registries' state."""
    from enginefab.core.paths import cache_root

    return cache_root() / "registry"

